"""The tools and the machine a build ran with: recorded in the manifest, shown in reports."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import site
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

from distilforge.cpu import cpu_class, cpu_flags, cpu_model, flags_source

TOOLS = ("distilforge", "torch", "transformers", "numpy", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf",
         "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tensorflow", "optimum", "optimum-onnx")


def tool_versions() -> dict[str, str]:
    found = {}
    for name in TOOLS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


LOCK_FILE = "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def lock_record(lock: Path | None = None) -> dict[str, Any] | None:
    """The lock file the environment was installed from, as the manifest records it: its sha256 and whether
    every package it pins is installed at that version. None where there is no lock (an installed wheel: the
    lock belongs to a source checkout, `make install`)."""
    lock = lock or Path(__file__).resolve().parents[2] / LOCK_FILE
    if not lock.is_file():
        return None
    data = lock.read_bytes()
    installed = _installed_versions()
    differs = sorted(f"{name}=={pinned} (installed: {installed.get(_canonical(name), 'none')})"
                     for name, pinned in _PIN.findall(data.decode("utf-8", "replace"))
                     if installed.get(_canonical(name)) != pinned)
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(data).hexdigest(), "installed_as_locked": not differs,
            "differs": differs}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_versions() -> dict[str, str]:
    """What is installed in the environment's site-packages. Not everything on sys.path: importing setuptools puts
    its _vendor folder there, whose older packaging, platformdirs and tomli would then count as installed (and
    whether a library imported it before the manifest is written depends on what ran before in the process)."""
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return {_canonical(d.metadata["Name"]): d.version for d in distributions(path=paths) if d.metadata["Name"]}


def machine_info(threads: int) -> dict[str, Any]:
    """The machine as the manifest and bench.json record it. `flags` are read the way the runtimes read them
    (CPUID on x86, see distilforge/cpu.py); `cpu_class` is the INT8 kernel class they imply."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpu_class": cpu_class(platform.machine(), flags),
        "cores": os.cpu_count(),
        "threads": threads,
        "flags": flags,
        "flags_source": flags_source(),
        "python": platform.python_version(),
        "os": platform.system(),
    }



def cpu_record() -> dict[str, Any]:
    """The CPU as each artifact records the one its figures were measured on (the process running the artifact)."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "arch": platform.machine(), "cpu_class": cpu_class(platform.machine(), flags),
            "flags": [f for f, present in flags.items() if present]}
