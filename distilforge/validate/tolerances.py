"""Default pass rules per precision class (DESIGN.md), and user overrides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace

from distilforge.artifacts.records import Tolerance
from distilforge.errors import UsageError

DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_agreement=1.0),
    "fp16": Tolerance(max_abs=1e-2, min_agreement=0.995),
    "int8": Tolerance(min_agreement=0.98, min_cosine=0.99, max_task_drop=1.0),
}


def precision_class(precision: str) -> str:
    """'int8-static' -> 'int8', 'bf16' -> 'fp16' (half precision shares one rule)."""
    if precision.startswith("int8"):
        return "int8"
    if precision in ("fp16", "bf16"):
        return "fp16"
    return "fp32"


def parse_overrides(specs: Iterable[str], base: dict[str, Tolerance] | None = None) -> dict[str, Tolerance]:
    """Apply 'CLASS.FIELD=VALUE' overrides, e.g. 'fp32.max_abs=2e-4' or 'int8.min_cosine=none'."""
    result = dict(base or DEFAULT_TOLERANCES)
    names = {f.name for f in fields(Tolerance)}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        klass, dot, name = key.strip().partition(".")
        if not sep or not dot or klass not in result or name not in names:
            raise UsageError(f"--tolerance {spec!r}: expected CLASS.FIELD=VALUE with CLASS in "
                             f"{', '.join(result)} and FIELD in {', '.join(sorted(names))}")
        result[klass] = replace(result[klass], **{name: _parse_value(spec, raw)})
    return result


def _parse_value(spec: str, raw: str) -> float | None:
    raw = raw.strip()
    if raw.lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--tolerance {spec!r}: {raw!r} is not a number (or 'none')") from None
    if value < 0 or value != value:
        raise UsageError(f"--tolerance {spec!r}: {raw!r} must be a non-negative number")
    return value
