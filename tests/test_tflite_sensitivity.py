"""TFLite measured rungs: every eager layer group is found among the fp32 flatbuffer's FULLY_CONNECTED ops, and an
INT8 export keeps the groups it is told to fully float (float32 weights) while the others get int8 weights."""

from __future__ import annotations

import numpy as np
import pytest
from tiny import export_rungs, make_checkpoint

from distilforge.errors import ExportError
from distilforge.options import BuildOptions
from distilforge.quantize.ladder import QuantizeRun
from distilforge.targets import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["tflite:int8-dynamic"].installed(), reason="tflite extra not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny sequence classifier (2 layers, dim 32, FFN 64) and its fp32 flatbuffer."""
    from distilforge.checkpoint import load_checkpoint
    from distilforge.exporters.tflite import convert_fp32, declared_shapes

    ckpt = load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tflite-sens"), "seq-single"))
    return ckpt, convert_fp32(ckpt, declared_shapes(ckpt.info, BuildOptions()), "tflite:fp32")


@pytest.mark.parametrize("scheme", ["dynamic_scheme", "static_scheme"])
def test_every_eager_group_has_its_own_fully_connected_ops(tiny, scheme):
    from distilforge.quantize import tflite as tflite_quantize
    from distilforge.quantize.sensitivity import head_groups, quantizable_groups
    from distilforge.quantize.tflite_layers import layer_groups_in_model

    ckpt, fp32 = tiny
    groups = quantizable_groups(ckpt.model, getattr(tflite_quantize, scheme)(BuildOptions()))
    placed = layer_groups_in_model(fp32, head_groups(ckpt.model))
    assert set(groups) == set(placed) == {f"layer.{i}.{r}" for i in (0, 1)
                                          for r in ("qkv", "attention_out", "ffn_in", "ffn_out")} | {
        "head.pre_classifier", "head.classifier"}
    assert all(len(placed[g]) == len(groups[g]) for g in groups)  # q, k and v: three ops; every other group one
    selectors = [s for found in placed.values() for s in found]
    assert len(selectors) == len(set(selectors)) == 14  # no op addressed by two groups


def _fc_weight_types(path) -> list[tuple[tuple[int, ...], type]]:
    """(weight shape, weight dtype) of each FULLY_CONNECTED op, in execution order, as the interpreter reads them."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(tuple(tensors[op["inputs"][1]]["shape"]), tensors[op["inputs"][1]]["dtype"])
            for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


def test_int8_dynamic_keeps_a_float_group_float(tiny, tmp_path):
    from distilforge.exporters.tflite import MODEL_FILE
    from distilforge.quantize.tflite import export_int8_dynamic

    ckpt, _ = tiny
    artifact = export_int8_dynamic(ckpt, tmp_path, BuildOptions(),
                                   QuantizeRun(rung="all-int8", float_layers=("layer.1.ffn_out",)))
    assert artifact.details["float_layers"] == ["layer.1.ffn_out"]
    weights = _fc_weight_types(tmp_path / MODEL_FILE)
    ffn_out = [dtype for shape, dtype in weights if shape == (32, 64)]  # lin2 narrows 64 -> 32: one per layer
    assert ffn_out == [np.int8, np.float32]
    assert sum(dtype == np.float32 for _, dtype in weights) == 1 and len(weights) == 14


def test_a_group_with_no_op_is_an_export_error(tiny, tmp_path):
    from distilforge.quantize.tflite import export_int8_dynamic

    ckpt, _ = tiny
    with pytest.raises(ExportError, match="layer group layer.7.qkv has no fully connected op in the TFLite model"):
        export_int8_dynamic(ckpt, tmp_path, BuildOptions(), QuantizeRun(rung="all-int8", float_layers=("layer.7.qkv",)))


def test_the_static_rungs_share_one_calibration_and_give_the_same_bytes(tiny, tmp_path, monkeypatch):
    """A static rung takes the calibrated ranges of an earlier one whose float groups are a subset of its own;
    each rung's flatbuffer is the one it gives when it calibrates alone, and a rung with fewer float groups than
    every earlier one calibrates again."""
    from distilforge.exporters.tflite import MODEL_FILE
    from distilforge.quantize import tflite as tflite_quantize
    from distilforge.quantize.calibration import load_calibration

    ckpt, _ = tiny
    calibration = load_calibration(None, ckpt.tokenizer, ckpt.head, samples=8)
    rungs = [("static-widening", ("layer.1.ffn_in",)), ("static-widening", ("layer.1.ffn_in", "layer.0.qkv")),
             ("static-same-width", ()), ("static-qkv", ()), ("static-widening", ("layer.0.qkv",))]
    calibrated = []
    calibrate = tflite_quantize._calibrate
    monkeypatch.setattr(tflite_quantize, "_calibrate", lambda *a: calibrated.append(1) or calibrate(*a))

    def export_all(tag: str) -> list[str]:
        return export_rungs(tflite_quantize.export_int8_static, ckpt, calibration, rungs, tmp_path / tag, MODEL_FILE)

    shared = export_all("shared")
    assert len(calibrated) == 2  # the first rung, and the static-same-width one (fewer float groups than it)
    calibrated.clear()
    monkeypatch.setattr(tflite_quantize, "_ranges", lambda ckpt, q, fp32, cal, shapes, threads, floats: (
        tflite_quantize._calibrate(q, fp32, tflite_quantize._calibration_feeds(cal, shapes), threads)))
    alone = export_all("alone")
    assert len(calibrated) == len(rungs)
    assert shared == alone
    assert len(set(shared)) == len(rungs)  # five different recipes
