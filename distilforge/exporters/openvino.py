"""OpenVINO IR converted straight from the PyTorch model (ov.convert_model).

`ov.save_model` compresses weights to fp16 unless told not to: the fp32 IR turns that off.
Input and output names are set explicitly (convert_model may name the
mask input after a graph node), so runners bind by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import example_inputs, file_records, head_module, input_specs, output_specs, quiet
from distilforge.options import BuildOptions

MODEL_FILE = "model.xml"  # + model.bin


def convert(ckpt: LoadedCheckpoint, target: str) -> Any:
    """The head as an in-memory ov.Model with dynamic shapes and our tensor names."""
    os.environ.setdefault("OPENVINO_TELEMETRY_DISABLE", "1")
    import openvino as ov
    import torch

    example = tuple(torch.from_numpy(v) for v in example_inputs(ckpt).values())
    try:
        model = ov.convert_model(head_module(ckpt), example_input=example)
    except Exception as e:
        raise ExportError(f"{target}: ov.convert_model failed: {type(e).__name__}: {first_line(e)}") from e
    for port, name in zip(model.inputs, ckpt.head.input_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, ckpt.head.output_names, strict=True):
        port.get_tensor().set_names({name})
    return model


def save(model: Any, folder: Path, *, compress_to_fp16: bool) -> None:
    import openvino as ov

    ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=compress_to_fp16)


def record(ckpt: LoadedCheckpoint, folder: Path, target: str, details: dict[str, Any],
           warnings: list[str]) -> ExportedArtifact:
    import openvino as ov

    return ExportedArtifact(target=target, files=file_records(folder), inputs=input_specs(ckpt.head),
                            outputs=output_specs(ckpt),
                            details={"converter": "openvino.convert_model", "openvino": ov.__version__, **details},
                            warnings=warnings)


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    with quiet() as captured:
        save(convert(ckpt, "openvino:fp32"), folder, compress_to_fp16=False)
    return record(ckpt, folder, "openvino:fp32", {"weights": "fp32", "inference_precision_hint": "f32"},
                  captured.warnings)
