"""The tools and the machine a build ran with: recorded in the manifest, shown in reports."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TOOLS = ("distilforge", "torch", "transformers", "numpy", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf",
         "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tensorflow", "optimum", "optimum-onnx")
# CPU flags that change how fast (and in which precision) the backends run
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "amx_bf16", "amx_int8", "amx_tile")


def tool_versions() -> dict[str, str]:
    found = {}
    for name in TOOLS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def machine_info(threads: int) -> dict[str, Any]:
    model, flags = _cpuinfo()
    return {
        "cpu": model or platform.processor() or "unknown",
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "flags": {f: f in flags for f in SPEED_FLAGS},
        "python": platform.python_version(),
        "os": platform.system(),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return "", set()
    model, flags = "", set()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def has_vnni(info: dict[str, Any]) -> bool:
    flags = info.get("flags", {})
    return bool(flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))
