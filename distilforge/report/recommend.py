"""Which artifact to ship: filter by validation and the user's limits, then pick the fastest (or smallest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from distilforge.errors import UsageError
from distilforge.report.data import Row


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    min_agreement: float | None = None  # fraction in [0, 1]
    max_size_mb: float | None = None


@dataclass
class Rejection:
    target: str
    reason: str


@dataclass
class Recommendation:
    target: str | None
    why: str
    rejected: list[Rejection] = field(default_factory=list)
    ranked_by: str = ""  # "latency_p50" or "bytes"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_limits(*, max_latency_ms: float | None, min_agreement: float | None, max_size_mb: float | None,
                have_bench: bool) -> Limits:
    """Check the user's limits. --min-agreement takes a fraction (0.99) or a percent (99): values above 1
    are percent, so 1 means 100 %."""
    if max_latency_ms is not None:
        if not have_bench:
            raise UsageError("--max-latency-ms needs latency figures: no bench.json in the directory; "
                             "run 'distilforge bench DIR' first")
        if max_latency_ms <= 0:
            raise UsageError(f"--max-latency-ms {max_latency_ms}: must be above 0")
    if max_size_mb is not None and max_size_mb <= 0:
        raise UsageError(f"--max-size-mb {max_size_mb}: must be above 0")
    return Limits(max_latency_ms=max_latency_ms, min_agreement=agreement_fraction(min_agreement),
                  max_size_mb=max_size_mb)


def agreement_fraction(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0 < value <= 100:
        raise UsageError(f"--min-agreement {value}: give a fraction (0.99) or a percent (99), above 0 and "
                         "at most 100")
    return value / 100 if value > 1 else value


def rejection_reasons(row: Row, limits: Limits, *, have_bench: bool) -> list[str]:
    """Why a row cannot be shipped. A row that failed validation is not also blamed for figures it lacks."""
    reasons = []
    if not row.passed:
        reasons.append(f"failed validation: {row.failures[0] if row.failures else 'no validation result'}")
    if have_bench and row.latency_p50 is None:
        if row.passed:
            reasons.append(f"latency not measured ({row.bench_error or 'no p50'})")
    elif limits.max_latency_ms is not None and row.latency_p50 > limits.max_latency_ms:
        reasons.append(f"too slow: p50 {row.latency_p50:.2f} ms > {limits.max_latency_ms:g} ms")
    if row.slower_than_fp32:
        reasons.append(f"INT8 slower than {row.slower_than_fp32} on the CPU measured")
    if limits.max_size_mb is not None and (row.mb is None or row.mb > limits.max_size_mb):
        size = "size unknown" if row.mb is None else f"{row.mb:.1f} MB"
        reasons.append(f"too big: {size} > {limits.max_size_mb:g} MB")
    if limits.min_agreement is not None:
        if row.agreement is None:
            if row.passed:
                reasons.append("agreement too low: not measured (the head has no discrete decision)")
        elif row.agreement < limits.min_agreement:
            reasons.append(f"agreement too low: {row.agreement:.1%} < {limits.min_agreement:.1%}")
    return reasons


def recommend(rows: list[Row], limits: Limits, *, have_bench: bool) -> Recommendation:
    rejected, candidates = [], []
    for row in rows:
        reasons = rejection_reasons(row, limits, have_bench=have_bench)
        if reasons:
            rejected.append(Rejection(row.target, "; ".join(reasons)))
        else:
            candidates.append(row)
    ranked_by = "latency_p50" if have_bench else "bytes"
    if not candidates:
        return Recommendation(None, f"no artifact passed validation and met the limits ({describe(limits)}); "
                                    "see 'rejected'", rejected, ranked_by)
    ranked = sorted(candidates, key=lambda r: rank_key(r, have_bench))
    return Recommendation(ranked[0].target, why(ranked, limits, have_bench), rejected, ranked_by)


def rank_key(row: Row, have_bench: bool) -> tuple:
    """Fastest p50 (ties: smaller, then better quality), or without bench smallest (ties: better quality)."""
    quality = -(row.quality if row.quality is not None else float("-inf"))
    if have_bench:
        return (row.latency_p50, row.bytes, quality, row.target)
    return (row.bytes, quality, row.target)


def why(ranked: list[Row], limits: Limits, have_bench: bool) -> str:
    best = ranked[0]
    pool = f"{len(ranked)} artifact{'s' if len(ranked) != 1 else ''} that passed validation"
    if describe(limits) != "no limits":
        pool += f" and met {describe(limits)}"
    if have_bench:
        text = f"fastest p50 latency ({best.latency_p50:.2f} ms) of the {pool}"
        if best.ratio_eager is not None:
            text += f" ({best.ratio_eager:.2f}x eager's p50)"
        text += f"; {best.mb:.1f} MB"
    else:
        text = f"smallest ({best.mb:.1f} MB) of the {pool}; latency was not measured (run 'distilforge bench DIR')"
    text += f"; {quality_text(best)}"
    if len(ranked) > 1:
        nxt = ranked[1]
        text += (f"; runner-up {nxt.target} at {nxt.latency_p50:.2f} ms" if have_bench
                 else f"; runner-up {nxt.target} at {nxt.mb:.1f} MB")
    return text


def quality_text(row: Row) -> str:
    parts = []
    if row.agreement is not None:
        parts.append(f"agreement {row.agreement:.1%}")
    if row.min_cosine is not None:
        parts.append(f"min cosine {row.min_cosine:.5f}")
    if row.task_metric is not None and row.task is not None:
        ref = f" (reference {row.task_reference:.1f})" if row.task_reference is not None else ""
        parts.append(f"{row.task_metric} {row.task:.1f}{ref}")
    return ", ".join(parts) if parts else "values-only head (no agreement)"


def describe(limits: Limits) -> str:
    parts = []
    if limits.max_latency_ms is not None:
        parts.append(f"--max-latency-ms {limits.max_latency_ms:g}")
    if limits.min_agreement is not None:
        parts.append(f"--min-agreement {limits.min_agreement:.1%}")
    if limits.max_size_mb is not None:
        parts.append(f"--max-size-mb {limits.max_size_mb:g}")
    return ", ".join(parts) if parts else "no limits"
