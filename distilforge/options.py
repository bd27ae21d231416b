"""Options that cross stage borders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distilforge.artifacts.records import DEFAULT_TOLERANCES, Tolerance
from distilforge.errors import UsageError


@dataclass(frozen=True)
class BuildOptions:
    threads: int = 2
    seed: int = 0
    onnx_opset: int = 18
    # Shapes for fixed-shape formats (TFLite), as given: (batch, sequence) or (batch, choices, sequence).
    # Empty means each format's default (TFLite: 1 x min(128, the model's maximum)).
    tflite_shapes: tuple[tuple[int, ...], ...] = ()
    # ExecuTorch's upper bounds, (batch, sequence) or (batch, choices, sequence); empty: 4 x the model's maximum
    # (multiple choice 4 x 4 x it). See exporters/executorch.py.
    executorch_max_shape: tuple[int, ...] = ()
    calibration_file: Path | None = None  # None: the shipped text
    calibration_samples: int = 128
    # ONNX INT8: op types, MatMul roles or node names kept in float; None: each target's default
    # (distilforge/quantize/onnx.py: DYNAMIC_KEEP_FLOAT, STATIC_KEEP_FLOAT)
    onnx_int8_keep_float: tuple[str, ...] | None = None
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    # INT8 recipes right on every CPU class ("portable") or on the build machine's only ("native");
    # see quantize/ladder.py
    int8_cpu: str = "portable"
    # emulated CPUs every artifact is also judged on, e.g. ("arm64:cortex-a76",) (validate/arm64/)
    validate_on: tuple[str, ...] = ()


def parse_shapes(text: str, flag: str = "--tflite-shapes") -> tuple[tuple[int, ...], ...]:
    """'1x128,1x384' -> ((1, 128), (1, 384)); 'BxCxS' for multiple choice."""
    shapes = []
    for part in (p.strip() for p in text.split(",")):
        dims = part.lower().split("x")
        if not part or len(dims) not in (2, 3) or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise UsageError(f"{flag} {text!r}: {part!r} is not BATCHxSEQUENCE (or BATCHxCHOICESxSEQUENCE), "
                             "e.g. 1x128,1x384")
        shapes.append(tuple(int(d) for d in dims))
    return tuple(dict.fromkeys(shapes))
