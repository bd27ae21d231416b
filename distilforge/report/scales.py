"""The numbers behind a chart's axes: a Scale (the data range, linear or log, its ticks) and how one is chosen.

No SVG here: svg.py's Frame maps a Scale to pixels and draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOG_SPREAD = 4  # an axis whose (positive) values span more than this factor is drawn on a log scale


@dataclass
class Scale:
    """One axis: the data range it spans, linear or log, and its tick values."""

    lo: float
    hi: float
    log: bool
    ticks: list[float]

    def fraction(self, v: float) -> float:
        """Where v falls between lo (0) and hi (1)."""
        if self.log:
            return (math.log10(v) - math.log10(self.lo)) / ((math.log10(self.hi) - math.log10(self.lo)) or 1)
        return (v - self.lo) / ((self.hi - self.lo) or 1)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k ticks from the last one at or below lo to the first one at or above hi (lo > 0)."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    every = [float(f"{m}e{k}") for k in range(k0, k1 + 1) for m in (1, 2, 5)]
    start = max(t for t in every if t <= lo)
    end = min(t for t in every if t >= hi)
    return [t for t in every if start <= t <= end]


def padded_range(values: list[float], *, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo = min(lo, 0.0)
    span = hi - lo or (abs(hi) * 0.02 or 1.0)
    return (lo if zero else lo - span * 0.08), hi + span * 0.08


def wide(values: list[float]) -> bool:
    """Positive values spanning more than LOG_SPREAD: a linear axis would squash the small ones."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPREAD


def linear_scale(lo: float, hi: float, *, count: int = 5) -> Scale:
    ticks = nice_ticks(lo, hi, count)
    return Scale(ticks[0], ticks[-1], False, ticks)


def log_scale(lo: float, hi: float) -> Scale:
    """A log axis a little wider than [lo, hi] (lo > 0): 1-2-5 ticks inside it, only decades past 3 decades."""
    if hi <= lo:
        hi = lo * 10
    pad = 10 ** (0.06 * max(math.log10(hi / lo), 1.0))
    lo, hi = lo / pad, hi * pad
    ticks = [t for t in log_ticks(lo, hi) if lo <= t <= hi]
    if math.log10(hi / lo) > 3:
        ticks = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
    if len(ticks) < 2:  # a narrow range: evenly spaced round values read better than one lone tick
        ticks = [t for t in nice_ticks(lo, hi) if lo <= t <= hi]
    return Scale(lo, hi, True, ticks)


def axis_scale(values: list[float], *, zero: bool = False, log: bool | None = None, count: int = 5) -> Scale:
    """Log when asked, or (log=None) when the values are wide; else linear, from 0 if `zero`, about `count` ticks."""
    if log or (log is None and wide(values)):
        return log_scale(min(values), max(values))
    return linear_scale(*padded_range(values, zero=zero), count=count)
