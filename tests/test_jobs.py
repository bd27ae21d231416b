"""build --jobs: which target a worker takes next, and what sets the default. That --jobs 2 gives the bytes of
--jobs 1 is tests/test_determinism.py's; the default model's every-target test builds with jobs=2."""

from __future__ import annotations

import pytest

from distilforge.errors import UsageError
from distilforge.pipeline.jobs import JOBS_VARIABLE, _hand_out, _Worker, default_jobs, expected_seconds
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
    assert expected_seconds(TARGETS["onnx:int8-dynamic"].cost, 3) == 16.5
    assert expected_seconds(None, 3) == pytest.approx(2 * expected_seconds(None, 1))  # a target not measured yet


def test_every_target_has_a_measured_cost():
    assert all(t.cost for t in TARGETS.values())


def test_the_default_is_the_environment_variable_else_the_cores(monkeypatch):
    monkeypatch.setenv(JOBS_VARIABLE, "3")
    assert default_jobs() == 3
    monkeypatch.setenv(JOBS_VARIABLE, "two")
    with pytest.raises(UsageError, match=f"{JOBS_VARIABLE}='two': give a whole number of at least 1"):
        default_jobs()
    monkeypatch.delenv(JOBS_VARIABLE)
    assert default_jobs() >= 1
