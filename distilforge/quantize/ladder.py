"""What every INT8 recipe is chosen from: the CPUs it must be right on, and a short ladder of recipes.

CPUs (`Int8Cpu`): integer kernels differ by instruction set (distilforge/cpu.py). A *portable* recipe keeps
every product in range on every class a deployer may run it on (x86 with and without VNNI, ARM), so the figures
measured on the build machine hold on the others; a *native* recipe may use what only the build machine's class
gets right (full 8-bit weights on a VNNI CPU, `torch._int_mm`), and the manifest says it is meant for that class.

Ladder (`Rung`): each INT8 target lists a few recipes from fastest to safest. The build tries them in order
and keeps the first whose figures pass the unchanged pass rule with a margin (validate/tolerances.py:
`MARGIN`); a recipe that scrapes past the rule on the build CPU is the one that fails on the next CPU.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from distilforge.cpu import PORTABLE, SATURATING, cpu_class, cpu_flags
from distilforge.errors import UsageError

INT8_CPU_MODES = ("portable", "native")


@dataclass(frozen=True)
class Rung:
    """One recipe of a target's ladder: `name` is what the quantizer reads, `summary` what a person reads."""

    name: str
    summary: str


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
    """The rung called `name` (None: the first). The pipeline only asks for rungs of the target's own ladder."""
    if name is None:
        return rungs[0]
    return next(r for r in rungs if r.name == name)
