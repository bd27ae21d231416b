"""TorchScript artifacts, loaded with torch.jit.load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.validate.runners import cast_inputs


def preload() -> None:
    """What opening an artifact imports (validation starts this ahead: runners/isolated.py `prestart`)."""
    import torch  # noqa: F401


class TorchScriptRunner:
    def __init__(self, model_path: Path, artifact: ExportedArtifact, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._torch = torch
        self.module = torch.jit.load(str(model_path), map_location="cpu").eval()
        self.artifact = artifact
        self.output_names = tuple(o.name for o in artifact.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        fed = cast_inputs(self.artifact, inputs)
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(fed[s.name]) for s in self.artifact.inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {name: t.float().numpy() for name, t in zip(self.output_names, out, strict=True)}


def open_runner(out_dir: Path, artifact: ExportedArtifact, threads: int) -> TorchScriptRunner:
    model_file = next(f for f in artifact.files if f.path.endswith(".pt"))
    return TorchScriptRunner(out_dir / model_file.path, artifact, threads)
