"""What every INT8 recipe is chosen from: the CPUs it must be right on, and a short ladder of recipes.

CPUs (`Int8Cpu`): integer kernels differ by instruction set (distilforge/cpu.py). A *portable* recipe keeps
every product in range on every class a deployer may run it on (x86 with and without VNNI, ARM), so the figures
measured on the build machine hold on the others; a *native* recipe may use what only the build machine's class
gets right (full 8-bit weights on a VNNI CPU, `torch._int_mm`), and the manifest says it is meant for that class.

Ladder (`Rung`): each INT8 target lists a few recipes from fastest to safest. The build tries them in order
and keeps the first whose figures pass the unchanged pass rule with a margin (validate/tolerances.py:
`MARGIN`); a recipe that scrapes past the rule on the build CPU is the one that fails on the next CPU. The
pipeline exports and validates each rung (an `Attempt`); `kept_attempt` says which one ships, `ladder_record`
what the manifest says of them all.

Measured rungs (`measured_rungs`): between a target's first recipe and its role-level fallbacks, the first
recipe again with the 1, 2, 4 and 8 layer groups that its sensitivity table (quantize/sensitivity.py) measured
most costly kept float. The format's exporter gets the base recipe's name and the float groups
(`QuantizeRun.float_layers`) and keeps those groups float in its own way. Before a measured rung is exported,
the eager proxy predicts the whole recipe's error with its groups float (`Source.predicted_error`); one predicted
to lose as much as the recipe tried before it is `Skipped`, with the measured rungs after it.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.manifest import ArtifactEntry
from distilforge.cpu import PORTABLE, SATURATING, cpu_class, cpu_flags
from distilforge.errors import UsageError
from distilforge.quantize.calibration import CalibrationSet
from distilforge.quantize.sensitivity import Sensitivity
from distilforge.validate.tolerances import MARGIN

INT8_CPU_MODES = ("portable", "native")
MEASURED_FLOAT_COUNTS = (1, 2, 4, 8)  # the measured rungs: this many of the most costly layer groups kept float
# A measured rung is exported only when the eager proxy predicts it loses less than this fraction of what the recipe
# tried before it lost (default model, executorch:int8-static: float-top2 predicted 0.002837 against float-top1's
# 0.002834, and its artifact did worse; every rung predicted >= 7 % better did better)
PREDICTED_GAIN = 0.95


@dataclass(frozen=True)
class Rung:
    """One recipe of a target's ladder: `name` is what a person and the manifest call it, `summary` what it does.
    A measured rung is its `base` recipe (the name the quantizer reads) with `float_layers` kept float."""

    name: str
    summary: str
    float_layers: tuple[str, ...] = ()
    base: str | None = None

    @property
    def recipe(self) -> str:
        return self.base or self.name


def measured_rungs(rungs: tuple[Rung, ...], sensitivity: Sensitivity) -> tuple[Rung, ...]:
    """The first recipe, then it again with the k most costly groups float for each k of MEASURED_FLOAT_COUNTS
    (fewer than every group), then the other recipes: the role-level fallbacks."""
    first = rungs[0]
    measured = []
    for k in MEASURED_FLOAT_COUNTS:
        if k >= len(sensitivity.layers):
            break
        top = sensitivity.top(k)
        measured.append(Rung(f"float-top{k}", f"{first.name} with the {_groups(k)} measured most costly kept float: "
                             f"{', '.join(top)}", float_layers=top, base=first.name))
    return (first, *measured, *rungs[1:])


def _groups(k: int) -> str:
    return "layer group" if k == 1 else f"{k} layer groups"


@dataclass(frozen=True)
class Int8Cpu:
    """Which CPU classes an INT8 recipe must be right on: every class (portable) or the build machine's."""

    mode: str  # "portable" or "native"
    build_class: str

    @property
    def classes(self) -> tuple[str, ...]:
        return PORTABLE if self.mode == "portable" else (self.build_class,)

    @property
    def saturating(self) -> bool:
        """Some class it must run on adds u8 x s8 products in int16 (VPMADDUBSW), which can saturate."""
        return any(c in SATURATING for c in self.classes)

    def record(self, why: str) -> dict[str, object]:
        return {"mode": self.mode, "build_cpu_class": self.build_class, "safe_on": list(self.classes), "why": why}


def int8_cpu(mode: str, *, arch: str | None = None, flags: dict[str, bool] | None = None) -> Int8Cpu:
    """The mode with this machine's class (or the given arch and flags: tests inject other CPUs)."""
    if mode not in INT8_CPU_MODES:
        raise UsageError(f"--int8-cpu {mode!r}: expected one of {', '.join(INT8_CPU_MODES)}")
    return Int8Cpu(mode, cpu_class(arch or platform.machine(), cpu_flags() if flags is None else flags))


def pick(rungs: tuple[Rung, ...], name: str | None) -> Rung:
    """The recipe called `name` (None: the first). The pipeline only asks for recipes of the target's own ladder."""
    if name is None:
        return rungs[0]
    return next(r for r in rungs if r.name == name)


@dataclass(frozen=True)
class QuantizeRun:
    """What the pipeline hands an INT8 exporter for one attempt, beside the user's options: the rung of the
    target's ladder to export (None: its first) and the calibration set the build loaded (calibrated targets)."""

    rung: str | None = None
    calibration: CalibrationSet | None = None
    float_layers: tuple[str, ...] = ()  # layer groups (quantize/sensitivity.py) the recipe keeps float besides its own


@dataclass
class Attempt:
    """One recipe of a target (a rung of its ladder, or its only recipe): its staging folder and its result."""

    rung: Rung | None
    root: Path  # staging root: the artifact's files are in root/<target folder>
    entry: ArtifactEntry
    shortfalls: list[str] = field(default_factory=list)  # where a passing result is within the margin of its rule

    @property
    def clear(self) -> bool:
        return self.entry.passed and not self.shortfalls


def verdict(attempt: Attempt) -> str:
    """Why the build climbs past a recipe, for its progress line."""
    if attempt.entry.error:
        return f"failed ({attempt.entry.error.removeprefix(attempt.entry.artifact.target + ': ')})"
    if not attempt.entry.passed:
        return f"failed ({attempt.entry.validation.failures[0].split(': ', 1)[-1]})"
    return f"passed, but within the margin ({'; '.join(attempt.shortfalls)})"


def kept_attempt(attempts: list[Attempt]) -> Attempt:
    """The first recipe clear of the margin; else the passing one with the fewest shortfalls against the margin
    (cosine, agreement and task drop, on every CPU judged), the best min cosine among those; else (all failed) the
    last one that produced files, so the failure can be inspected."""
    for attempt in attempts:
        if attempt.clear:
            return attempt
    passing = [a for a in attempts if a.entry.passed]
    if passing:
        return min(passing, key=lambda a: (len(a.shortfalls), -min_cosine(a)))
    exported = [a for a in attempts if a.entry.artifact.files]
    return exported[-1] if exported else attempts[-1]


def mean_error(attempt: Attempt) -> float:
    """1 - cosine averaged over the attempt's validation cases and outputs: how far it is from the fp32 model,
    less at the mercy of one case than the min cosine; 1 when it was not validated (its export failed)."""
    validation = attempt.entry.validation
    cosines = [c.cosine for c in validation.cases if c.cosine is not None] if validation else []
    return 1.0 - sum(cosines) / len(cosines) if cosines else 1.0


def min_cosine(attempt: Attempt) -> float:
    """The attempt's worst cosine; 0 when it was not validated (its export failed)."""
    validation = attempt.entry.validation
    worst = validation.worst()["min_cosine"] if validation else 0.0
    return 1.0 if worst is None else worst


@dataclass(frozen=True)
class Skipped:
    """A measured rung not exported: the eager proxy (`Source.predicted_error`) gave it no less error than
    PREDICTED_GAIN times that of the recipe tried before it (`after`)."""

    name: str
    after: str
    predicted_error: float
    after_predicted_error: float

    def say(self) -> str:
        return (f"{self.name} predicted no better in eager (mean error {self.predicted_error:.6f} against "
                f"{self.after_predicted_error:.6f}): past the measured rungs")

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "why": self.say()}


def ladder_record(rungs: tuple[Rung | None, ...], attempts: list[Attempt], kept: Attempt,
                  sensitivity: Sensitivity | None = None, skipped: list[Skipped] | None = None) -> dict[str, Any]:
    """What the manifest says of a target's ladder: the margin, every recipe tried with its figures, the kept one,
    the measured rungs the proxy skipped, and the sensitivity table its measured rungs came from."""
    if kept.clear:
        why = "the first recipe that passed its rule with the margin"
    elif kept.entry.passed:
        why = "no recipe cleared the margin: the passing one with the fewest shortfalls, then the best min cosine"
    else:
        why = "every recipe tried failed: the last one that was exported, for inspection"
    return {"margin": MARGIN.to_dict(), "rungs": [r.name for r in rungs if r], "kept": kept.rung.name if kept.rung
            else None, "why": why, "tried": [_rung_record(a) for a in attempts],
            "skipped": [s.record() for s in skipped or []],
            "sensitivity": sensitivity.record() if sensitivity else None}


def _rung_record(attempt: Attempt) -> dict[str, Any]:
    entry, validation = attempt.entry, attempt.entry.validation
    return {"name": attempt.rung.name if attempt.rung else None,
            "summary": attempt.rung.summary if attempt.rung else None,
            "float_layers": list(attempt.rung.float_layers) if attempt.rung else [],
            "passed": entry.passed, "clear_of_margin": attempt.clear, "shortfalls": attempt.shortfalls,
            "worst": validation.worst() if validation else None,
            "task_drop": validation.task.drop if validation and validation.task else None,
            "bytes": entry.artifact.total_bytes if entry.artifact.files else None,
            "failures": (validation.failures[:3] if validation else []) + ([entry.error] if entry.error else [])}
