"""The CPU an artifact is built, validated or run on: its INT8-relevant features and its class.

Flags come from the CPUID instruction on x86 (what the runtimes themselves read to pick their kernels, and
what an emulator such as `qemu-x86_64 -cpu Haswell` changes), else from /proc/cpuinfo (ARM's `Features`, or
an x86 machine where code cannot be executed from memory). Names follow /proc/cpuinfo's.

The classes are about integer GEMM kernels (docs/cpu-classes.md has the measurements):
- `x86-vnni`: AVX-512 VNNI, AVX-VNNI or AMX-INT8. u8 x s8 products accumulate in int32: exact.
- `x86-avx512`: AVX-512 without VNNI, and `x86-avx2`: AVX2. The u8 x s8 kernels (VPMADDUBSW) add two
  products into int16, which saturates when weights use the full int8 range and activations are large.
- `x86-sse`: older x86 (SSE4.1 paths widen to int16 first: exact, slow).
- `arm64`: NEON, dot-product instructions where present (`asimddp`): exact.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
from collections.abc import Mapping
from functools import cache
from pathlib import Path

# CPU flags that change how fast, or in which precision, the backends run (recorded in every manifest).
SPEED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
               "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "asimd", "asimddp", "i8mm", "sve")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
ARM = ("aarch64", "arm64")

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CLASSES = ("x86-vnni", "x86-avx512", "x86-avx2", "x86-sse", "arm64", "other")
# The classes whose u8 x s8 kernels can saturate: an INT8 recipe meant to run there must keep products in range.
SATURATING = ("x86-avx512", "x86-avx2")
# What a portable INT8 artifact must be right on: every class above that a deployer may run it on.
PORTABLE = ("x86-vnni", "x86-avx512", "x86-avx2", "arm64")

# (leaf, subleaf, register index (eax, ebx, ecx, edx), bit) for each x86 flag
_CPUID_BITS = {
    "sse4_2": (1, 0, 2, 20), "avx": (1, 0, 2, 28), "fma": (1, 0, 2, 12), "f16c": (1, 0, 2, 29),
    "avx2": (7, 0, 1, 5), "avx512f": (7, 0, 1, 16), "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512_vnni": (7, 0, 2, 11), "avx512_fp16": (7, 0, 3, 23), "amx_bf16": (7, 0, 3, 22),
    "amx_tile": (7, 0, 3, 24), "amx_int8": (7, 0, 3, 25), "avx_vnni": (7, 1, 0, 4), "avx512_bf16": (7, 1, 0, 5),
}
# push rbx; mov eax, edi; mov ecx, esi; mov r8, rdx; cpuid; mov [r8], eax; mov [r8+4], ebx;
# mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret   -- void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4])
_CPUID_CODE = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808" "4189500c" "5b" "c3")


def cpu_class(arch: str, flags: Mapping[str, bool]) -> str:
    """The INT8 kernel class of a CPU with these flags (see the module docstring)."""
    arch = arch.lower()
    if arch in X86:
        if any(flags.get(f) for f in VNNI_FLAGS):
            return "x86-vnni"
        if flags.get("avx512bw"):
            return "x86-avx512"
        if flags.get("avx2"):
            return "x86-avx2"
        return "x86-sse"
    if arch in ARM:
        return "arm64"
    return "other"


def this_cpu_class() -> str:
    """This machine's class."""
    import platform

    return cpu_class(platform.machine(), cpu_flags())


def cpu_flags() -> dict[str, bool]:
    """This process's view of the CPU's flags (see the module docstring), every name in SPEED_FLAGS."""
    found = set(_cpuid_flags() if platform.machine().lower() in X86 else ()) or _proc_cpuinfo()[1]
    return {f: f in found for f in SPEED_FLAGS}


def cpu_model() -> str:
    return _proc_cpuinfo()[0] or platform.processor() or "unknown"


def flags_source() -> str:
    return "cpuid" if platform.machine().lower() in X86 and _cpuid_flags() else "/proc/cpuinfo"


@cache
def _cpuid_flags() -> frozenset[str]:
    """The flags CPUID reports, or none where the instruction cannot be run from Python."""
    if os.environ.get("DISTILFORGE_NO_CPUID"):
        return frozenset()
    try:
        cpuid = _cpuid_function()
    except (OSError, ValueError, AttributeError):
        return frozenset()
    max_leaf = cpuid(0, 0)[0]
    registers = {(leaf, sub): cpuid(leaf, sub) for leaf, sub in ((1, 0), (7, 0), (7, 1)) if leaf <= max_leaf}
    return frozenset(name for name, (leaf, sub, reg, bit) in _CPUID_BITS.items()
                     if (leaf, sub) in registers and registers[(leaf, sub)][reg] >> bit & 1)


def _cpuid_function():  # noqa: ANN202 - a ctypes callable
    buffer = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buffer.write(_CPUID_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    function = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32 * 4))(address)

    def cpuid(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        out = (ctypes.c_uint32 * 4)()
        function(leaf, subleaf, ctypes.byref(out))
        return tuple(out)

    cpuid.keep = buffer  # the code must outlive the function
    return cpuid


@cache
def _proc_cpuinfo() -> tuple[str, frozenset[str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return "", frozenset()
    model, flags = "", frozenset()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "CPU part") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


# set in each `build --jobs` worker (and so in the runner processes it starts; jobs.py): the cores are shared with
# the other workers, so thread pools wait for work asleep instead of spinning (torch's OpenMP: OMP_WAIT_POLICY;
# ONNX Runtime: validate/runners/onnx.py). Scheduling only: no result changes (tests/test_determinism.py builds
# with --jobs 1 and 2 and compares the bytes).
SHARED_CORES_VARIABLE = "DISTILFORGE_SHARED_CORES"


def cores_are_shared() -> bool:
    return os.environ.get(SHARED_CORES_VARIABLE) == "1"
