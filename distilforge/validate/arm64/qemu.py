"""qemu-aarch64 for the emulated ARM64 runtime: one on PATH if it is 10 or newer, else the cached one, else the
static binary fetched from Debian 13's qemu-user .deb; an older one on PATH when nothing newer can be had."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from distilforge.validate.arm64.cache import _building, _digest, _locked, _publish, _write_json
from distilforge.validate.arm64.debian import _Apt, _deb_fields, _extract_member, _host_arch
from distilforge.validate.arm64.errors import Arm64RuntimeError
from distilforge.validate.arm64.recipe import DEBIAN, MIN_QEMU, QEMU_PACKAGE, QEMU_SUITE, RECIPE


def _qemu_version(path: str | Path) -> tuple[int, ...] | None:
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    return tuple(int(g) for g in found.groups() if g is not None) if found else None


@functools.lru_cache(maxsize=8)
def _qemu_cpus(qemu: str) -> frozenset[str]:
    """The CPU models `qemu -cpu help` lists (empty if it cannot say)."""
    try:
        done = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ") and line.strip())


def _qemu(root: Path, say: Callable[[str], None]) -> tuple[Path, tuple[int, ...]]:
    found = []
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        path = shutil.which(name)
        version = _qemu_version(path) if path else None
        if version:
            found.append((version, Path(path)))
    found.sort(reverse=True)
    if found and found[0][0] >= MIN_QEMU:
        return found[0][1], found[0][0]
    try:
        arch = _host_arch()
        place = root / f"qemu-{_digest({'recipe': RECIPE, 'suite': QEMU_SUITE, 'package': QEMU_PACKAGE, 'arch': arch})}"
        binary = place / "qemu-aarch64"
        if (place / "ok.json").is_file() and (version := _qemu_version(binary)):
            return binary, version
        with _locked(root / f".lock-{place.name}", say):
            if not ((place / "ok.json").is_file() and _qemu_version(binary)):
                _fetch_qemu(root, place, arch, say)
    except Arm64RuntimeError as e:
        if not found:
            raise
        version, path = found[0]
        why = str(e).removeprefix("arm64 runtime: ")
        say(f"arm64 runtime: could not fetch qemu-aarch64 10 ({why}); using {path} {_dotted(version)}, with which "
            f"arm64:max is refused")
        return path, version
    version = _qemu_version(binary)
    if not version:
        raise Arm64RuntimeError(f"arm64 runtime: {binary} does not run on this machine")
    return binary, version


def _fetch_qemu(root: Path, place: Path, arch: str, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    say(f"setting up the arm64 runtime (first use): fetching qemu-aarch64 from Debian 13 ({QEMU_SUITE})'s "
        f"{QEMU_PACKAGE} package")
    with _building(root, place.name) as tmp:
        apt = _Apt(tmp / "apt", arch, ((DEBIAN, QEMU_SUITE),))
        apt.update()
        deb = apt.download(QEMU_PACKAGE, tmp / "apt" / "debs")
        package, version = _deb_fields(deb)
        _extract_member(deb, "usr/bin/qemu-aarch64", tmp / "qemu-aarch64")
        shutil.rmtree(tmp / "apt")
        qemu_version = _qemu_version(tmp / "qemu-aarch64")
        if not qemu_version:
            raise Arm64RuntimeError(f"arm64 runtime: the qemu-aarch64 of {package} {version} ({QEMU_SUITE}) does "
                                    f"not run on this machine")
        _write_json(tmp / "ok.json", {"recipe": RECIPE, "suite": QEMU_SUITE, "package": package, "version": version,
                                      "arch": arch, "qemu_version": list(qemu_version),
                                      "seconds": round(time.monotonic() - started, 1)})
        _publish(tmp, place)
    say(f"arm64 runtime: qemu-aarch64 {_dotted(qemu_version)} ({package} {version}) in {place}")


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)
