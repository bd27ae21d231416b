"""ONNX artifacts under ONNX Runtime's CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.validate.runners import cast_inputs


class OnnxRunner:
    def __init__(self, model_path: Path, artifact: ExportedArtifact, threads: int, *,
                 spinning: bool | None = None) -> None:
        import onnxruntime as ort

        from distilforge.cpu import cores_are_shared

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if spinning is False or (spinning is None and cores_are_shared()):
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Recorded by the exporter (e.g. to keep ORT from re-fusing a slow kernel at load) and applied here,
        # so validation and benchmarks run the artifact exactly as it is meant to be run.
        disabled = list(artifact.details.get("session_disabled_optimizers") or [])
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=disabled)
        self.artifact = artifact
        self.output_names = tuple(o.name for o in artifact.outputs)
        # a graph we did not write (the peer's) may name an output otherwise: graph name -> the head's name
        self.renamed = dict(artifact.details.get("output_names_as") or {})

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(list(self.output_names), cast_inputs(self.artifact, inputs))
        return {self.renamed.get(name, name): np.asarray(v, dtype=np.float32)
                for name, v in zip(self.output_names, values, strict=False)}


def open_runner(out_dir: Path, artifact: ExportedArtifact, threads: int) -> OnnxRunner:
    model_file = next(f for f in artifact.files if f.path.endswith(".onnx"))
    return OnnxRunner(out_dir / model_file.path, artifact, threads)
