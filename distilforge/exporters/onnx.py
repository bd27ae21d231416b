"""ONNX export through torch.onnx (the dynamo exporter in torch 2.13), dynamic batch and sequence axes."""

from __future__ import annotations

from pathlib import Path

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError
from distilforge.exporters.common import example_inputs, file_records, head_module, input_specs, output_specs, quiet
from distilforge.options import BuildOptions

MODEL_FILE = "model.onnx"


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    """Write `model.onnx` (+ `model.onnx.data`, its external weights) into `folder`."""
    import torch

    head = ckpt.head
    inputs = {k: torch.from_numpy(v) for k, v in example_inputs(ckpt).items()}
    axes = _dynamic_shapes(head.input_axes, ckpt.info.max_length)
    with quiet() as captured:
        try:
            torch.onnx.export(head_module(ckpt), (inputs["input_ids"], inputs["attention_mask"]),
                              str(folder / MODEL_FILE), input_names=list(head.input_names),
                              output_names=list(head.output_names), opset_version=options.onnx_opset,
                              dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                              external_data=True, verbose=False)
        except Exception as e:
            raise ExportError(f"onnx:fp32: torch.onnx.export failed: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    return ExportedArtifact(
        target="onnx:fp32", files=file_records(folder), inputs=input_specs(head), outputs=output_specs(ckpt),
        details={"exporter": "torch.onnx.export (dynamo)", "opset": options.onnx_opset,
                 "external_data": (folder / (MODEL_FILE + ".data")).exists()},
        warnings=captured.warnings,
    )


def _dynamic_shapes(axes: tuple[str, ...], max_length: int) -> dict[int, object]:
    import torch

    limits = {"batch": 4096, "choices": 64, "sequence": max_length}
    return {i: torch.export.Dim(name, min=1, max=limits[name]) for i, name in enumerate(axes)}
