"""The validator must reject a bad INT8 artifact: every op quantized, calibrated on one repeated sentence.

This is how peers fail silently (static INT8 of every op); here the same mistake must be a failed
build that names the artifact and the broken figures (slow: the real default model)."""

import pytest

from distilforge.targets import TARGETS, Target

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not TARGETS["tflite:int8-static"].installed(), reason="tflite extra missing")]


def _every_op_int8(ckpt, folder, options, run):
    from distilforge.quantize.tflite import _quantized

    def recipe(q, fp32):
        from ai_edge_quantizer import recipe as recipes

        q.load_quantization_recipe(recipes.static_wi8_ai8())  # every supported op, nothing kept float

    return _quantized(ckpt, folder, options, "tflite:int8-static", recipe, {}, calibration=run.calibration)


def test_every_op_quantized_on_one_repeated_sentence_fails(tmp_path, monkeypatch):
    from distilforge.options import BuildOptions
    from distilforge.pipeline import build

    good = TARGETS["tflite:int8-static"]
    bad = Target(good.name, good.spec, export=_every_op_int8, calibrated=True)
    monkeypatch.setitem(TARGETS, good.name, bad)
    calibration = tmp_path / "one.txt"
    calibration.write_text("The weather is nice today.\n" * 16)
    options = BuildOptions(calibration_file=calibration, calibration_samples=16)
    result = build(None, tmp_path / "out", targets=["tflite:int8-static"], options=options, force=True)

    assert not result.passed
    failures = result.failures
    assert any("cosine" in f and "< 0.99" in f for f in failures), failures
    assert any("accuracy" in f and "points below" in f for f in failures), failures
    assert all(f.startswith("tflite:int8-static: ") for f in failures)
    entry = result.manifest["artifacts"][0]
    assert entry["validation"]["passed"] is False and result.manifest["passed"] is False
