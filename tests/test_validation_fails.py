"""A validation that must fail does fail: perturbed weights, tampered files."""

import json

import numpy as np
import pytest

from distilforge.pipeline import build, validate_dir


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
    onnx.save(model, str(model_path), save_as_external_data=True, location="model.onnx.data")


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
    (built / "onnx-fp32" / "model.onnx.data").unlink()
    result = validate_dir(built)
    assert any("model.onnx.data is missing" in p for p in result.problems)
    assert not result.passed


def test_manifest_records_what_build_systems_read(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["checkpoint"]["head"] == "DistilBertForSequenceClassification"
    art = manifest["artifacts"][0]
    assert art["target"] == "onnx:fp32"
    assert {f["path"] for f in art["files"]} == {"onnx-fp32/model.onnx", "onnx-fp32/model.onnx.data"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in art["files"])
    assert art["validation"]["passed"] is True
    assert art["validation"]["tolerance"]["max_abs"] == 1e-4
    assert art["details"]["opset"] == 18
    assert art["inputs"][0]["dynamic_axes"] == ["batch", "sequence"]
    assert manifest["machine"]["flags"].keys() >= {"avx2", "avx512f", "avx512_vnni"}
