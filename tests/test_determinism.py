"""Same inputs, same bytes: two builds in separate processes give identical files and manifests."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_TOLERANCES

from distilforge.targets import TARGETS


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_builds_are_byte_identical(tmp_path):
    """... and building targets on two workers at once (--jobs 2) gives the bytes of one at a time (--jobs 1).
    On a one-layer token head: what makes bytes differ does not depend on the depth, and ExecuTorch's lowering
    (most of these builds' time) costs per layer."""
    from tiny import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "checkpoint", "token", n_layers=1)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    outs = [tmp_path / "a", tmp_path / "b"]
    for out, jobs in zip(outs, ("1", "2"), strict=True):  # every installed target, each build in its own process
        subprocess.run([sys.executable, "-m", "distilforge", "build", str(checkpoint), "--out", str(out),
                        "--quiet", "--keep-going", "--jobs", jobs, "--tolerance", "int8.min_cosine=0.5",
                        "--tolerance", "int8.min_agreement=0.5"],
                       env=env, capture_output=True, text=True, timeout=1200)
    first, second = (_digests(o) for o in outs)
    assert "manifest.json" in first and len(first) > 10
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert {a["target"] for a in manifest["artifacts"]} == {n for n, t in TARGETS.items() if t.installed()}
    for a in manifest["artifacts"]:  # what the manifest promises, file by file
        if a["reproducible"]["bytes"]:
            assert all(first[f["path"]] == second[f["path"]] for f in a["files"]), a["target"]
        else:
            assert a["reproducible"]["why_not"], a["target"]
    assert first == second, {k for k in first if first[k] != second.get(k)}
    assert not [a["target"] for a in manifest["artifacts"] if a["reproducible"]["caveat"]]  # not even the path


PATH_TARGETS = [t for t in ("onnx:fp32", "onnx:int8-dynamic", "torchscript:fp32", "torchscript:int8-dynamic")
                if TARGETS[t].installed()]


def test_bytes_do_not_depend_on_where_distilforge_is_installed(tiny_checkpoints, tmp_path):
    """The same build from a second copy of the source (another checkout: its own path, its own lock beside it) and
    from the installed package, each from another working directory, gives the same bytes and manifest: torch.onnx
    writes the traced code's absolute paths into node metadata, torch.jit.save into debug records (106 of them
    in a tiny model's ONNX file), and the exporters drop them."""
    root = Path(__file__).resolve().parent.parent
    other = tmp_path / "other-checkout"
    shutil.copytree(root / "distilforge", other / "distilforge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "requirements.lock", other / "requirements.lock")
    outs = {}
    for name, pythonpath in (("installed", ""), ("other", str(other))):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
        where = subprocess.run([sys.executable, "-P", "-c", "import distilforge; print(distilforge.__file__)"],
                               env=env, capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
        assert Path(where).is_relative_to(other) == (name == "other"), where
        outs[name] = tmp_path / name
        done = subprocess.run([sys.executable, "-P", "-m", "distilforge", "build", str(tiny_checkpoints["token"]),
                               "--out", str(outs[name]), "--targets", ",".join(PATH_TARGETS), "--quiet",
                               *[f"--tolerance={t}" for t in TINY_TOLERANCES]],
                              env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
        assert done.returncode == 0, done.stderr
    installed, elsewhere = (_digests(o) for o in outs.values())
    assert "manifest.json" in installed and installed == elsewhere, {k for k in installed
                                                                     if installed[k] != elsewhere.get(k)}


def test_an_entry_does_not_depend_on_the_targets_built_beside_it(built, tiny_checkpoints, tmp_path):
    """A format's targets share one conversion per build (exporters/common.shared_conversion), so each entry must be
    the same built alone as built with its siblings: files, details, validation, ladder."""

    from distilforge.options import BuildOptions
    from distilforge.pipeline import build
    from distilforge.validate.tolerances import parse_overrides

    alone = [t for t in ("onnx:int8-dynamic", "openvino:int8-static", "tflite:fp16") if TARGETS[t].installed()]
    assert alone, "no backend installed"
    with_siblings = {a["target"]: a for a in built("token").manifest["artifacts"]}
    result = build(tiny_checkpoints["token"], tmp_path / "alone", targets=alone, force=True, keep_going=True,
                   options=BuildOptions(tolerances=parse_overrides(TINY_TOLERANCES)))
    assert [a["target"] for a in result.manifest["artifacts"]] == alone
    for entry in result.manifest["artifacts"]:
        # every key but `warnings`: libraries warn once per process (torch.jit.trace's deprecation, JAX's os.fork
        # notice), so what a build records there depends on what ran before it in the same process
        other = with_siblings[entry["target"]]
        assert {k: v for k, v in entry.items() if k != "warnings"} == {k: v for k, v in other.items()
                                                                        if k != "warnings"}, entry["target"]
