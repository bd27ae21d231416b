"""An emulated ARM64 CPU to run artifacts on: `qemu-aarch64`, an arm64 Python 3.11 and aarch64 wheels.

`runtime(formats)` provisions, on first use and from package registries only (Debian's packages and PyPI),
everything a Python child process needs to run on an emulated ARM64 CPU, and caches it. Its `command(cpu)` and
`env()` start such a child: `[*rt.command("cortex-a76"), "-m", "distilforge.validate.runners.isolated"]` with
`env=rt.env()`. The child can import numpy, the runtime of each format asked for, and distilforge's own
pure-Python modules (nothing else of the host's: no torch, no transformers).

What it is made of (DESIGN.md, "CPU classes"):

- **qemu-aarch64 10 or newer.** One on PATH if its `--version` says 10 or more; else the cached one; else the
  static `qemu-aarch64` taken from Debian 13 (trixie)'s `qemu-user` .deb (`apt-get download` under an APT_CONFIG
  of our own, then only that file out of the .deb): it runs on Debian 12. qemu 7.2 (Debian 12's) gives wrong
  INT8 results with `-cpu max` (an SVE bug) and shows the host's /proc/cpuinfo, on which ONNX Runtime crashes:
  when nothing newer can be had an older qemu found on PATH is used, with a stand-in arm64 /proc/cpuinfo in the
  sysroot (qemu 10 emulates /proc/cpuinfo itself and never reads that file), and `-cpu max` is refused.
- **An arm64 sysroot**: `python3.11 libgomp1 libstdc++6` and their dependencies from Debian 12 (bookworm, with
  its updates and security suites), resolved by `apt-get install --download-only` under an APT_CONFIG of our
  own (APT::Architecture "arm64", an empty dpkg status, our own lists, cache and state directories; the host's
  apt configuration is not read, but for its proxy and Check-Valid-Until settings) and unpacked with
  `dpkg-deb -x`: the host's dpkg and apt state are never touched, and no root is needed. Python must be 3.11, the
  wheels' cp311. Its standard library is byte-compiled by the host's Python 3.11 (same .pyc format), which makes
  each emulated start about 3 s faster.
- **aarch64 wheels** installed by the host's pip: `pip install --target SITE --platform manylinux2014_aarch64
  --platform manylinux_2_17_aarch64 ... manylinux_2_36_aarch64 --python-version 3.11 --implementation cp
  --only-binary=:all: --no-deps --require-hashes -r REQS`, every manylinux tag up to the sysroot's glibc (2.36):
  ai-edge-litert's wheel is manylinux_2_27 and OpenVINO's manylinux_2_35, which the two tags alone would miss.
  REQS holds the pins of numpy and of each format's runtime, versions and hashes from requirements.lock beside
  the package (`Path(distilforge.__file__).parents[1] / "requirements.lock"`); where there is none (installed
  from a wheel) the host's installed versions, without hashes (a progress note says so). Only what the runtime
  needs to import and run is installed: each of onnxruntime, ai_edge_litert.interpreter and openvino imports
  with numpy alone (flatbuffers, protobuf, packaging, ml-dtypes, ... are declared but not imported).

The cache: `${XDG_CACHE_HOME:-~/.cache}/distilforge/arm64/`, with
- `qemu-<key>/qemu-aarch64` (only when fetched), `ok.json` saying which Debian package it came from;
- `<key>/sysroot/`, `<key>/site/` and `<key>/ok.json` (what was installed: Debian packages and versions, wheels
  and versions, the formats, the qemu its smoke check ran under, how long the set-up took).
A key is a short sha256 of what was asked for: the Debian suites and package names, the Python version, the
wheel pins (name, version, hashes) and this module's recipe version. It does not hold the Debian packages'
versions, which only the registry knows: a warm cache is used without asking any registry, and keeps the
versions its ok.json records until it is deleted. A set-up for formats A is reused for a subset of A when the
pins agree. Everything is built in `.tmp-*` beside its final place, checked (the smoke check imports numpy and
each format's runtime under `qemu-aarch64 -cpu cortex-a76`), then renamed into place: an interrupted set-up is
never used, and of two processes setting up at once (the second waits on a lock where the filesystem has one)
the one whose rename loses discards its copy.

Errors: `parse_cpu` raises `UsageError`; a set-up that fails raises `Arm64RuntimeError` (a `BuildFailure`), and
`Arm64UnavailableError` (its subclass) when this machine cannot provision at all: no apt-get/dpkg-deb, no Debian
archive keyring, or the registries cannot be reached. Each is one line naming what failed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from distilforge.errors import BuildFailure, UsageError
from distilforge.targets import FORMATS
from distilforge.validate.runners.isolated import Launcher

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


class Arm64RuntimeError(BuildFailure):
    """The emulated ARM64 runtime could not be set up, or its smoke check failed."""


class Arm64UnavailableError(Arm64RuntimeError):
    """This machine cannot provision the runtime: no apt-get/dpkg-deb, no Debian keyring, or no registry."""


def parse_cpu(text: str) -> str:
    """"arm64:cortex-a76" -> "cortex-a76"; "arm64:max" -> "max" (whether the qemu found is new enough for it is
    checked lazily, by `Arm64Runtime.command`); anything else is a one-line `UsageError` listing what is allowed."""
    prefix, sep, model = text.strip().lower().partition(":")
    if sep and prefix == "arm64" and model in (*CPU_MODELS, MAX_CPU):
        return model
    allowed = ", ".join(f"arm64:{m}" for m in CPU_MODELS)
    raise UsageError(f"CPU {text!r}: expected one of {allowed}, or arm64:max (needs qemu-aarch64 10 or newer)")


@dataclass(frozen=True)
class Arm64Runtime:
    qemu: Path
    sysroot: Path
    site: Path
    qemu_version: tuple[int, ...]

    @property
    def python(self) -> Path:
        return self.sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"

    def command(self, cpu_model: str) -> list[str]:
        """The prefix that starts the arm64 Python on `cpu_model` (a name from CPU_MODELS, or "max"); append
        `-m module` or `-c code`. Refuses "max" when qemu is older than 10 (wrong INT8 results with SVE)."""
        if cpu_model not in (*CPU_MODELS, MAX_CPU):
            cpu_model = parse_cpu(cpu_model)  # takes "arm64:cortex-a76" too; anything else is a one-line error
        if cpu_model == MAX_CPU and self.qemu_version < MIN_QEMU_FOR_MAX:
            raise UsageError(f"arm64:max needs qemu-aarch64 10 or newer, and the one found is "
                             f"{_dotted(self.qemu_version)} ({self.qemu}): qemu 7.2 gives wrong INT8 results with "
                             f"-cpu max (an SVE bug); use one of {', '.join('arm64:' + m for m in CPU_MODELS)}")
        if self.qemu_version < MIN_QEMU:  # an older qemu, the fallback: it may lack a model (7.2 has no A55, N2)
            known = _qemu_cpus(str(self.qemu))
            if known and cpu_model not in known:
                raise UsageError(f"arm64:{cpu_model} needs qemu-aarch64 10 or newer, and the one found is "
                                 f"{_dotted(self.qemu_version)} ({self.qemu}), which has no such CPU; it has "
                                 + ", ".join(f"arm64:{m}" for m in CPU_MODELS if m in known))
        return [str(self.qemu), "-cpu", cpu_model, "-L", str(self.sysroot), str(self.python)]

    def env(self) -> dict[str, str]:
        """The child's whole environment: this process's, less what would mislead the emulated Python
        (PYTHONHOME, LD_PRELOAD, QEMU_*, ...), with PYTHONPATH = the aarch64 wheels, then a directory holding
        the distilforge package and nothing else of the host's."""
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV and not k.startswith("QEMU_")}
        env.update(PYTHONPATH=os.pathsep.join([str(self.site), str(_package_root())]), PYTHONNOUSERSITE="1",
                   PYTHONDONTWRITEBYTECODE="1")  # the cache is shared: the child writes nothing into it
        return env


def runnable_formats() -> tuple[str, ...]:
    """The formats whose artifacts run on the emulated ARM64 CPU, in the registry's order."""
    return tuple(name for name, spec in FORMATS.items() if spec.arm64.runnable)


def wheels(formats: Iterable[str]) -> list[str]:
    """The aarch64 wheels the runtime for `formats` installs: numpy, then each format's."""
    return [*_BASE_WHEELS, *(w for f in formats for w in FORMATS[f].arm64.wheels)]


def _imports(formats: Iterable[str]) -> list[str]:
    """What the smoke check imports: numpy and each format's runtime."""
    return ["numpy", *(FORMATS[f].arm64.module for f in formats)]


def runtime(formats: Iterable[str], *, progress: Callable[[str], None] | None = None) -> Arm64Runtime:
    """The emulated ARM64 runtime for `formats` (names from `runnable_formats()`), set up on first use (25 s here:
    about 190 MB of downloads with every format, 380 MB on disk) and cached; later calls ask no registry (0.3 s).
    Raises Arm64RuntimeError (Arm64UnavailableError where this machine cannot provision it) on failure."""
    wanted = tuple(dict.fromkeys(formats))
    known = runnable_formats()
    unknown = [f for f in wanted if f not in known]
    if unknown:
        raise UsageError(f"arm64 runtime: no format {unknown[0]!r}: expected one of {', '.join(known)}")
    say = progress or (lambda _message: None)
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _sweep(root)
    pins, hashed = _pins(wanted, say)
    qemu, version = _qemu(root, say)
    base = _digest({"recipe": RECIPE, "sources": SYSROOT_SOURCES, "packages": SYSROOT_PACKAGES,
                    "python": PYTHON_VERSION})
    key = _digest({"base": base, "pins": sorted(p.line() for p in pins)})
    done = _reusable(root, key, base, pins)
    if done is None:
        with _locked(root / f".lock-{key}", say):
            done = _reusable(root, key, base, pins) or _set_up(root, key, base, wanted, pins, hashed, qemu,
                                                               version, say)
    return Arm64Runtime(qemu=qemu, sysroot=done / "sysroot", site=done / "site", qemu_version=version)


# --- wheel pins -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pin:
    name: str  # normalized
    version: str
    hashes: tuple[str, ...]

    def line(self) -> str:
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={h}" for h in self.hashes)])


def _lock_path() -> Path:
    import distilforge

    return Path(distilforge.__file__).resolve().parents[1] / "requirements.lock"


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


def _pins(formats: Sequence[str], say: Callable[[str], None]) -> tuple[list[_Pin], bool]:
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


# --- qemu --------------------------------------------------------------------------------------------------------


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


# --- the sysroot and the wheels ----------------------------------------------------------------------------------


def _set_up(root: Path, key: str, base: str, formats: Sequence[str], pins: Sequence[_Pin], hashed: bool,
            qemu: Path, qemu_version: tuple[int, ...], say: Callable[[str], None]) -> Path:
    started = time.monotonic()
    final = root / key
    with _building(root, key) as tmp:
        say(f"setting up the arm64 runtime (first use): an arm64 Python {PYTHON_VERSION} from Debian 12 (bookworm)")
        apt = _Apt(tmp / "apt", "arm64", SYSROOT_SOURCES)
        apt.update()
        debs = apt.install_download_only(SYSROOT_PACKAGES)
        sysroot = tmp / "sysroot"
        sysroot.mkdir()
        packages = {}
        for deb in debs:
            name, version = _deb_fields(deb)
            packages[name] = version
            _run(["dpkg-deb", "-x", str(deb), str(sysroot)], what=f"unpacking {deb.name}", timeout=_TIMEOUT["apt"])
        shutil.rmtree(tmp / "apt")
        python = sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}"
        if not python.is_file():
            raise Arm64RuntimeError(f"arm64 runtime: Debian's python{PYTHON_VERSION} left no {python}")
        _relative_symlinks(sysroot)
        _stand_in_cpuinfo(sysroot)
        if sys.version_info[:2] == tuple(int(p) for p in PYTHON_VERSION.split(".")):
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                            str(sysroot / "usr" / "lib" / f"python{PYTHON_VERSION}")],
                           capture_output=True, timeout=_TIMEOUT["apt"])  # syntax-error test files are not fatal
        glibc = _glibc(packages.get("libc6", ""))
        say("setting up the arm64 runtime (first use): aarch64 wheels "
            + ", ".join(f"{p.name} {p.version}" for p in pins))
        _pip_install(tmp / "site", pins, hashed, glibc, tmp)
        modules = _imports(formats)
        smoke = Arm64Runtime(qemu=qemu, sysroot=sysroot, site=tmp / "site", qemu_version=qemu_version)
        say(f"setting up the arm64 runtime (first use): checking `import {', '.join(modules)}` under qemu-aarch64 "
            f"{_dotted(qemu_version)} -cpu {SMOKE_CPU}")
        smoke_started = time.monotonic()
        _smoke(smoke, modules)
        _write_json(tmp / "ok.json", {
            "recipe": RECIPE, "key": key, "base": base, "formats": list(formats),
            "python": PYTHON_VERSION, "suites": [s for _, s in SYSROOT_SOURCES], "requested": list(SYSROOT_PACKAGES),
            "debian_packages": dict(sorted(packages.items())),
            "wheels": {p.name: p.version for p in pins}, "hashes": hashed,
            "pins": sorted(_digest(p.line()) for p in pins),  # name, version and hashes: for reuse by a subset
            "glibc": list(glibc), "smoke": {"qemu": str(qemu), "qemu_version": list(qemu_version), "cpu": SMOKE_CPU,
                                            "imports": modules, "seconds": round(time.monotonic() - smoke_started, 1)},
            "seconds": round(time.monotonic() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        _publish(tmp, final)
    say(f"arm64 runtime ready in {time.monotonic() - started:.0f} s: {final}")
    return final


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


def _smoke(rt: Arm64Runtime, modules: Sequence[str]) -> None:
    command = [*rt.command(SMOKE_CPU), "-c", f"import {', '.join(modules)}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=rt.env(), timeout=_TIMEOUT["smoke"])
    except subprocess.TimeoutExpired:
        raise Arm64RuntimeError(f"arm64 runtime: `import {', '.join(modules)}` under qemu-aarch64 -cpu {SMOKE_CPU} "
                                f"took more than {_TIMEOUT['smoke']} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        how = f"killed by signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        raise Arm64RuntimeError(f"arm64 runtime: `import {', '.join(modules)}` failed under qemu-aarch64 "
                                f"{_dotted(rt.qemu_version)} -cpu {SMOKE_CPU} ({how})"
                                + (f": {lines[-1][:300]}" if lines else ""))


def _relative_symlinks(sysroot: Path) -> None:
    """Absolute links inside the sysroot would point at the host's files (Debian's sitecustomize.py links to
    /etc/python3.11/sitecustomize.py, which the host may have): point them inside the sysroot instead."""
    for path in list(sysroot.rglob("*")):
        if path.is_symlink() and os.readlink(path).startswith("/"):
            target = sysroot / os.readlink(path).lstrip("/")
            path.unlink()
            path.symlink_to(os.path.relpath(target, path.parent))


def _stand_in_cpuinfo(sysroot: Path) -> None:
    """qemu 7.2 shows the host's /proc/cpuinfo to the guest (ONNX Runtime then crashes); with -L it reads
    SYSROOT/proc/cpuinfo instead (seen: ONNX Runtime then runs). qemu 10 emulates the file and never reads this
    one. Features come from the auxiliary vector (HWCAP), which qemu sets for the emulated CPU; this file only
    names a generic ARMv8 (a Cortex-A72) for the fallback."""
    entry = ("processor\t: {}\nBogoMIPS\t: 100.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
             "CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 0\n\n")
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text("".join(entry.format(i) for i in range(os.cpu_count() or 1)))


def _glibc(libc6_version: str) -> tuple[int, int]:
    found = re.match(r"(?:\d+:)?(\d+)\.(\d+)", libc6_version)
    return (int(found.group(1)), int(found.group(2))) if found else GLIBC_FALLBACK


# --- apt, under a configuration of our own ------------------------------------------------------------------------


class _Apt:
    """apt-get with its own configuration, sources, lists, cache and (empty) dpkg status under `where`: nothing
    of the host's apt or dpkg state is read or written, and no root is needed."""

    def __init__(self, where: Path, arch: str, sources: Sequence[tuple[str, str]]) -> None:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise Arm64UnavailableError(f"arm64 runtime: setting it up needs {tool} (a Debian or Ubuntu host), "
                                            f"and there is none on PATH")
        if not KEYRING.is_file():
            raise Arm64UnavailableError(f"arm64 runtime: setting it up needs Debian's archive keyring {KEYRING} "
                                        f"(apt-get install debian-archive-keyring)")
        self.where = where
        dirs = {d: where / d for d in ("etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d",
                                       "etc/trusted.gpg.d", "etc/auth.conf.d", "lists/partial",
                                       "cache/archives/partial", "log", "debs")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (where / "status").touch()
        (where / "sources.list").write_text("".join(f"deb [arch={arch} signed-by={KEYRING}] {uri} {suite} main\n"
                                                    for uri, suite in sources))
        settings = {
            "Dir::Etc::main": "/dev/null", "Dir::Etc::parts": dirs["etc/apt.conf.d"],
            "Dir::Etc::sourcelist": where / "sources.list", "Dir::Etc::sourceparts": dirs["etc/sources.list.d"],
            "Dir::Etc::preferences": where / "etc/preferences", "Dir::Etc::preferencesparts": dirs["etc/preferences.d"],
            "Dir::Etc::trusted": where / "etc/trusted.gpg", "Dir::Etc::trustedparts": dirs["etc/trusted.gpg.d"],
            "Dir::Etc::netrc": where / "etc/auth.conf", "Dir::Etc::netrcparts": dirs["etc/auth.conf.d"],
            "Dir::State": where, "Dir::State::lists": where / "lists", "Dir::State::status": where / "status",
            "Dir::Cache": where / "cache", "Dir::Cache::archives": where / "cache/archives",
            "Dir::Log": dirs["log"], "APT::Architecture": arch, "Acquire::Languages": "none",
            "Acquire::GzipIndexes": "true", "APT::Install-Recommends": "false", "APT::Install-Suggests": "false",
            "APT::Update::Error-Mode": "any",
        }
        lines = [f'{k} "{v}";' for k, v in settings.items()]
        lines.append(f'APT::Architectures {{ "{arch}"; }};')
        if os.geteuid() == 0:  # root's cache is not readable by apt's _apt sandbox user: say so, not warn
            lines.append('APT::Sandbox::User "root";')
        lines += _host_acquire_settings()
        self.config = where / "apt.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def _apt_get(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            done = subprocess.run(["apt-get", "-q", "-y", *args], capture_output=True, text=True, env=env, cwd=cwd,
                                  timeout=_TIMEOUT["apt"])
        except subprocess.TimeoutExpired:
            raise Arm64UnavailableError(f"arm64 runtime: `apt-get {args[0]}` took more than {_TIMEOUT['apt']} s "
                                        f"(is Debian's registry reachable?)") from None
        text = done.stdout + "\n" + done.stderr
        lines = text.splitlines()
        failed = ([line for line in lines if line.startswith("E:")]
                  or [line for line in lines if line.startswith("W: Failed to fetch")]
                  or [f"{line} {after.strip()}" for line, after in zip(lines, [*lines[1:], ""], strict=True)
                      if line.startswith("Err:")])
        if done.returncode != 0 or failed:
            reason = (failed or [line for line in lines if line.strip()] or ["no output"])[0].strip()
            error = _OFFLINE.search(text) and Arm64UnavailableError or Arm64RuntimeError
            raise error(f"arm64 runtime: `apt-get {' '.join(args)}` failed: {reason[:300]}")
        return text

    def update(self) -> None:
        self._apt_get("update")

    def download(self, package: str, dest: Path) -> Path:
        self._apt_get("download", package, cwd=dest)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise Arm64RuntimeError(f"arm64 runtime: apt-get download {package} left no .deb")
        return debs[0]

    def install_download_only(self, packages: Sequence[str]) -> list[Path]:
        self._apt_get("install", "--download-only", "--no-install-recommends", *packages)
        debs = sorted((self.where / "cache" / "archives").glob("*.deb"))
        if not debs:
            raise Arm64RuntimeError(f"arm64 runtime: apt-get install --download-only {' '.join(packages)} "
                                    f"downloaded nothing")
        return debs


def _host_acquire_settings() -> list[str]:
    """The host's proxy and Check-Valid-Until settings (how this machine reaches Debian's registry), and only
    those: its other configuration (hooks that clean /var/cache/apt, ...) is not for our own apt."""
    try:
        done = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "APT_CONFIG"})
    except (OSError, subprocess.SubprocessError):
        return []
    keep = re.compile(r'^Acquire::((https?|ftp|socks)::Proxy\S*|Check-Valid-Until|Check-Date|Retries|ForceIPv[46]|'
                      r'https?::Timeout|https::(CaInfo|Verify-Peer|Verify-Host)) "[^"]*";$')
    return [line for line in done.stdout.splitlines() if keep.match(line)]


def _host_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raise Arm64UnavailableError("arm64 runtime: setting it up needs dpkg (a Debian or Ubuntu host), and "
                                    "`dpkg --print-architecture` failed") from None


def _deb_fields(deb: Path) -> tuple[str, str]:
    out = _run(["dpkg-deb", "--show", "--showformat=${Package}\\t${Version}", str(deb)], what=f"reading {deb.name}",
               timeout=120)
    name, _, version = out.strip().partition("\t")
    return name, version


def _extract_member(deb: Path, member: str, dest: Path) -> None:
    """One file out of a .deb's data, without unpacking the rest (qemu-user holds 460 MB of emulators)."""
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for info in archive:
                if info.name.lstrip("./") == member and info.isfile():
                    source = archive.extractfile(info)
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(source, out)
                    dest.chmod(0o755)
                    break
    finally:
        process.stdout.close()
        process.kill()
        process.wait()
    if not dest.is_file():
        raise Arm64RuntimeError(f"arm64 runtime: {deb.name} has no {member}")


def _run(command: list[str], *, what: str, timeout: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise Arm64RuntimeError(f"arm64 runtime: {what}: {e}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise Arm64RuntimeError(f"arm64 runtime: {what} failed: {(lines or ['no output'])[-1][:300]}")
    return done.stdout


# --- the cache ----------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "distilforge" / "arm64"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _reusable(root: Path, key: str, base: str, pins: Sequence[_Pin]) -> Path | None:
    """The complete set-up for `key`, else one for more formats whose pins for these agree."""
    if (root / key / "ok.json").is_file():
        return root / key
    wanted = {_digest(p.line()) for p in pins}
    for ok in sorted(root.glob("*/ok.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            record = json.loads(ok.read_text())
            if record.get("recipe") == RECIPE and record.get("base") == base and wanted <= set(record["pins"]):
                return ok.parent
    return None


@contextlib.contextmanager
def _building(root: Path, name: str) -> Iterator[Path]:
    """A fresh `.tmp-` directory beside `root/name`, removed on any failure (and on success once published)."""
    tmp = root / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename `tmp` (complete, with its ok.json) to `final`. If another process got there first, keep theirs."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if (final / "ok.json").is_file():
            return  # the loser's copy is removed by _building
    stale = final.with_name(f".tmp-stale-{final.name}-{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(final, stale)  # an incomplete leftover without ok.json (someone deleted it by hand)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError as e:
        if not (final / "ok.json").is_file():
            raise Arm64RuntimeError(f"arm64 runtime: could not move the set-up into {final}: {e}") from None


def _sweep(root: Path) -> None:
    """Remove the `.tmp-` directories of set-ups on this host whose process is gone, or a day old."""
    host = socket.gethostname()
    for tmp in root.glob(".tmp-*"):
        found = re.search(rf"-{re.escape(host)}-(\d+)-[0-9a-f]+$", tmp.name)
        with contextlib.suppress(OSError):
            old = time.time() - tmp.stat().st_mtime > 86400
            if old or tmp.name.startswith(".tmp-stale-") or (found and not _alive(int(found.group(1)))):
                shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(path: Path, say: Callable[[str], None]) -> Iterator[None]:
    """An advisory lock, so a second process waits for the first's set-up instead of doing it again. Where the
    filesystem has no locks, both set up and the atomic rename keeps one."""
    try:
        import fcntl

        handle = open(path, "a+")  # noqa: SIM115 - held until the context ends
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("arm64 runtime: waiting for another process that is setting it up")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        handle.close()


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def _package_root() -> Path:
    """A directory whose only entry the child needs is the distilforge package: the checkout for an editable
    install; for an installed one (its parent is site-packages, full of x86 packages) a directory in the cache
    holding a link to the package alone, keyed by the package's path."""
    import distilforge

    package = Path(distilforge.__file__).resolve().parent
    parent = package.parent
    if parent.name not in ("site-packages", "dist-packages"):
        return parent
    holder = _cache_root() / f"package-{hashlib.sha256(str(package).encode()).hexdigest()[:16]}"
    link = holder / "distilforge"
    if not link.is_symlink():
        holder.mkdir(parents=True, exist_ok=True)
        temporary = holder / f".distilforge-{os.getpid()}-{secrets.token_hex(4)}"
        temporary.symlink_to(package)
        os.replace(temporary, link)
    return holder


def why_not(fmt: str) -> str:
    """One line saying why artifacts of `fmt` are not run on the emulated ARM64 CPU (its FormatSpec's reason)."""
    spec = FORMATS.get(fmt)
    return (spec.arm64.why_not if spec else "") or f"no aarch64 runtime for {fmt} artifacts here"


def launcher(cpu: str, *, progress: Callable[[str], None] | None = None) -> Launcher:
    """How IsolatedRunner starts its child on the emulated CPU `cpu` ("arm64:cortex-a76"): one runtime for every
    format in `runnable_formats()`, set up on first use and shared by all of them."""
    model = parse_cpu(cpu)
    rt = _every_format(progress)
    python = tuple(rt.command(model))  # refuses max on an old qemu
    return Launcher(cpu=f"arm64:{model}", python=python, env=rt.env(),
                    emulated=f"qemu-aarch64 {_dotted(rt.qemu_version)} -cpu {model}")


_RUNTIMES: list[Arm64Runtime] = []  # this process's, once set up or found in the cache


def _every_format(progress: Callable[[str], None] | None) -> Arm64Runtime:
    if not _RUNTIMES:
        _RUNTIMES.append(runtime(runnable_formats(), progress=progress))
    return _RUNTIMES[0]
