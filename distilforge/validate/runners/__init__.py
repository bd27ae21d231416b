"""Runners: load an artifact, map named numpy inputs to named numpy outputs.

Every validation and benchmark goes through a runner, the eager reference included, so
all formats are measured the same way. Each format has one module here exposing
`open_runner(out_dir, artifact, threads) -> Runner`; heavy runtimes are imported inside it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from distilforge.artifacts.records import ExportedArtifact


class Runner(Protocol):
    """Runs one artifact. `run` takes and returns numpy arrays keyed by tensor name."""

    output_names: tuple[str, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def cast_inputs(artifact: ExportedArtifact, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed each input in the dtype the artifact declares (e.g. int32 token ids for TFLite)."""
    return {spec.name: np.ascontiguousarray(inputs[spec.name], dtype=spec.dtype) for spec in artifact.inputs}
