"""The errors of the emulated ARM64 runtime's set-up: each one line naming what failed."""

from __future__ import annotations

from distilforge.errors import BuildFailure


class Arm64RuntimeError(BuildFailure):
    """The emulated ARM64 runtime could not be set up, or its smoke check failed."""


class Arm64UnavailableError(Arm64RuntimeError):
    """This machine cannot provision the runtime: no apt-get/dpkg-deb, no Debian keyring, or no registry."""
