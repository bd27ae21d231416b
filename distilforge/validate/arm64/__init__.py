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
wheel pins (name, version, hashes) and the recipe version (RECIPE). It does not hold the Debian packages'
versions, which only the registry knows: a warm cache is used without asking any registry, and keeps the
versions its ok.json records until it is deleted. A set-up for formats A is reused for a subset of A when the
pins agree. Everything is built in `.tmp-*` beside its final place, checked (the smoke check imports numpy and
each format's runtime under `qemu-aarch64 -cpu cortex-a76`), then renamed into place: an interrupted set-up is
never used, and of two processes setting up at once (the second waits on a lock where the filesystem has one)
the one whose rename loses discards its copy.

Errors: `parse_cpu` raises `UsageError`; a set-up that fails raises `Arm64RuntimeError` (a `BuildFailure`), and
`Arm64UnavailableError` (its subclass) when this machine cannot provision at all: no apt-get/dpkg-deb, no Debian
archive keyring, or the registries cannot be reached. Each is one line naming what failed.

Here: `parse_cpu`, `Arm64Runtime`, `runtime()` and its first-use set-up of a cache directory (`_set_up`, the smoke
check), `launcher`. Beside it: recipe.py (what the runtime is made of: CPU models, Debian suites and
packages, Python version, timeouts), errors.py, qemu.py (finding or fetching qemu-aarch64), debian.py (apt under a
configuration of our own, .debs, the unpacked sysroot), aarch64_wheels.py (the pins from requirements.lock and pip
--platform), cache.py (the cache directory: keys, reuse, atomic publishing, locks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from distilforge.errors import UsageError
from distilforge.validate.arm64.aarch64_wheels import _Pin, _pins, _pip_install
from distilforge.validate.arm64.aarch64_wheels import _read_lock as _read_lock
from distilforge.validate.arm64.aarch64_wheels import wheels as wheels
from distilforge.validate.arm64.cache import (
    _building,
    _cache_root,
    _digest,
    _locked,
    _package_root,
    _publish,
    _reusable,
    _sweep,
    _write_json,
)
from distilforge.validate.arm64.debian import _Apt, _deb_fields, _glibc, _relative_symlinks, _run, _stand_in_cpuinfo
from distilforge.validate.arm64.errors import Arm64RuntimeError
from distilforge.validate.arm64.errors import Arm64UnavailableError as Arm64UnavailableError
from distilforge.validate.arm64.qemu import _dotted, _qemu, _qemu_cpus
from distilforge.validate.arm64.qemu import _qemu_version as _qemu_version
from distilforge.validate.arm64.recipe import (
    _DROPPED_ENV,
    _TIMEOUT,
    CPU_MODELS,
    MAX_CPU,
    MIN_QEMU,
    MIN_QEMU_FOR_MAX,
    PYTHON_VERSION,
    RECIPE,
    SMOKE_CPU,
    SYSROOT_PACKAGES,
    SYSROOT_SOURCES,
)
from distilforge.validate.arm64.support import Arm64
from distilforge.validate.runners.isolated import Launcher


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
        env.setdefault("ONEDNN_JIT_PROFILE", "0")  # else oneDNN's aarch64 JIT leaves a /tmp/perf-<pid>.map per process
        return env


def _imports(formats: Mapping[str, Arm64]) -> list[str]:
    """What the smoke check imports: numpy and each format's runtime."""
    return ["numpy", *(spec.module for spec in formats.values())]


def runtime(formats: Mapping[str, Arm64], *, progress: Callable[[str], None] | None = None) -> Arm64Runtime:
    """The emulated ARM64 runtime for `formats` (name -> what it needs there: targets.py `arm64_formats()`), set up
    on first use (25 s here: about 190 MB of downloads with every format, 380 MB on disk) and cached; later calls
    ask no registry (0.3 s). Raises Arm64RuntimeError (Arm64UnavailableError where this machine cannot provision
    it) on failure."""
    wanted = dict(formats)
    unknown = [name for name, spec in wanted.items() if not spec.runnable]
    if unknown:
        raise UsageError(f"arm64 runtime: {unknown[0]} artifacts do not run there: {wanted[unknown[0]].why_not}")
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


# --- the sysroot and the wheels ----------------------------------------------------------------------------------


def _set_up(root: Path, key: str, base: str, formats: Mapping[str, Arm64], pins: Sequence[_Pin], hashed: bool,
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


def launcher(cpu: str, formats: Mapping[str, Arm64], *, progress: Callable[[str], None] | None = None) -> Launcher:
    """How IsolatedRunner starts its child on the emulated CPU `cpu` ("arm64:cortex-a76"): one runtime for every
    format in `formats` (targets.py `arm64_formats()`), set up on first use and shared by all of them."""
    model = parse_cpu(cpu)
    rt = _every_format(formats, progress)
    python = tuple(rt.command(model))  # refuses max on an old qemu
    return Launcher(cpu=f"arm64:{model}", python=python, env=rt.env(),
                    emulated=f"qemu-aarch64 {_dotted(rt.qemu_version)} -cpu {model}")


_RUNTIMES: list[Arm64Runtime] = []  # this process's, once set up or found in the cache


def _every_format(formats: Mapping[str, Arm64], progress: Callable[[str], None] | None) -> Arm64Runtime:
    if not _RUNTIMES:
        _RUNTIMES.append(runtime(formats, progress=progress))
    return _RUNTIMES[0]
