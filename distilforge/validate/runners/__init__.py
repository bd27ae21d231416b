"""Runners: load an artifact, map named numpy inputs to named numpy outputs.

Every validation and benchmark goes through a runner, the eager reference included, so
all formats are measured the same way. Each format has one module here exposing
`open_runner(out_dir, artifact, threads) -> Runner`; heavy runtimes are imported inside it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distilforge.artifacts.records import ExportedArtifact


class Runner(Protocol):
    """Runs one artifact. `run` takes and returns numpy arrays keyed by tensor name."""

    output_names: tuple[str, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def cast_inputs(artifact: ExportedArtifact, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed each input in the dtype the artifact declares (e.g. int32 token ids for TFLite)."""
    return {spec.name: np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype) for spec in artifact.inputs}


def runner_ref(open_runner: Callable[..., Any]) -> str:
    """'module:function' naming a target's `open_runner`, for a child process (validation, bench) to import."""
    return f"{open_runner.__module__}:{open_runner.__qualname__}"


def open_by_ref(ref: str, out_dir: str | Path, record: dict[str, Any], threads: int) -> Runner:
    """Open the artifact `record` (a manifest entry) with the `open_runner` that `ref` names."""
    module, _, name = ref.partition(":")
    open_runner = getattr(importlib.import_module(module), name)
    return open_runner(Path(out_dir), ExportedArtifact.from_dict(record), threads)
