"""Incremental builds: an unchanged rerun rebuilds nothing and says so; a changed tolerance re-validates
without exporting; a changed file or input is rebuilt; the manifest is the same bytes either way."""

import json

from distilforge.options import BuildOptions
from distilforge.pipeline import build
from distilforge.validate.tolerances import parse_overrides

TARGETS = ["onnx:fp32", "torchscript:fp32"]


def _run(ckpt, out, **kwargs):
    said = []
    result = build(ckpt, out, targets=TARGETS, progress=said.append, **kwargs)
    return result, said, (out / "manifest.json").read_bytes()


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
            and p.parent != out}


def test_unchanged_rerun_rebuilds_nothing(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    first, _, manifest = _run(tiny_checkpoints["seq-single"], out)
    assert first.passed and all(e.reused == "" for e in first.entries)
    files = _mtimes(out)

    again, said, manifest_again = _run(tiny_checkpoints["seq-single"], out)
    assert [e.reused for e in again.entries] == ["all", "all"]
    assert "everything is up to date: nothing was exported or validated again" in said
    assert not any("exporting" in s or "validating" in s for s in said)
    assert _mtimes(out) == files  # not one artifact file rewritten
    assert manifest_again == manifest
    assert not (out / ".distilforge-cache.json").exists()


def test_changed_tolerance_revalidates_without_exporting(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    _run(tiny_checkpoints["seq-single"], out)
    files = _mtimes(out)
    options = BuildOptions(tolerances=parse_overrides(["fp32.max_abs=1e-9"]))
    result, said, _ = _run(tiny_checkpoints["seq-single"], out, options=options, keep_going=True)
    assert [e.reused for e in result.entries] == ["export", "export"]
    assert sum("export unchanged, validating again" in s for s in said) == 2
    changed = {path for path, mtime in _mtimes(out).items() if files.get(path) != mtime}
    assert changed == {"onnx-fp32/distilforge.json", "torchscript-fp32/distilforge.json"}  # only the cards, which
    card = json.loads((out / "onnx-fp32" / "distilforge.json").read_text())  # carry the figures and the rule
    assert card["validation"]["tolerance"]["max_abs"] == 1e-9 and card["passed"] is False
    onnx = result.entries[0]
    assert onnx.validation.tolerance.max_abs == 1e-9 and not onnx.passed  # the new rule was applied


def test_damaged_artifact_or_new_option_is_rebuilt(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    _run(tiny_checkpoints["seq-single"], out)
    model = out / "torchscript-fp32" / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed
    model.write_bytes(bytes(data))
    result, said, _ = _run(tiny_checkpoints["seq-single"], out)
    assert [e.reused for e in result.entries] == ["all", ""]
    assert result.passed

    result, _, _ = _run(tiny_checkpoints["seq-single"], out, options=BuildOptions(seed=7))
    assert [e.reused for e in result.entries] == ["", ""]

    result, _, _ = _run(tiny_checkpoints["seq-single"], out, rebuild=True, options=BuildOptions(seed=7))
    assert [e.reused for e in result.entries] == ["", ""]


def test_cache_entries_are_in_the_manifest(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    _run(tiny_checkpoints["seq-single"], out)
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [a["cache"] for a in manifest["artifacts"]]
    assert all(len(k["export"]) == 64 and len(k["validation"]) == 64 for k in keys)
    assert keys[0]["export"] != keys[1]["export"]
