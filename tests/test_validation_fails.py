"""A validation that must fail does fail: perturbed weights, tampered files."""

import json

import numpy as np
import pytest
from test_mutants import resign

from distilforge.pipeline import build
from distilforge.pipeline.revalidate import validate_dir


@pytest.fixture()
def built(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    result = build(tiny_checkpoints["seq-single"], out, targets=["onnx:fp32"])
    assert result.passed
    return out


def _perturb_onnx_weights(model_path, scale=0.05):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 2 and w.size > 100:
            init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, scale, w.shape).astype(np.float32), init.name))
            break
    onnx.save(model, str(model_path), save_as_external_data=True, location="model.onnx_data")


def test_perturbed_weights_fail_validation(built):
    _perturb_onnx_weights(built / "onnx-fp32" / "model.onnx")
    result = validate_dir(built)
    assert not result.passed
    text = "\n".join(result.failures)
    assert "onnx:fp32: onnx-fp32/model.onnx has" in text  # the size and hash check
    numeric = [f for f in result.failures if "max abs diff" in f]
    assert numeric, text  # and the figures themselves
    assert numeric[0].startswith("onnx:fp32: logits on ") and "shape" in numeric[0]


def test_validate_passes_on_an_untouched_build(built):
    result = validate_dir(built)
    assert result.passed, result.failures


def test_missing_file_is_reported(built):
    (built / "onnx-fp32" / "model.onnx_data").unlink()
    (built / "onnx-fp32" / "tokenizer.json").unlink()
    result = validate_dir(built)
    assert any("model.onnx_data is missing" in p for p in result.problems)
    assert any("onnx-fp32/tokenizer.json is missing" in p for p in result.problems)
    assert not result.passed


def test_manifest_records_what_build_systems_read(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    assert manifest["checkpoint"]["head"] == "DistilBertForSequenceClassification"
    art = manifest["artifacts"][0]
    assert art["target"] == "onnx:fp32"
    assert {(f["path"], f["role"]) for f in art["files"] if f["role"] in ("model", "config", "card")} == {
        ("onnx-fp32/model.onnx", "model"), ("onnx-fp32/model.onnx_data", "model"),
        ("onnx-fp32/config.json", "config"), ("onnx-fp32/distilforge.json", "card")}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in art["files"])
    assert art["validation"]["passed"] is True
    assert art["validation"]["tolerance"]["max_abs"] == 1e-4
    assert art["details"]["opset"] == 18
    assert art["inputs"][0]["dynamic_axes"] == ["batch", "sequence"]
    assert manifest["machine"]["flags"].keys() >= {"avx2", "avx512f", "avx512_vnni"}


def _edit_manifest(out, change):
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def test_edited_manifest_is_reported(built):
    def loosen(m):  # make a failing artifact look good: a looser rule, as if it had been the build's
        m["artifacts"][0]["validation"]["tolerance"]["max_abs"] = 1.0

    _edit_manifest(built, loosen)
    result = validate_dir(built)
    assert not result.passed
    assert "manifest.json: edited after the build (its digest does not match its content)" in result.problems
    assert any("records a pass rule" in p and "not the build's fp32 rule" in p for p in result.problems)


def test_edited_figures_are_caught_by_measuring_again(built):
    from distilforge.artifacts.manifest import manifest_digest

    def improve(m):  # better figures, and the digest recomputed: only measuring again can tell
        m["artifacts"][0]["validation"]["worst"]["max_abs"] = 1e-9
        m["digest"] = manifest_digest(m)

    _edit_manifest(built, improve)
    result = validate_dir(built)
    assert not result.passed
    mismatch = [p for p in result.problems if "max_abs" in p]
    assert mismatch[0].startswith("onnx:fp32: the manifest records max_abs 1e-09, measured now "), result.problems


def test_damaged_manifest_is_one_line(built):
    _edit_manifest(built, lambda m: m["artifacts"][0].pop("files"))
    from distilforge.errors import OutputDirError

    with pytest.raises(OutputDirError, match=r"manifest.json: damaged: missing artifacts\[0\].files"):
        validate_dir(built)


def test_a_resigned_folder_whose_labels_or_vocabulary_differ_from_the_checkpoint_fails(built):
    """Issue 27 (tests/test_mutants.py has more mutants): the hashes only say a folder is as it was written. Its
    companions must still be the checkpoint's: swapped labels would make every answer of those two classes wrong,
    a changed vocabulary every text."""
    resign(built, "onnx:fp32")
    assert validate_dir(built).passed  # the control: re-signed, unchanged

    config_path = built / "onnx-fp32" / "config.json"
    config = json.loads(config_path.read_text())
    config["id2label"] = {"0": config["id2label"]["1"], "1": config["id2label"]["0"], "2": config["id2label"]["2"]}
    config_path.write_text(json.dumps(config, indent=2))
    vocab = built / "onnx-fp32" / "vocab.txt"
    words = vocab.read_text().splitlines()
    words[10], words[11] = words[11], words[10]
    vocab.write_text("\n".join(words) + "\n")
    resign(built, "onnx:fp32")

    result = validate_dir(built)
    assert not result.passed
    config_line = next(p for p in result.problems if "config.json" in p)
    assert config_line.startswith("onnx:fp32: onnx-fp32/config.json is not the checkpoint's config.json: "
                                  "'id2label' is ") and "in the checkpoint" in config_line, config_line
    vocab_line = next(p for p in result.problems if "vocab.txt" in p)
    assert vocab_line == (f"onnx:fp32: onnx-fp32/vocab.txt is not the checkpoint's vocab.txt: 2 of {len(words)} lines "
                          f"differ; line 11 is {json.dumps(words[10])} here, {json.dumps(words[11])} in the checkpoint")
    assert not [p for p in result.problems if "digest" in p or "has changed" in p]  # the re-signing held
