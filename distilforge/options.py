"""Options that cross stage borders."""

from __future__ import annotations

from dataclasses import dataclass, field

from distilforge.artifacts.records import Tolerance
from distilforge.validate.tolerances import DEFAULT_TOLERANCES


@dataclass(frozen=True)
class BuildOptions:
    threads: int = 2
    seed: int = 0
    onnx_opset: int = 18
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
