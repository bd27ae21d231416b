"""The aarch64 wheels of the emulated ARM64 runtime: which (numpy and each format's runtime), their pins (versions
and hashes from requirements.lock beside the package, else the installed versions without hashes), and the host's
pip installing them with --platform into the runtime's site directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distilforge.validate.arm64.errors import Arm64RuntimeError, Arm64UnavailableError
from distilforge.validate.arm64.recipe import _BASE_WHEELS, _OFFLINE, _TIMEOUT, PYTHON_VERSION
from distilforge.validate.arm64.support import Arm64


def wheels(formats: Mapping[str, Arm64]) -> list[str]:
    """The aarch64 wheels the runtime for `formats` installs: numpy, then each format's."""
    return [*_BASE_WHEELS, *(w for spec in formats.values() for w in spec.wheels)]


# --- wheel pins -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pin:
    name: str  # normalized
    version: str
    hashes: tuple[str, ...]

    def line(self) -> str:
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={h}" for h in self.hashes)])


def _lock_path() -> Path:
    return Path(__file__).resolve().parents[3] / "requirements.lock"  # beside the package's folder


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _read_lock(text: str) -> dict[str, _Pin]:
    """name -> pin, from a `uv pip compile --generate-hashes` (or pip-compile) lock."""
    pins: dict[str, _Pin] = {}
    name = version = None
    hashes: list[str] = []

    def close() -> None:
        if name is not None:
            pins[name] = _Pin(name, version, tuple(hashes))

    for line in text.splitlines():
        head = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if head:
            close()
            name, version, hashes = _normalize(head.group(1)), head.group(2), []
        if name is not None:
            hashes += re.findall(r"--hash=(sha256:[0-9a-f]{64})", line)
        if not head and line and not line[0].isspace():
            close()
            name = None
    close()
    return pins


def _pins(formats: Mapping[str, Arm64], say: Callable[[str], None]) -> tuple[list[_Pin], bool]:
    names = wheels(formats)
    lock = _lock_path()
    if lock.is_file():
        pinned = _read_lock(lock.read_text(encoding="utf-8"))
        missing = [n for n in names if _normalize(n) not in pinned]
        if missing:
            raise Arm64RuntimeError(f"arm64 runtime: {lock} pins no {missing[0]}")
        return [pinned[_normalize(n)] for n in names], True
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for n in names:
        try:
            pins.append(_Pin(_normalize(n), version(n), ()))
        except PackageNotFoundError:
            raise Arm64RuntimeError(f"arm64 runtime: no requirements.lock beside the package and {n} is not "
                                    f"installed here, so no version to take for aarch64") from None
    say("arm64 runtime: no requirements.lock beside the package: taking the installed versions ("
        + ", ".join(f"{p.name} {p.version}" for p in pins) + ") without hashes")
    return pins, False


def _pip_install(site: Path, pins: Sequence[_Pin], hashed: bool, glibc: tuple[int, int], tmp: Path) -> None:
    requirements = tmp / "requirements.txt"
    requirements.write_text("".join(p.line() + "\n" for p in pins), encoding="utf-8")
    platforms = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, glibc[1] + 1))]
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    command = [sys.executable, "-m", "pip", "install", "--target", str(site), "--python-version", PYTHON_VERSION,
               "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none",
               *(a for p in platforms for a in ("--platform", p)), "--only-binary=:all:", "--no-deps",
               "--no-input", "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off",
               # pip 23.2 checks Requires-Python against the Python it runs on, not --python-version: the tags
               # already hold the wheels to cp311, and a host on another Python must still be able to set up
               "--ignore-requires-python",
               *(["--require-hashes"] if hashed else []), "-r", str(requirements)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV")}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=_TIMEOUT["pip"])
    except subprocess.TimeoutExpired:
        raise Arm64RuntimeError(f"arm64 runtime: pip took more than {_TIMEOUT['pip']} s installing the aarch64 "
                                f"wheels") from None
    if done.returncode != 0:
        text = done.stderr + done.stdout
        if "No module named pip" in text:
            raise Arm64UnavailableError(f"arm64 runtime: {sys.executable} has no pip to fetch the aarch64 wheels "
                                        f"with (python -m ensurepip)")
        error = _OFFLINE.search(text) and Arm64UnavailableError or Arm64RuntimeError
        raise error(f"arm64 runtime: pip could not install the aarch64 wheels: {_pip_reason(text)}")
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with the host's interpreter in their #!


def _pip_reason(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if any("do not match the hashes" in line.lower() for line in lines):
        mismatch = next((line for line in lines if "Expected sha256" in line or "Got" in line), "")
        return "a wheel's hash is not in requirements.lock" + (f" ({mismatch})" if mismatch else "")
    return (errors or lines or ["no output"])[-1][:300]
