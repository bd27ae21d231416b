"""A real Triton Inference Server serves a tiny build's python-backend repository (`distilforge package --format
triton --backend python`): TFLite, ExecuTorch, ONNX, OpenVINO and TorchScript artifacts, each answering one request
from tritonclient with exactly the numbers its runner gives when the test opens it directly.

The server is the `tritonserver` binary (2.51) that the PyPI package nvidia-pytriton 0.7 bundles with the python
backend and one backend stub per Python version. nvidia-pytriton cannot be locked beside our pins (numpy<2,
tritonclient~=2.50, a manylinux_2_35 wheel: docs/triton.md), so the test takes the server from an installed
`pytriton` package, or from the `pytriton/tritonserver` folder of an unpacked wheel named by
DISTILFORGE_TRITONSERVER, and skips, saying so, when it has neither or the binary cannot start here."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")

from distilforge.artifacts.records import ExportedArtifact  # noqa: E402
from distilforge.package import package_triton  # noqa: E402
from distilforge.targets import TARGETS  # noqa: E402

# one server for the module, on one xdist worker
pytestmark = pytest.mark.xdist_group("tritonserver")

HEAD = "seq-single"
SERVED = ["onnx:fp32", "tflite:fp32", "tflite:int8-static", "executorch:fp32", "openvino:fp32", "torchscript:fp32"]
START_TIMEOUT_S = 180  # each model's stub imports distilforge and its runtime (7 models: 7 s here)
CANNOT_RUN_HERE = ("error while loading shared libraries", "GLIBC_", "cannot execute binary file", "Exec format")
TRITON_TYPES = {"int32": "INT32", "int64": "INT64"}


def server_home() -> Path:
    """pytriton's tritonserver folder (bin/, backends/, python_backend_stubs/), or skip saying why there is none."""
    named = os.environ.get("DISTILFORGE_TRITONSERVER")
    installed = Path(sys.prefix) / "tritonserver" / "pytriton" / "tritonserver"  # `make test`'s (Makefile)
    if named:
        home = Path(named)
    elif installed.is_dir():
        home = installed
    else:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("no Triton server: `make test` installs nvidia-pytriton's into .venv/tritonserver (it "
                        "cannot be locked beside our pins, see docs/triton.md); or set DISTILFORGE_TRITONSERVER to "
                        "an unpacked nvidia-pytriton 0.7 wheel's pytriton/tritonserver")
        home = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (home / "bin" / "tritonserver").is_file():
        pytest.skip(f"no Triton server: {home}/bin/tritonserver is missing")
    return home


def backends_dir(home: Path, into: Path) -> Path:
    """A backend directory holding pytriton's python backend with the stub built for this Python."""
    stub = home / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    if not stub.is_file():
        pytest.skip(f"no Triton python backend stub for Python {sys.version_info[0]}.{sys.version_info[1]} in {home}")
    python = into / "python"
    shutil.copytree(home / "backends" / "python", python)
    shutil.copy2(stub, python / stub.name)
    (python / stub.name).chmod(0o755)
    return into


def server_env(home: Path) -> dict[str, str]:
    """The wheel's bundled libraries and libpython on the library path; this venv's python3 first on PATH: the
    stub's embedded interpreter finds its packages from it (PYTHONPATH is not enough)."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("the Triton python backend stub needs a shared libpython; this Python is built without one")
    libs = [home.parents[1] / "nvidia_pytriton.libs", Path(sysconfig.get_config_var("LIBDIR"))]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """The server and its backend stubs (its process group), by the server's pid."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def home():
    return server_home()


@pytest.fixture(scope="module")
def build(home, built):
    """The tiny build's validated targets among SERVED (after `home`: with no server, nothing is built)."""
    result = built(HEAD)
    passed = {e.artifact.target for e in result.entries if e.passed}
    served = [t for t in SERVED if t in passed]
    if not any(t.startswith("tflite:") for t in served) or "onnx:fp32" not in served:
        pytest.skip(f"the tiny {HEAD} build has no validated TFLite and ONNX artifacts (tflite/onnx extras missing)")
    return result.out, served


@pytest.fixture(scope="module")
def server(home, build, tmp_path_factory):
    """A tritonserver on 127.0.0.1 serving the build's python-backend repository; stopped when the module ends."""
    out, served = build
    root = tmp_path_factory.mktemp("tritonserver")
    repo = root / "repo"
    package_triton(out, repo, targets=served, backend="python")
    http_port, grpc_port = free_port(), free_port()
    command = [str(home / "bin" / "tritonserver"), "--model-repository", str(repo),
               "--backend-directory", str(backends_dir(home, root / "backends")),
               "--http-address", "127.0.0.1", "--http-port", str(http_port),
               "--grpc-address", "127.0.0.1", "--grpc-port", str(grpc_port), "--allow-metrics", "false"]
    log = root / "server.log"
    with log.open("wb") as sink:
        try:
            process = subprocess.Popen(command, env=server_env(home), stdout=sink, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        except OSError as e:
            pytest.skip(f"tritonserver cannot start on this OS: {e}")
    try:
        wait_until_ready(process, http_port, log)
        yield grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}"), http_port
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen, http_port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready(http_port):
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            if any(sign in tail for sign in CANNOT_RUN_HERE):
                pytest.skip(f"tritonserver cannot run on this OS: {tail.strip().splitlines()[-1]}")
            pytest.fail(f"tritonserver exited with {process.returncode} before it was ready:\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"tritonserver not ready after {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def padded_batch(dtype: str) -> dict[str, np.ndarray]:
    """Two rows of 8 tokens, the second padded after 5 (mask 0)."""
    ids = np.random.default_rng(28).integers(1, 100, size=(2, 8)).astype(dtype)
    mask = np.ones((2, 8), dtype=dtype)
    mask[1, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("target", SERVED)
def test_the_server_answers_with_the_runners_numbers(server, build, target):
    out, served = build
    if target not in served:
        pytest.skip(f"{target} is not built and validated in the tiny {HEAD} build")
    entry = next(a for a in _manifest(out)["artifacts"] if a["target"] == target)
    feed = padded_batch(entry["inputs"][0]["dtype"])
    inputs = []
    for spec in entry["inputs"]:
        tensor = grpcclient.InferInput(spec["name"], list(feed[spec["name"]].shape), TRITON_TYPES[spec["dtype"]])
        tensor.set_data_from_numpy(feed[spec["name"]])
        inputs.append(tensor)
    client, _ = server
    answer = client.infer(target.replace(":", "-"), inputs)
    for name, expected in run_directly(out, entry, feed).items():
        got = answer.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == expected.shape, (target, name, got.shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{target} {name}")


def test_the_http_endpoint_gives_the_same_answer(server, build):
    """The same over HTTP/JSON (KServe v2), for the TFLite model: int32 token ids in, dequantized logits out."""
    out, served = build
    target = next(t for t in served if t.startswith("tflite:"))
    entry = next(a for a in _manifest(out)["artifacts"] if a["target"] == target)
    feed = padded_batch(entry["inputs"][0]["dtype"])
    body = {"inputs": [{"name": s["name"], "shape": list(feed[s["name"]].shape), "datatype": TRITON_TYPES[s["dtype"]],
                        "data": feed[s["name"]].ravel().tolist()} for s in entry["inputs"]]}
    _, http_port = server
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/models/{target.replace(':', '-')}/infer",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        outputs = {o["name"]: o for o in json.loads(response.read())["outputs"]}
    for name, expected in run_directly(out, entry, feed).items():
        got = np.asarray(outputs[name]["data"], dtype=np.float32).reshape(outputs[name]["shape"])
        assert outputs[name]["datatype"] == "FP32"
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{target} {name}")


def run_directly(out: Path, entry: dict, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the artifact's runner gives in this process, opened from the build as validation opened it."""
    threads = _manifest(out)["settings"]["threads"]
    return TARGETS[entry["target"]].open_runner(out, ExportedArtifact.from_dict(entry), threads).run(feed)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())
