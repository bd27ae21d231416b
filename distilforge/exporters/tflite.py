"""TFLite through litert-torch (PyTorch straight to LiteRT), one fixed-shape signature per declared shape.

TFLite has no dynamic shapes for this graph (litert-torch fails on a dynamic sequence axis in
the embedding lookup), so an artifact declares its shapes and the runner pads into them. All
signatures live in one file and share their weights. Token ids are int32, as TFLite wants.
fp16 and INT8 start from this fp32 flatbuffer (quantize/tflite.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import CheckpointInfo, LoadedCheckpoint
from distilforge.errors import ExportError, UsageError, first_line
from distilforge.exporters.common import (
    example_inputs,
    file_records,
    head_module,
    input_specs,
    output_specs,
    quiet,
    shared_conversion,
)
from distilforge.options import BuildOptions
from distilforge.shapes import EXPORT_CHOICES

MODEL_FILE = "model.tflite"
DEFAULT_SEQUENCE = 128


def declared_shapes(info: CheckpointInfo, options: BuildOptions) -> list[tuple[int, ...]]:
    """The shapes to build: --tflite-shapes, or 1 x min(128, the model's maximum). Bad shapes are usage errors."""
    multiple_choice = info.head.multiple_choice
    asked = options.tflite_shapes or ((1, min(DEFAULT_SEQUENCE, info.max_length)),)
    shapes = []
    for shape in asked:
        if len(shape) == 3 and not multiple_choice:
            raise UsageError(f"--tflite-shapes {_text(shape)}: BATCHxCHOICESxSEQUENCE is for multiple-choice "
                             f"models; {info.head.architecture} takes BATCHxSEQUENCE")
        if multiple_choice and len(shape) == 2:
            shape = (shape[0], EXPORT_CHOICES, shape[1])
        if shape[-1] > info.max_length:
            raise UsageError(f"--tflite-shapes {_text(shape)}: sequence {shape[-1]} is longer than the model's "
                             f"maximum of {info.max_length} positions")
        shapes.append(shape)
    return list(dict.fromkeys(shapes))


def check_options(info: CheckpointInfo, options: BuildOptions) -> None:
    declared_shapes(info, options)


def signature_name(shape: tuple[int, ...]) -> str:
    return "serving_" + _text(shape)


def _text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class DictOutputs:
    """Builds a module returning a dict, so the TFLite signature's outputs carry the head's names.

    Defined at module level on purpose: tensor names in the file include the wrapper's module
    path, and the same path keeps the bytes the same from build to build."""

    @staticmethod
    def wrap(ckpt: LoadedCheckpoint) -> Any:
        import torch

        names = ckpt.head.output_names

        class NamedOutputs(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
                return dict(zip(names, self.inner(input_ids, attention_mask), strict=True))

        return NamedOutputs(head_module(ckpt)).eval()


def convert_fp32(ckpt: LoadedCheckpoint, shapes: list[tuple[int, ...]], target: str) -> bytes:
    """The fp32 flatbuffer with one signature per shape. fp16 and the INT8 targets start from it too:
    converted once per build."""
    return shared_conversion(ckpt, ("tflite:fp32", tuple(shapes)), lambda: _convert(ckpt, shapes, target))


def _convert(ckpt: LoadedCheckpoint, shapes: list[tuple[int, ...]], target: str) -> bytes:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")
    import litert_torch
    import torch

    module = DictOutputs.wrap(ckpt)
    converter = litert_torch.Converter()
    for shape in shapes:
        sample = {k: torch.from_numpy(v.astype("int32")) for k, v in example_inputs(ckpt, shape).items()}
        converter = converter.signature(signature_name(shape), module, sample_kwargs=sample)
    try:
        return bytes(converter.convert().model_content())
    except Exception as e:
        raise ExportError(f"{target}: litert_torch.convert failed: {type(e).__name__}: {first_line(e)}") from e


def record(ckpt: LoadedCheckpoint, folder: Path, target: str, shapes: list[tuple[int, ...]],
           details: dict[str, Any], warnings: list[str]) -> ExportedArtifact:
    from importlib.metadata import version

    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head, dtype="int32"),
        outputs=output_specs(ckpt), fixed_shapes=shapes,
        details={"converter": "litert_torch.convert", "litert_torch": version("litert-torch"),
                 "signatures": {signature_name(s): list(s) for s in shapes}, **details},
        warnings=warnings)


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    shapes = declared_shapes(ckpt.info, options)
    with quiet() as captured:
        (folder / MODEL_FILE).write_bytes(convert_fp32(ckpt, shapes, "tflite:fp32"))
    return record(ckpt, folder, "tflite:fp32", shapes, {"weights": "fp32"}, captured.warnings)
