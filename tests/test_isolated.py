"""The validation child started ahead (runners/isolated.py `prestart`): the runner that opens next takes it, it
imported before it was asked, and a spare that died or was never used does no harm."""

import os
from pathlib import Path

import numpy as np
import pytest

from distilforge.artifacts.records import ExportedArtifact
from distilforge.validate.runners import isolated
from distilforge.validate.runners.isolated import IsolatedRunner, prestart

TESTS = Path(__file__).parent
ARTIFACT = ExportedArtifact(target="test:fp32", files=[], inputs=[], outputs=[])


@pytest.fixture
def runtime(monkeypatch, tmp_path):
    import preloading_runtime

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PRELOAD_MARKS", str(tmp_path))
    yield preloading_runtime
    isolated._end_spares()


def marks(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def doubled(runner: IsolatedRunner) -> np.ndarray:
    return runner.run({"x": np.arange(3, dtype=np.float32)})["doubled"]


def test_the_next_runner_takes_the_child_started_ahead(runtime, tmp_path):
    prestart(runtime.open_runner)
    prestart(runtime.open_runner)  # at most one waits per runner
    assert len(isolated._spares) == 1
    with IsolatedRunner(runtime.open_runner, tmp_path, ARTIFACT, 1) as runner:
        pid = runner._process.pid
        assert doubled(runner).tolist() == [0.0, 2.0, 4.0]
    assert marks(tmp_path) == {f"{pid}.preloaded", f"{pid}.opened"}
    assert not isolated._spares


def test_a_spare_that_died_is_replaced_by_a_fresh_child(runtime, tmp_path):
    prestart(runtime.open_runner)
    dead = next(iter(isolated._spares.values()))[0]
    dead.kill()
    dead.wait()
    with IsolatedRunner(runtime.open_runner, tmp_path, ARTIFACT, 1) as runner:
        assert runner._process.pid != dead.pid
        assert doubled(runner).tolist() == [0.0, 2.0, 4.0]
    assert marks(tmp_path) == {f"{runner._process.pid}.opened"}


def test_a_runner_without_preload_starts_no_spare_and_an_unused_one_ends(runtime, tmp_path):
    from distilforge.validate.runners.onnx import open_runner as open_onnx

    prestart(open_onnx)
    assert not isolated._spares
    prestart(runtime.open_runner)
    spare = next(iter(isolated._spares.values()))[0]
    isolated._end_spares()
    assert spare.poll() == 0 and not isolated._spares
