"""ONNX static INT8: the ladder's rungs calibrate once per build and give the bytes they give alone."""

from __future__ import annotations

from tiny import export_rungs, make_checkpoint


def test_the_static_rungs_share_one_calibration_and_give_the_same_bytes(tmp_path, monkeypatch):
    """Rungs that quantize the same op types take the first one's ranges through quantize_static's calibration
    cache; each rung's model is the one it gives when it calibrates alone."""
    import importlib

    from distilforge.checkpoint import load_checkpoint
    from distilforge.exporters.onnx import MODEL_FILE
    from distilforge.quantize import onnx as onnx_quantize
    from distilforge.quantize.calibration import load_calibration

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "checkpoint", "seq-single"))
    calibration = load_calibration(None, ckpt.tokenizer, ckpt.head, samples=8)
    rungs = [("all-int8", ()), ("all-int8", ("layer.1.ffn_out",)), ("ffn-out-float", ()),
             ("all-int8", ("layer.0.qkv", "layer.1.ffn_in"))]
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the package's quantize is a function
    calibrations = []
    create = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: calibrations.append(1) or create(*a, **k))

    def export_all(tag: str) -> list[str]:
        return export_rungs(onnx_quantize.export_int8_static, ckpt, calibration, rungs, tmp_path / tag, MODEL_FILE)

    shared = export_all("shared")
    assert len(calibrations) == 1
    calibrations.clear()
    shared_conversion = onnx_quantize.shared_conversion
    monkeypatch.setattr(onnx_quantize, "shared_conversion", lambda ckpt, key, make, *a: (
        make() if key[0] == "onnx:ranges" else shared_conversion(ckpt, key, make, *a)))
    alone = export_all("alone")
    assert len(calibrations) == len(rungs)
    assert shared == alone
    assert len(set(shared)) == len(rungs)  # four different recipes
