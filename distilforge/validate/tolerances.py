"""Default pass rules per precision class (DESIGN.md), and user overrides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace

from distilforge.artifacts.records import DEFAULT_TOLERANCES, Tolerance, ValidationResult
from distilforge.errors import UsageError


def precision_class(precision: str) -> str:
    """'int8-static' -> 'int8', 'bf16' -> 'fp16' (half precision shares one rule)."""
    if precision.startswith("int8"):
        return "int8"
    if precision in ("fp16", "bf16"):
        return "fp16"
    return "fp32"


def parse_overrides(specs: Iterable[str], base: dict[str, Tolerance] | None = None,
                    name: str = "--tolerance") -> dict[str, Tolerance]:
    """Apply 'CLASS.FIELD=VALUE' overrides, e.g. 'fp32.max_abs=2e-4' or 'int8.min_cosine=none'; `name` is the
    option as the user wrote it (the flag, or a plan's key), for the error."""
    result = dict(base or DEFAULT_TOLERANCES)
    names = {f.name for f in fields(Tolerance)}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        klass, dot, field = key.strip().partition(".")
        if not sep or not dot or klass not in result or field not in names:
            raise UsageError(f"{name} {spec!r}: expected CLASS.FIELD=VALUE with CLASS in "
                             f"{', '.join(result)} and FIELD in {', '.join(sorted(names))}")
        result[klass] = replace(result[klass], **{field: _parse_value(spec, raw, name)})
    return result


def _parse_value(spec: str, raw: str, name: str) -> float | None:
    raw = raw.strip()
    if raw.lower() == "none":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name} {spec!r}: {raw!r} is not a number (or 'none')") from None
    if value < 0 or value != value:
        raise UsageError(f"{name} {spec!r}: {raw!r} must be a non-negative number")
    return value


@dataclass(frozen=True)
class Margin:
    """How far inside its pass rule a laddered INT8 recipe must land to be kept without climbing further
    (quantize/ladder.py). Float noise on another CPU moves a figure by a few 1e-4 to 1e-3 of cosine: a recipe
    that scrapes past the rule here is the one that fails there. The rule itself never changes."""

    cosine: float = 0.003  # min cosine >= rule + this (the default rule: 0.993)
    agreement: float = 0.01  # agreement >= rule + this, at most 100 %
    task_drop: float = 0.5  # task drop <= allowed drop - this, at least 0
    pair_spearman: float = 0.002  # sentence embeddings' pairwise Spearman >= rule + this, at most 1

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


MARGIN = Margin()


def margin_shortfalls(result: ValidationResult, margin: Margin = MARGIN) -> list[str]:
    """Each figure of a validation result that passes its rule by less than `margin` (empty: clear of it)."""
    rule, worst, shortfalls = result.tolerance, result.worst(), []
    if rule.min_cosine is not None and worst["min_cosine"] is not None:
        want = rule.min_cosine + margin.cosine
        if worst["min_cosine"] < want:
            shortfalls.append(f"min cosine {worst['min_cosine']:.5f} < {want:.5g}")
    if rule.min_agreement is not None and worst["agreement"] is not None:
        want = min(1.0, rule.min_agreement + margin.agreement)
        if worst["agreement"] < want:
            shortfalls.append(f"agreement {worst['agreement']:.2%} < {want:.2%}")
    for name, record in (result.embedding or {}).items() if rule.min_pair_spearman is not None else ():
        want = min(1.0, rule.min_pair_spearman + margin.pair_spearman)
        if record["pairwise_spearman"] < want:
            shortfalls.append(f"{name} pairwise Spearman {record['pairwise_spearman']:.5f} < {want:.5g}")
    if rule.max_task_drop is not None and result.task is not None:
        allowed = max(0.0, rule.max_task_drop - margin.task_drop)
        if result.task.drop > allowed:
            shortfalls.append(f"{result.task.metric} drop {result.task.drop:.2f} > {allowed:g} points")
    return shortfalls
