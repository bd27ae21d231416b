"""The emulated ARM64 runtime (distilforge/validate/arm64/): provisioned once from Debian's packages and PyPI,
then tiny models run under qemu-aarch64 on two CPU models must give the host's fp32 outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilforge.errors import UsageError
from distilforge.targets import arm64_formats
from distilforge.validate import arm64

X86_LINUX = sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")
needs_x86_linux = pytest.mark.skipif(not X86_LINUX, reason="the ARM64 runtime is emulated on x86_64 Linux hosts")
CPUS = ("cortex-a53", "cortex-a76")
FP32_ATOL = 1e-5
# one pytest-xdist worker runs the ARM tests (the emulated runtime is set up on first use, in the user's cache)
pytestmark = pytest.mark.xdist_group("arm64")

# One script, run by the host's Python for the reference and by the emulated one: fmt model x.npy out.npy
RUN = """
import sys
import numpy as np
fmt, model, x_path, out_path = sys.argv[1:]
x = np.load(x_path)
if fmt == "onnx":
    import onnxruntime as ort
    y = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
elif fmt == "tflite":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
else:
    import openvino as ov
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled({0: x})[compiled.output(0)]
np.save(out_path, y)
"""

# A TFLite model, made by TensorFlow (a test fixture in the venv) in its own process: keep it out of pytest's.
MAKE_TFLITE = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
w, b = np.load(sys.argv[1]), np.load(sys.argv[2])
@tf.function(input_signature=[tf.TensorSpec([4, w.shape[0]], tf.float32, name="x")])
def f(x):
    return {"y": tf.matmul(x, w) + b}
converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
open(sys.argv[3], "wb").write(converter.convert())
"""


# --- parse_cpu, command, env, the lock and the cache: no provisioning --------------------------------------------


@pytest.mark.parametrize("text", ["arm64:cortex-a53", "arm64:cortex-a55", "arm64:cortex-a76", "arm64:neoverse-n2",
                                  " ARM64:Cortex-A76 "])
def test_parse_cpu_takes_the_listed_models(text):
    assert parse_ok(text) in arm64.CPU_MODELS


def parse_ok(text: str) -> str:
    return arm64.parse_cpu(text)


def test_parse_cpu_takes_max_and_leaves_the_qemu_check_to_command():
    assert arm64.parse_cpu("arm64:max") == "max"


@pytest.mark.parametrize("text", ["arm64:cortex-a99", "cortex-a76", "x86:cortex-a76", "arm64", "arm64:", "", "a76"])
def test_parse_cpu_refuses_anything_else_in_one_line_listing_the_allowed(text):
    with pytest.raises(UsageError) as caught:
        arm64.parse_cpu(text)
    message = str(caught.value)
    assert "\n" not in message and repr(text) in message
    assert all(f"arm64:{model}" in message for model in arm64.CPU_MODELS) and "arm64:max" in message


def fake_runtime(version: tuple[int, ...]) -> arm64.Arm64Runtime:
    return arm64.Arm64Runtime(qemu=Path("/q/qemu-aarch64"), sysroot=Path("/s"), site=Path("/w"),
                              qemu_version=version)


def test_command_is_qemu_then_the_sysroot_python():
    assert fake_runtime((10, 0, 13)).command("cortex-a76") == [
        "/q/qemu-aarch64", "-cpu", "cortex-a76", "-L", "/s", "/s/usr/bin/python3.11"]
    assert fake_runtime((10, 0, 13)).command("max")[:3] == ["/q/qemu-aarch64", "-cpu", "max"]


def test_max_is_refused_with_a_qemu_older_than_10_in_one_line():
    with pytest.raises(UsageError) as caught:
        fake_runtime((7, 2, 22)).command("max")
    assert "\n" not in str(caught.value) and "7.2.22" in str(caught.value) and "SVE" in str(caught.value)
    assert fake_runtime((7, 2, 22)).command("cortex-a53")[2] == "cortex-a53"  # the named models still run
    with pytest.raises(UsageError):
        fake_runtime((10, 0)).command("pentium")


def test_env_puts_the_wheels_first_and_drops_what_would_mislead_the_guest(monkeypatch):
    monkeypatch.setenv("PYTHONHOME", "/usr")
    monkeypatch.setenv("LD_PRELOAD", "/lib/x86_64-linux-gnu/libfoo.so")
    monkeypatch.setenv("QEMU_CPU", "max")
    env = fake_runtime((10,)).env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/w"
    assert (Path(env["PYTHONPATH"].split(os.pathsep)[1]) / "distilforge" / "__init__.py").is_file()
    assert env["PYTHONNOUSERSITE"] == "1"
    assert not {"PYTHONHOME", "LD_PRELOAD", "QEMU_CPU"} & set(env)


def test_the_lock_gives_versions_and_hashes_per_package():
    text = ("# header\nnumpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64
            + "\n    # via\n    #   onnxruntime\nAI_Edge.LiteRT==2.3.0 ; python_version >= '3.10' \\\n"
            "    --hash=sha256:" + "c" * 64 + "\npackaging==26.4\n")
    pins = arm64._read_lock(text)
    assert pins["numpy"].hashes == ("sha256:" + "a" * 64, "sha256:" + "b" * 64)
    assert (pins["ai-edge-litert"].version, pins["ai-edge-litert"].hashes) == ("2.3.0", ("sha256:" + "c" * 64,))
    assert pins["packaging"].line() == "packaging==26.4"
    lock = Path(arm64.__file__).resolve().parents[3] / "requirements.lock"  # arm64/__init__.py
    if lock.is_file():  # the real lock pins every wheel the runtime installs, with hashes
        real = arm64._read_lock(lock.read_text())
        for name in arm64.wheels(arm64_formats()):
            assert real[name].hashes, name


def test_an_unfinished_set_up_is_never_used_and_a_second_one_discards_its_copy(tmp_path):
    pins = [arm64._Pin("numpy", "2.4.6", ())]
    assert arm64._reusable(tmp_path, "k", "base", pins) is None
    (tmp_path / "k" / "site").mkdir(parents=True)  # no ok.json: interrupted
    assert arm64._reusable(tmp_path, "k", "base", pins) is None
    winners = []
    for n in range(2):
        with arm64._building(tmp_path, "k2") as tmp:
            (tmp / "mark").write_text(str(n))
            (tmp / "ok.json").write_text(json.dumps({"recipe": arm64.RECIPE, "base": "base",
                                                     "pins": [arm64._digest(pins[0].line())]}))
            arm64._publish(tmp, tmp_path / "k2")
        winners.append((tmp_path / "k2" / "mark").read_text())
    assert winners == ["0", "0"] and not list(tmp_path.glob(".tmp-*"))
    assert arm64._reusable(tmp_path, "other-key", "base", pins) == tmp_path / "k2"  # same pins, more formats


# --- the real thing ----------------------------------------------------------------------------------------------


def _formats() -> dict:
    """The runnable formats whose host runtime is installed here (to make and compare the models)."""
    return {f: spec for f, spec in arm64_formats().items()
            if importlib.util.find_spec(spec.module.split(".")[0]) is not None}


@pytest.fixture(scope="module")
def runtime():
    if not X86_LINUX:
        pytest.skip("the ARM64 runtime is emulated on x86_64 Linux hosts")
    try:
        return arm64.runtime(_formats(), progress=lambda message: print(message, file=sys.stderr))
    except arm64.Arm64UnavailableError as e:  # no apt-get, no keyring, or no registry and a cold cache
        pytest.skip(f"the ARM64 runtime cannot be provisioned here: {e}")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """fmt -> a model computing x @ w + b (x: 4 x 64 float32), and the input, in one folder."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("arm64-models")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    np.save(folder / "x.npy", rng.standard_normal((4, 64)).astype(np.float32))
    np.save(folder / "w.npy", w)
    np.save(folder / "b.npy", b)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    found = {"onnx": folder / "model.onnx"}
    if importlib.util.find_spec("tensorflow") is not None:
        made = subprocess.run([sys.executable, "-c", MAKE_TFLITE, str(folder / "w.npy"), str(folder / "b.npy"),
                               str(folder / "model.tflite")], capture_output=True, text=True, timeout=300)
        assert made.returncode == 0, made.stderr[-2000:]
        found["tflite"] = folder / "model.tflite"
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        ov.save_model(ov.convert_model(str(folder / "model.onnx")), str(folder / "model.xml"), compress_to_fp16=False)
        found["openvino"] = folder / "model.xml"
    (folder / "run.py").write_text(RUN)
    return found


def _run(command: list[str], fmt: str, model: Path, out: Path, env: dict[str, str] | None = None) -> np.ndarray:
    folder = model.parent
    done = subprocess.Popen([*command, str(folder / "run.py"), fmt, str(model), str(folder / "x.npy"), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, f"{' '.join(command[:3])} {fmt}: {stderr[-2000:]}"
    # oneDNN's aarch64 JIT writes a perf map per process unless told not to (Arm64Runtime.env does)
    assert not Path(f"/tmp/perf-{done.pid}.map").exists(), f"{fmt}: the child left /tmp/perf-{done.pid}.map"
    return np.load(out)


@needs_x86_linux
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "openvino"])
def test_emulated_arm64_gives_the_hosts_fp32_outputs(runtime, models, fmt, tmp_path):
    if fmt not in models or fmt not in _formats():
        pytest.skip(f"{fmt}: its runtime (or the tool that makes its model) is not installed here")
    host = _run([sys.executable], fmt, models[fmt], tmp_path / "host.npy")
    x = np.load(models[fmt].parent / "x.npy")
    w, b = np.load(models[fmt].parent / "w.npy"), np.load(models[fmt].parent / "b.npy")
    assert np.abs(host - (x.astype(np.float64) @ w + b)).max() < 1e-4  # the model is what we think it is
    for cpu in CPUS:
        emulated = _run(runtime.command(cpu), fmt, models[fmt], tmp_path / f"{cpu}.npy", env=runtime.env())
        assert emulated.shape == host.shape and emulated.dtype == np.float32
        assert np.abs(emulated - host).max() <= FP32_ATOL, (fmt, cpu, float(np.abs(emulated - host).max()))


@needs_x86_linux
def test_the_child_runs_on_the_cpu_asked_for_and_sees_none_of_the_hosts_packages(runtime):
    code = ("import json, platform, sys, importlib.util\n"
            "part = [l.split(':')[1].strip() for l in open('/proc/cpuinfo') if l.startswith('CPU part')][:1]\n"
            "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(),\n"
            "  'prefix': sys.prefix, 'part': part, 'distilforge': importlib.util.find_spec('distilforge').origin,\n"
            "  'host': [m for m in ('torch', 'transformers', 'tensorflow', 'onnx') if importlib.util.find_spec(m)]}))")
    done = subprocess.run([*runtime.command("cortex-a53"), "-c", code], capture_output=True, text=True,
                          env=runtime.env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["machine"] == "aarch64" and seen["python"].startswith("3.11.")
    assert Path(seen["prefix"]).is_relative_to(runtime.sysroot)
    assert seen["host"] == [] and seen["distilforge"].endswith("distilforge/__init__.py")
    if runtime.qemu_version >= arm64.MIN_QEMU:  # qemu 10 emulates /proc/cpuinfo: a Cortex-A53 is part 0xd03
        assert seen["part"] == ["0xd03"]
    record = json.loads((runtime.site.parent / "ok.json").read_text())
    assert record["python"] == "3.11" and record["debian_packages"]["python3.11"].startswith("3.11.")
