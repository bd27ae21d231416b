"""OpenVINO IR (and ONNX files) under OpenVINO's CPU plugin.

The inference precision hint is always explicit: on a CPU with AVX-512 BF16 or AMX, OpenVINO
would otherwise run an "fp32" model in bf16. The artifact's `details.inference_precision_hint`
says which precision it is judged in (f32 unless the target is bf16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.validate.runners import cast_inputs


class OpenVinoRunner:
    def __init__(self, model_path: Path, artifact: ExportedArtifact, threads: int, *, precision_hint: str = "f32"):
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision_hint, "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = ov.Core().compile_model(str(model_path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.artifact = artifact
        self.output_names = tuple(o.name for o in artifact.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.request.infer(cast_inputs(self.artifact, inputs))
        return {name: np.array(self.request.get_tensor(name).data, dtype=np.float32) for name in self.output_names}


def open_runner(out_dir: Path, artifact: ExportedArtifact, threads: int) -> OpenVinoRunner:
    model_file = next(f for f in artifact.files if f.path.endswith((".xml", ".onnx")))
    hint = artifact.details.get("inference_precision_hint", "f32")
    return OpenVinoRunner(out_dir / model_file.path, artifact, threads, precision_hint=hint)
