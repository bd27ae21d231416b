"""A failing backend fails its own target, clearly: a converter that raises, a runtime that kills its
process. Without --keep-going the build stops there; with it the others finish. The manifest says which."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from distilforge.pipeline import build
from distilforge.targets import TARGETS, Target

TESTS = Path(__file__).parent


def _raising_converter(ckpt, folder, options):
    (folder / "half-written.onnx").write_bytes(b"\0" * 10)
    raise RuntimeError("converter blew up\nsecond line of a long native message")


def _onnx_fp32_named_fp16(ckpt, folder, options):
    artifact = TARGETS["onnx:fp32"].export(ckpt, folder, options)
    artifact.target = "onnx:fp16"
    return artifact


@pytest.fixture
def faulty_targets(monkeypatch):
    import crashing_runtime

    good = TARGETS["onnx:fp32"]
    monkeypatch.setitem(TARGETS, "onnx:fp32-optimized",
                        Target("onnx:fp32-optimized", good.spec, export=_raising_converter))
    monkeypatch.setitem(TARGETS, "onnx:fp16",
                        Target("onnx:fp16", replace(good.spec, open_runner=crashing_runtime.open_runner),
                               export=_onnx_fp32_named_fp16))
    # the validation child imports crashing_runtime by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


ORDER = ["onnx:fp32-optimized", "onnx:fp16", "torchscript:fp32"]


def test_keep_going_builds_the_others(faulty_targets, tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    result = build(tiny_checkpoints["seq-single"], out, targets=ORDER, keep_going=True)
    entries = {e["target"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}
    assert entries["onnx:fp32-optimized"]["error"] == ("onnx:fp32-optimized: export failed: RuntimeError: "
                                                       "converter blew up")
    assert entries["onnx:fp16"]["error"].startswith("onnx:fp16: running it failed: the runtime's process "
                                                    "killed by SIGSEGV")
    assert entries["torchscript:fp32"]["validation"]["passed"] is True
    assert not result.passed and result.manifest["passed"] is False
    assert not (out / "onnx-fp32-optimized").exists()  # the converter's half-written file was not kept
    assert not list(out.glob(".staging-*"))


def test_without_keep_going_the_build_stops_at_the_first_failure(faulty_targets, tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    result = build(tiny_checkpoints["seq-single"], out, targets=["onnx:fp16", "torchscript:fp32"])
    entries = {e.artifact.target: e for e in result.entries}
    assert "killed by SIGSEGV" in entries["onnx:fp16"].error
    assert entries["torchscript:fp32"].error == ("torchscript:fp32: not built: the build stopped after onnx:fp16 "
                                                 "failed (pass --keep-going to build the others anyway)")
    assert not (out / "torchscript-fp32").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["target"] for a in manifest["artifacts"]] == ["onnx:fp16", "torchscript:fp32"]
    assert manifest["passed"] is False
