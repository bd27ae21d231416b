"""The INT8 ladder: a recipe that fails its rule (or passes it within the margin) makes the build try the next,
the manifest lists every rung tried with its figures, and the rule itself never changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import add_outlier_feature, make_checkpoint

from distilforge.artifacts.manifest import ArtifactEntry
from distilforge.artifacts.records import ExportedArtifact, FileRecord, OutputMetrics, TaskScore, ValidationResult
from distilforge.options import BuildOptions
from distilforge.quantize import onnx as onnx_quantize
from distilforge.quantize.ladder import Attempt, Rung, kept_attempt
from distilforge.targets import TARGETS
from distilforge.validate.tolerances import DEFAULT_TOLERANCES, MARGIN, margin_shortfalls

INT8 = DEFAULT_TOLERANCES["int8"]


def _result(cosine: float, agreement: float = 1.0, drop: float | None = None) -> ValidationResult:
    case = OutputMetrics(case="c", shape=(2, 8), output="logits", max_abs=0.1, mean_abs=0.01, cosine=cosine,
                         agreement=agreement, decisions=200, compared=10)
    passed = cosine >= INT8.min_cosine and agreement >= INT8.min_agreement and (drop or 0) <= INT8.max_task_drop
    task = None if drop is None else TaskScore(metric="accuracy", reference=90.0, artifact=90.0 - drop, examples=100)
    return ValidationResult(passed=passed, tolerance=INT8, precision_class="int8", cases=[case],
                            failures=[] if passed else ["fails"], task=task)


@pytest.mark.parametrize(("cosine", "agreement", "drop", "short"), [
    (0.9950, 1.0, 0.0, []),
    (0.9920, 1.0, None, ["min cosine"]),  # passes the rule (0.99), not the margin (0.993)
    (0.9950, 0.985, None, ["agreement"]),  # passes 98 %, not 99 %
    (0.9950, 1.0, 0.8, ["accuracy drop"]),  # within 1 point, not within 0.5
])
def test_the_margin_is_the_rule_plus_a_fixed_step(cosine, agreement, drop, short):
    shortfalls = margin_shortfalls(_result(cosine, agreement, drop))
    assert len(shortfalls) == len(short) and all(s.startswith(p) for s, p in zip(shortfalls, short, strict=True))
    assert MARGIN.cosine == 0.003 and INT8.min_cosine == 0.99  # the rule stays as DESIGN.md states it


def test_a_sentence_embeddings_pairwise_spearman_needs_the_margin_too():
    from dataclasses import replace

    record = {"texts": 129, "pairwise_spearman": 0.9915}  # passes the rule (0.99), not the margin (0.992)
    result = replace(_result(0.9950), embedding={"sentence_embedding": record})
    assert margin_shortfalls(result) == ["sentence_embedding pairwise Spearman 0.99150 < 0.992"]
    clear = {"sentence_embedding": {**record, "pairwise_spearman": 0.995}}
    assert margin_shortfalls(replace(result, embedding=clear)) == []
    assert MARGIN.pair_spearman == 0.002 and INT8.min_pair_spearman == 0.99


def _attempt(name: str, result: ValidationResult | None, error: str | None = None) -> Attempt:
    files = [] if error else [FileRecord("f", 1, "0")]
    entry = ArtifactEntry(artifact=ExportedArtifact(target="t:int8", files=files, inputs=[], outputs=[]),
                          validation=result, format="t", precision="int8", runtime="r", error=error)
    shortfalls = margin_shortfalls(result) if result and result.passed else []
    return Attempt(Rung(name, name), Path("/nonexistent"), entry, shortfalls)


def test_the_first_clear_recipe_is_kept_then_the_best_passing_then_the_last_exported():
    failing, close, clear = _attempt("a", _result(0.98)), _attempt("b", _result(0.991)), _attempt("c", _result(0.996))
    assert kept_attempt([failing, close, clear]).rung.name == "c"
    assert kept_attempt([close, _attempt("d", _result(0.992))]).rung.name == "d"  # none clear, as many shortfalls:
    # the best min cosine
    unexported = _attempt("e", None, error="export failed")
    assert kept_attempt([failing, unexported]).rung.name == "a"  # all fail: the last that has files


def test_a_user_list_of_float_nodes_is_a_ladder_of_one():
    assert onnx_quantize.dynamic_ladder(BuildOptions(onnx_int8_keep_float=("Gather",))) == (onnx_quantize.USER_RUNG,)
    assert len(onnx_quantize.dynamic_ladder(BuildOptions())) > 1


def test_every_int8_target_has_a_ladder_and_every_other_target_none():
    for target in TARGETS.values():
        assert (target.ladder is not None) == target.precision.startswith("int8"), target.name
        if target.ladder:
            names = [r.name for r in target.ladder(BuildOptions())]
            assert names and len(names) == len(set(names)), target.name


def test_the_ladder_keeps_the_layer_measured_most_costly_float(tmp_path):
    """A model whose second layer's feed-forward output Linear reads one huge feature (trained DistilBERTs have such
    outliers) and weighs in the outputs: int8 there rounds the other features away, so `all-int8` fails its rule.
    The sensitivity table finds that layer first, and the next rung, `float-top1`, keeps exactly it float, passes,
    and is kept: the rest of the model stays int8. The manifest shows the table and both rungs."""
    checkpoint = add_outlier_feature(make_checkpoint(tmp_path, "seq-single"), layers=(1,), gain=20.0)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "distilforge", "build", str(checkpoint), "--out", str(out),
                           "--targets", "torchscript:int8-dynamic,onnx:int8-dynamic"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "recipe all-int8 failed" in done.stderr and "trying float-top1" in done.stderr
    for entry in json.loads((out / "manifest.json").read_text())["artifacts"]:
        ladder = entry["ladder"]
        assert ladder["sensitivity"]["layers"][0]["layer"] == "layer.1.ffn_out", entry["target"]
        assert ladder["rungs"][:3] == ["all-int8", "float-top1", "float-top2"] and ladder["kept"] == "float-top1"
        first, second = ladder["tried"]
        assert not first["passed"] and first["failures"] and first["worst"]["min_cosine"] < INT8.min_cosine
        assert second["passed"] and second["clear_of_margin"] and second["worst"] == entry["validation"]["worst"]
        assert second["float_layers"] == ["layer.1.ffn_out"] == entry["details"]["float_layers"]
        assert entry["details"]["rung"] == "all-int8" and entry["validation"]["tolerance"]["min_cosine"] == 0.99
    assert not list(out.glob(".staging-*"))  # the failed recipe's files are gone


def test_no_clear_recipe_keeps_the_one_with_the_fewest_shortfalls():
    three = _attempt("same-width", _result(0.9920, 0.985, 0.8))  # best cosine, three shortfalls
    one = _attempt("widening", _result(0.9916, 1.0, 0.0))  # one shortfall
    assert len(three.shortfalls) == 3 and len(one.shortfalls) == 1
    assert kept_attempt([three, one]).rung.name == "widening"


def test_a_recipe_that_passes_first_is_kept_without_climbing(tmp_path):
    checkpoint = make_checkpoint(tmp_path, "seq-single")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "distilforge", "build", str(checkpoint), "--out", str(out),
                           "--targets", "torchscript:int8-dynamic"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    ladder = json.loads((out / "manifest.json").read_text())["artifacts"][0]["ladder"]
    assert ladder["kept"] == "all-int8" and len(ladder["tried"]) == 1 and ladder["tried"][0]["clear_of_margin"]


def test_measured_rungs_stop_when_one_does_no_better_than_the_recipe_before():
    """By the mean error over the cases, not the min cosine: one case's worst figure can stay put while the rest
    improve (default model, onnx:int8-static: float-top1's min cosine equalled the first recipe's, float-top8 was
    kept)."""
    from distilforge.pipeline.ladder import _next_rung

    rungs = (Rung("all-int8", ""), Rung("float-top1", "", ("layer.0.ffn_out",), "all-int8"),
             Rung("float-top2", "", ("layer.0.ffn_out", "layer.1.qkv"), "all-int8"), Rung("ffn-float", ""))
    base, better, worse = _attempt("a", _result(0.980)), _attempt("b", _result(0.985)), _attempt("c", _result(0.979))
    assert _next_rung(rungs, 0, [base]) == 1
    assert _next_rung(rungs, 1, [base, better]) == 2  # it helped: the next measured rung
    assert _next_rung(rungs, 1, [base, worse]) == 3  # it did not: straight to the role-level recipe


def test_a_measured_rung_predicted_no_better_is_skipped_with_the_ones_after_it():
    """The eager proxy's figures of the default model's executorch:int8-static (x86-avx2): float-top1 0.002834
    after the first recipe's 0.004118, then float-top2 0.002837. Exporting float-top2 (two minutes) would have
    confirmed the prediction: its artifact did worse than float-top1's."""
    from distilforge.pipeline.ladder import _past_unpromising

    rungs = (Rung("static-widening", ""), Rung("float-top1", "", ("layer.4.ffn_in",), "static-widening"),
             Rung("float-top2", "", ("layer.4.ffn_in", "layer.4.qkv"), "static-widening"),
             Rung("float-top4", "", ("layer.4.ffn_in", "layer.4.qkv", "a", "b"), "static-widening"),
             Rung("static-same-width", ""))
    proxy = {(): 0.004118, rungs[1].float_layers: 0.002834, rungs[2].float_layers: 0.002837,
             rungs[3].float_layers: 0.00229}
    skipped = []
    assert _past_unpromising(rungs, 1, rungs[0], proxy.__getitem__, skipped) == 1 and not skipped
    assert _past_unpromising(rungs, 2, rungs[1], proxy.__getitem__, skipped) == 4  # float-top4 too
    assert [(s.name, s.after) for s in skipped] == [("float-top2", "float-top1")]
    assert skipped[0].record()["predicted_error"] == 0.002837 and "predicted no better" in skipped[0].record()["why"]
    assert _past_unpromising(rungs, 4, rungs[1], proxy.__getitem__, skipped) == 4  # a role-level rung: no check
    assert _past_unpromising(rungs, 2, rungs[1], None, []) == 2  # a target without a scheme


def test_only_formats_whose_rungs_cost_more_than_a_prediction_predict_them():
    """ExecuTorch and OpenVINO rungs take a conversion of 10 s to minutes: predicted first. ONNX, TorchScript and
    TFLite ones (TFLite's share a conversion and a calibration) take 1-4 s to export and judge, less than the
    prediction: exported as they come."""
    from distilforge.options import BuildOptions
    from distilforge.pipeline.ladder import _predictor
    from distilforge.targets import TARGETS

    predicting = {t.name for t in TARGETS.values()
                  if _predictor(t, source=None, options=BuildOptions(), progress=None) is not None}
    assert predicting == {"executorch:int8-dynamic", "executorch:int8-static", "openvino:int8-weights",
                          "openvino:int8-static"}
