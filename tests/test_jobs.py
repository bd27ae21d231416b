"""build --jobs: which target a worker takes next, and what sets the default. That --jobs 2 gives the bytes of
--jobs 1 is tests/test_determinism.py's; the default model's every-target test builds with jobs=2."""

from __future__ import annotations

import pytest

from distilforge.errors import UsageError
from distilforge.pipeline.jobs import (
    JOBS_VARIABLE,
    Learned,
    _hand_out,
    _Worker,
    default_jobs,
    expected_seconds,
    learned_by,
    measured_costs,
    take_learned,
)
from distilforge.targets import TARGETS


class Pipe:
    def __init__(self) -> None:
        self.sent = []

    def send(self, message) -> None:
        self.sent.append(message)


def test_a_worker_takes_a_format_it_has_converted_else_the_costliest_left():
    pending = ["executorch:int8-static", "tflite:int8-static", "onnx:fp32", "tflite:fp32"]  # costliest first
    worker = _Worker(process=None, conn=Pipe(), formats={"tflite"})
    _hand_out(worker, pending, shared=("opts", "calibration"))
    assert worker.target == "tflite:int8-static" and worker.conn.sent == [("tflite:int8-static", "opts", "calibration")]
    _hand_out(worker, pending, shared=("opts", "calibration"))
    assert worker.target == "tflite:fp32"  # its conversion is in this worker already
    fresh = _Worker(process=None, conn=Pipe())
    _hand_out(fresh, pending, shared=("opts", "calibration"))
    assert fresh.target == "executorch:int8-static" and fresh.formats == {"executorch"}
    assert pending == ["onnx:fp32"]


def test_a_measured_target_costs_what_was_measured_and_another_by_its_recipes():
    assert expected_seconds(measured_costs("x86-avx2")["onnx:int8-dynamic"], 3) == 16.5
    assert expected_seconds(None, 3) == pytest.approx(2 * expected_seconds(None, 1))  # a target not measured yet


def test_every_target_has_a_measured_cost_on_each_measured_class_and_other_classes_take_avx2s():
    for cpu in ("x86-avx2", "x86-vnni"):
        costs = measured_costs(cpu)
        assert set(costs) == set(TARGETS) and all(c > 0 for c in costs.values())
    assert measured_costs("arm64") == measured_costs("x86-avx512") == measured_costs("x86-avx2")
    assert measured_costs("x86-vnni") != measured_costs("x86-avx2")


def test_the_default_is_the_environment_variable_else_the_cores(monkeypatch):
    monkeypatch.setenv(JOBS_VARIABLE, "3")
    assert default_jobs() == 3
    monkeypatch.setenv(JOBS_VARIABLE, "two")
    with pytest.raises(UsageError, match=f"{JOBS_VARIABLE}='two': give a whole number of at least 1"):
        default_jobs()
    monkeypatch.delenv(JOBS_VARIABLE)
    assert default_jobs() >= 1


def test_a_scheme_measured_on_one_worker_is_not_measured_again_on_another(monkeypatch):
    """What one worker's proxy measured travels (pickled, as between processes) to another, whose Source then
    answers from it: a scheme equal to the one measured finds its table, a recipe its prediction."""
    import pickle

    from distilforge.pipeline import source as source_module
    from distilforge.pipeline.source import Source
    from distilforge.quantize.sensitivity import LayerCost, Scheme, Sensitivity

    measured = Source(ckpt=None, texts=[], eval_set=None, default=False)
    scheme = Scheme(activations="static", dynamic_roles=("ffn_out", "head"))
    table = Sensitivity("eager", "grid", (LayerCost("layer.0.ffn_in", 0.01, 0.02),))
    measured.sensitivities[scheme] = table
    measured.predictions[(scheme, ("layer.0.ffn_in",))] = 0.004
    parent = Learned()
    parent.merge(pickle.loads(pickle.dumps(learned_by(measured))))

    def measure_again(*_args):
        raise AssertionError("measured again")

    monkeypatch.setattr(source_module, "measure_sensitivity", measure_again)
    monkeypatch.setattr(source_module, "predict_error", measure_again)
    other = Source(ckpt=None, texts=[], eval_set=None, default=False)
    take_learned(other, pickle.loads(pickle.dumps(parent)))
    same_scheme = Scheme(weight_bits=8, per_channel=True, activations="static", dynamic_roles=("ffn_out", "head"))
    assert other.sensitivity(same_scheme) == table
    assert other.predicted_error(same_scheme, ("layer.0.ffn_in",)) == 0.004
    with pytest.raises(AssertionError, match="measured again"):
        other.sensitivity(Scheme(activations="token"))
