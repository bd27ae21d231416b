"""What the emulated ARM64 runtime is made of: the CPU models, the Debian suites and packages of qemu and of the
sysroot, the Python version, the base wheels, the recipe version of a cache directory; the host settings the
child drops, the failures that mean no registry can be reached, and how long each step of the set-up may take."""

from __future__ import annotations

import re
from pathlib import Path

CPU_MODELS = ("cortex-a53", "cortex-a55", "cortex-a76", "neoverse-n2")
MAX_CPU = "max"  # every feature qemu knows (SVE, SME, ...): refused with qemu older than MIN_QEMU_FOR_MAX
MIN_QEMU = (10,)
MIN_QEMU_FOR_MAX = (10,)
SMOKE_CPU = "cortex-a76"

DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")  # Debian 12's holds the trixie keys too
QEMU_SUITE = "trixie"
QEMU_PACKAGE = "qemu-user"  # in Debian 13 it ships static binaries (qemu-user-static is a transitional package)
SYSROOT_SOURCES = ((DEBIAN, "bookworm"), (DEBIAN, "bookworm-updates"), (DEBIAN_SECURITY, "bookworm-security"))
SYSROOT_PACKAGES = ("python3.11", "libgomp1", "libstdc++6")
PYTHON_VERSION = "3.11"
GLIBC_FALLBACK = (2, 36)  # bookworm's, should libc6's version not parse
RECIPE = 1  # bump when what goes into a cache directory changes

_BASE_WHEELS = ("numpy",)  # each format's own: its FormatSpec's `arm64` (targets.py)
# Host settings that would mislead the emulated Python or the programs it loads.
_DROPPED_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "PYTHONUSERBASE",
                "PYTHONPLATLIBDIR", "VIRTUAL_ENV", "LD_PRELOAD", "LD_LIBRARY_PATH", "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE")
_OFFLINE = re.compile(r"Temporary failure|Could not resolve|Failed to fetch|Unable to connect|Could not connect|"
                      r"Network is unreachable|Connection (refused|timed out|failed)|NewConnectionError|"
                      r"Max retries exceeded|No route to host|Name or service not known|ConnectTimeout|"
                      r"ReadTimeout|Could not fetch URL|Cannot initiate the connection", re.IGNORECASE)
_TIMEOUT = {"apt": 900, "pip": 1800, "smoke": 900}
