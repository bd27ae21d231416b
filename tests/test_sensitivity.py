"""INT8 layer sensitivity (quantize/sensitivity.py): the layer made sensitive on purpose is the one measured most
costly, under every format's scheme, and the ladder's measured rungs keep exactly it float."""

from __future__ import annotations

import pytest
from tiny import add_outlier_feature, make_checkpoint

from distilforge.checkpoint import load_checkpoint
from distilforge.options import BuildOptions
from distilforge.quantize.ladder import MEASURED_FLOAT_COUNTS, Rung, measured_rungs
from distilforge.quantize.sensitivity import Scheme, fake_quantize_activation, group_of, measure, quantizable_groups
from distilforge.targets import TARGETS
from distilforge.validate.inputs import sensitivity_cases

GAIN = 20.0  # what layer 1's feed-forward adds to the residual stream weighs in the outputs
SCHEMED = [t for t in TARGETS.values() if t.scheme is not None]
# the outlier is in an activation: the targets that quantize the feed-forward output's input
ACTIVATION_SCHEMED = [t for t in SCHEMED if t.scheme(BuildOptions()).activations != "none"
                      and "ffn_out" not in t.scheme(BuildOptions()).float_roles]


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """A tiny classifier whose second layer's feed-forward output reads one huge feature (layer.1.ffn_out)."""
    return load_checkpoint(add_outlier_feature(make_checkpoint(tmp_path_factory.mktemp("sens"), "seq-single"),
                                               layers=(1,), gain=GAIN))


def test_group_names_are_the_same_for_every_prefix():
    assert group_of("distilbert.transformer.layer.3.attention.k_lin") == "layer.3.qkv"
    assert group_of("model.transformer.layer.0.ffn.lin2") == "layer.0.ffn_out"
    assert group_of("transformer.layer.11.attention.out_lin") == "layer.11.attention_out"
    assert group_of("distilbert.transformer.layer.2.ffn.lin1") == "layer.2.ffn_in"
    assert group_of("pre_classifier") == "head.pre_classifier"


def test_every_int8_target_measures_its_layers():
    assert {t.name for t in SCHEMED} == {t.name for t in TARGETS.values() if t.precision.startswith("int8")}
    assert len(ACTIVATION_SCHEMED) >= 7


@pytest.mark.parametrize("target", [t.name for t in ACTIVATION_SCHEMED])
def test_the_layer_made_sensitive_is_measured_most_costly(sensitive, target):
    scheme = TARGETS[target].scheme(BuildOptions())
    cases = [c.inputs for c in sensitivity_cases(sensitive.info, sensitive.tokenizer, ["a small market", "the bank"])]
    table = measure(sensitive.model, sensitive.info.head.output_names, cases, scheme, calibration=cases)
    assert table.layers[0].layer == "layer.1.ffn_out", table.layers[:3]
    assert table.layers[0].cost > 10 * table.layers[1].cost  # by far, not by a rounding
    groups = quantizable_groups(sensitive.model, scheme)
    assert [c.layer for c in sorted(table.layers, key=lambda c: c.layer)] == sorted(groups)
    assert not any(g.split(".")[-1] in scheme.float_roles for g in groups)


@pytest.mark.parametrize("target", ["onnx:int8-dynamic", "tflite:int8-static"])
def test_reusing_the_unchanged_layers_outputs_gives_the_whole_passes_table(sensitive, target, monkeypatch):
    """`measure` lets the layers before a group's give their recorded clean outputs: the table must be the one
    whole passes give, to the last digit (checked on the default model too, for every scheme)."""
    from distilforge.quantize import sensitivity

    scheme = TARGETS[target].scheme(BuildOptions())
    cases = [c.inputs for c in sensitivity_cases(sensitive.info, sensitive.tokenizer, ["a small market", "the bank"])]
    assert len(sensitivity.encoder_layers(sensitive.model)) == sensitive.model.config.n_layers
    reusing = measure(sensitive.model, sensitive.info.head.output_names, cases, scheme, calibration=cases)
    monkeypatch.setattr(sensitivity, "encoder_layers", lambda model: [])
    whole = measure(sensitive.model, sensitive.info.head.output_names, cases, scheme, calibration=cases)
    assert reusing == whole
    assert all("forward" not in vars(m) for m in sensitive.model.modules())  # nothing left patched


@pytest.mark.parametrize("target", ["onnx:int8-dynamic", "executorch:int8-static"])
def test_the_whole_recipe_predicted_in_eager_loses_less_with_the_costly_layer_float(sensitive, target):
    """The ladder's pre-check (Source.predicted_error): every group fake-quantized at once, on the validation
    grid. Keeping the outlier layer float must predict far less error; keeping every group float, none."""
    from distilforge.pipeline.source import Source

    source = Source(sensitive, ["a small market", "the bank raised its rates", "the striker scored"], None, False)
    scheme = TARGETS[target].scheme(BuildOptions())
    every = tuple(quantizable_groups(sensitive.model, scheme))
    base, outlier_float = source.predicted_error(scheme, ()), source.predicted_error(scheme, ("layer.1.ffn_out",))
    assert outlier_float < 0.2 * base and base > 1e-3, (base, outlier_float)
    assert source.predicted_error(scheme, every) == 0.0
    assert source.predicted_error(scheme, ("layer.1.ffn_out",)) == outlier_float  # computed once, then remembered
    assert len(source.predictions) == 3


def test_activation_fake_quantization_keeps_zero_and_the_range():
    import torch

    x = torch.tensor([[-1.0, 0.0, 0.5, 3.0], [0.1, 0.2, 0.3, 0.4]])
    for mode in ("tensor", "token"):
        y = fake_quantize_activation(x, mode)
        assert torch.all(y[x == 0] == 0) and torch.allclose(y, x, atol=(3.0 + 1.0) / 255)
    clipped = fake_quantize_activation(x, "static", (-0.5, 1.0))
    assert float(clipped.max()) == pytest.approx(1.0, abs=1.5 / 255) and float(clipped.min()) >= -0.5 - 1e-6


def test_measured_rungs_sit_between_the_first_recipe_and_the_fallbacks(sensitive):
    scheme = Scheme(activations="token")
    cases = [c.inputs for c in sensitivity_cases(sensitive.info, sensitive.tokenizer, ["a small market"])]
    table = measure(sensitive.model, sensitive.info.head.output_names, cases, scheme)
    base = (Rung("all-int8", "a"), Rung("ffn-out-float", "b"))
    rungs = measured_rungs(base, table)
    names = [r.name for r in rungs]
    counts = [k for k in MEASURED_FLOAT_COUNTS if k < len(table.layers)]
    assert names == ["all-int8", *[f"float-top{k}" for k in counts], "ffn-out-float"]
    assert rungs[1].float_layers == ("layer.1.ffn_out",) and rungs[1].recipe == "all-int8"
    assert all(len(r.float_layers) == k for r, k in zip(rungs[1:-1], counts, strict=True))
