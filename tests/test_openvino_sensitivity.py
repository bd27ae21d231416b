"""OpenVINO's measured rungs: every eager layer group has MatMuls in the converted model, and a group kept float
comes out of both INT8 exporters with float weights and (static) no quantized activation input."""

from __future__ import annotations

import pytest
from tiny import make_checkpoint

from distilforge.checkpoint import load_checkpoint
from distilforge.errors import ExportError
from distilforge.exporters.openvino import MODEL_FILE, convert
from distilforge.options import BuildOptions
from distilforge.quantize import openvino as openvino_quantize
from distilforge.quantize.calibration import load_calibration
from distilforge.quantize.ladder import QuantizeRun
from distilforge.quantize.sensitivity import Scheme, quantizable_groups
from distilforge.targets import TARGETS

FLOAT = "layer.1.ffn_out"
QUANTIZED = "layer.0.ffn_out"
FIRST = openvino_quantize.STATIC_RUNGS[0].name  # ffn-out-weight-only: int8 weights, float activations for ffn_out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ckpt"), "seq-single"))


@pytest.fixture(scope="module")
def calibration(ckpt):
    return load_calibration(None, ckpt.tokenizer, ckpt.head, samples=8)


def _matmul(model, group: str):
    """The first MatMul of `group` in a saved IR (op names survive quantization and saving)."""
    name = openvino_quantize.layer_groups_in_model(model)[group][0]
    return next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)


def _source(op, port: int):
    return op.input(port).get_source_output().get_node()


def _float_weights(op) -> bool:
    weights = _source(op, 1)
    return weights.get_type_name() == "Constant" and weights.get_element_type().get_type_name() == "f32"


def _quantized_input(op) -> bool:
    return _source(op, 0).get_type_name() in ("FakeQuantize", "FakeConvert")


def _saved(folder):
    import openvino as ov

    return ov.Core().read_model(str(folder / MODEL_FILE))


def test_every_eager_group_has_matmuls_in_the_converted_model(ckpt):
    placed = openvino_quantize.layer_groups_in_model(convert(ckpt, "openvino:int8-static"))
    eager = quantizable_groups(ckpt.model, Scheme())  # every group, the roles static's first rung skips too
    assert set(eager) == set(placed)
    assert all(len(placed[g]) == len(modules) for g, modules in eager.items())  # q, k and v: three MatMuls


@pytest.mark.parametrize("group", [FLOAT, "layer.1.ffn_in"])  # weight-only in the recipe, or int8 activations
def test_static_keeps_a_float_group_fully_float(ckpt, calibration, tmp_path, group):
    artifact = openvino_quantize.export_int8_static(ckpt, tmp_path, BuildOptions(),
                                                    QuantizeRun(FIRST, calibration, (group,)))
    model = _saved(tmp_path)
    kept = _matmul(model, group)
    assert _float_weights(kept) and not _quantized_input(kept)
    other = "layer.0.ffn_in"
    assert not _float_weights(_matmul(model, other)) and _quantized_input(_matmul(model, other))
    assert not _float_weights(_matmul(model, QUANTIZED))  # the recipe's weight-only scope: int8 weights still
    assert artifact.details["float_layers"] == [group]


def test_weights_keeps_a_float_group_uncompressed(ckpt, tmp_path):
    artifact = openvino_quantize.export_int8_weights(ckpt, tmp_path, BuildOptions(), QuantizeRun(None, None, (FLOAT,)))
    model = _saved(tmp_path)
    assert _float_weights(_matmul(model, FLOAT)) and not _float_weights(_matmul(model, QUANTIZED))
    assert artifact.details["float_layers"] == [FLOAT]


def test_a_group_the_model_lacks_is_an_export_error(ckpt, tmp_path):
    with pytest.raises(ExportError, match="layer group layer.9.qkv has no MatMul in the OpenVINO model"):
        openvino_quantize.export_int8_weights(ckpt, tmp_path, BuildOptions(), QuantizeRun(None, None, ("layer.9.qkv",)))


def test_both_openvino_int8_targets_measure():
    static = TARGETS["openvino:int8-static"].scheme(BuildOptions())
    weights = TARGETS["openvino:int8-weights"].scheme(BuildOptions())
    assert static.activations == "static" and static.float_roles == ("ffn_out", "head")  # weight-only, not measured
    assert weights.activations == "none" and weights.weight_bits == 8
