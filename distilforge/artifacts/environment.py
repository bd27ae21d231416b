"""The tools and the machine a build ran with: recorded in the manifest, shown in reports."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
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
