"""What a format says of itself for the emulated ARM64 CPU (its FormatSpec's `arm64`, targets.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm64:
    """How a format's artifacts run on the emulated ARM64 CPU (validate/arm64/): the aarch64 wheels its runtime
    installs and the module its smoke check imports; or, where none can run there, `why_not`."""

    wheels: tuple[str, ...] = ()
    module: str = ""
    why_not: str = ""

    @property
    def runnable(self) -> bool:
        return bool(self.wheels and self.module)
