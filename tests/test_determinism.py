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
def test_two_builds_are_byte_identical(built, tiny_checkpoints, tmp_path):
    """The session's build of the one-layer token head (in a pytest worker, after whatever tests ran there, targets
    one at a time) and the CLI's in a fresh process from another directory with --jobs 2 (targets on two workers at
    once) give the same files byte for byte, every installed target, and the same manifest but for the converters'
    `warnings`: a library warns once a process, or only once another is imported (JAX's os.fork notice), so what an
    in-process build records there depends on what ran before it in that process. Two CLI builds, each a fresh
    process, give the same manifest byte for byte (test_atomic.py's rerun, test_many.py's merge)."""
    session = built("token")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "distilforge", "build", str(tiny_checkpoints["token"]), "--out",
                           str(out), "--targets", ",".join(session.manifest["settings"]["targets"]), "--quiet",
                           "--keep-going", "--jobs", "2", *[f"--tolerance={t}" for t in TINY_TOLERANCES]],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stderr
    first, second = _digests(session.out), _digests(out)
    assert "manifest.json" in first and len(first) > 10
    manifest = session.manifest
    assert {a["target"] for a in manifest["artifacts"]} == {n for n, t in TARGETS.items() if t.installed()}
    for a in manifest["artifacts"]:  # what the manifest promises, file by file
        if a["reproducible"]["bytes"]:
            assert all(first[f["path"]] == second[f["path"]] for f in a["files"]), a["target"]
        else:
            assert a["reproducible"]["why_not"], a["target"]
    files = {k for k in first.keys() | second.keys() if k != "manifest.json"}
    assert [k for k in sorted(files) if first.get(k) != second.get(k)] == []
    assert _without_warnings(manifest) == _without_warnings(json.loads((out / "manifest.json").read_text()))
    assert not [a["target"] for a in manifest["artifacts"] if a["reproducible"]["caveat"]]  # not even the path


def _without_warnings(manifest: dict) -> dict:
    """The manifest without each entry's `warnings` (and so without the digest over them)."""
    return {**{k: v for k, v in manifest.items() if k != "digest"},
            "artifacts": [{k: v for k, v in a.items() if k != "warnings"} for a in manifest["artifacts"]]}


# torch.onnx (node metadata) and torch.jit.save (debug records) wrote source paths; the others share conversions
ALONE = [t for t in ("onnx:int8-dynamic", "openvino:int8-static", "tflite:fp16", "torchscript:fp32")
         if TARGETS[t].installed()]


def test_an_entry_depends_neither_on_its_siblings_nor_on_where_distilforge_is_installed(built, tiny_checkpoints,
                                                                                       tmp_path):
    """A few targets built alone, by a second copy of the source (another checkout: its own path, its own lock
    beside it) from another working directory, give each entry the session's build of every target with the
    installed package gave it: files (by hash), details, validation, ladder (not `warnings`: see
    test_two_builds_are_byte_identical).

    A format's targets share one conversion per build (exporters/common.shared_conversion), so an entry must not
    depend on its siblings; torch.onnx writes the traced code's absolute paths into node metadata and torch.jit.save
    into debug records (106 of them in a tiny model's ONNX file), which the exporters drop."""
    assert ALONE, "no backend installed"
    root = Path(__file__).resolve().parent.parent
    other = tmp_path / "other-checkout"
    shutil.copytree(root / "distilforge", other / "distilforge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "requirements.lock", other / "requirements.lock")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(other)}
    where = subprocess.run([sys.executable, "-P", "-c", "import distilforge; print(distilforge.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    assert Path(where).is_relative_to(other), where
    out = tmp_path / "alone"
    done = subprocess.run([sys.executable, "-P", "-m", "distilforge", "build", str(tiny_checkpoints["token"]),
                           "--out", str(out), "--targets", ",".join(ALONE), "--quiet",
                           *[f"--tolerance={t}" for t in TINY_TOLERANCES]],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr
    alone = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert [a["target"] for a in alone] == ALONE
    with_siblings = {a["target"]: a for a in built("token").manifest["artifacts"]}
    for entry in alone:
        other = with_siblings[entry["target"]]
        assert {k: v for k, v in entry.items() if k != "warnings"} == {k: v for k, v in other.items()
                                                                        if k != "warnings"}, entry["target"]
    files = _digests(out)
    assert all(files[f["path"]] == f["sha256"] for a in alone for f in a["files"])
