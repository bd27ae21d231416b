"""The CPU as the runtimes see it: CPUID flags, the INT8 kernel class they imply, and what an emulator shows."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest

from distilforge.cpu import PORTABLE, SATURATING, _proc_cpuinfo, cpu_class, cpu_flags

X86 = platform.machine().lower() in ("x86_64", "amd64")
QEMU = shutil.which("qemu-x86_64") if X86 else None


@pytest.mark.parametrize(("arch", "flags", "expected"), [
    ("x86_64", {"avx2": True, "avx512bw": True, "avx512_vnni": True}, "x86-vnni"),  # Cascade Lake, Ice Lake
    ("x86_64", {"avx2": True, "avx_vnni": True}, "x86-vnni"),  # Alder Lake: VNNI on 256-bit vectors
    ("x86_64", {"avx2": True, "avx512bw": True, "amx_int8": True, "avx512_vnni": True}, "x86-vnni"),  # Sapphire R.
    ("x86_64", {"avx2": True, "avx512bw": True}, "x86-avx512"),  # Skylake-SP: AVX-512, no VNNI
    ("x86_64", {"avx2": True, "fma": True}, "x86-avx2"),  # AMD EPYC Zen 2/3, Haswell
    ("x86_64", {"sse4_2": True}, "x86-sse"),
    ("aarch64", {"asimd": True, "asimddp": True}, "arm64"),
    ("riscv64", {}, "other"),
])
def test_the_class_follows_the_int8_instructions(arch, flags, expected):
    assert cpu_class(arch, flags) == expected


def test_portable_recipes_cover_the_saturating_classes():
    assert set(SATURATING) <= set(PORTABLE) and "x86-vnni" in PORTABLE and "arm64" in PORTABLE


@pytest.mark.skipif(not X86, reason="CPUID is an x86 instruction")
def test_cpuid_agrees_with_the_kernel_on_this_machine():
    """Natively, CPUID and /proc/cpuinfo report the same features (the kernel may hide some, never add)."""
    flags = cpu_flags()
    listed = _proc_cpuinfo()[1]
    assert flags["sse4_2"] and flags["sse4_2"] == ("sse4_2" in listed)
    for name in ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"):
        assert flags[name] == (name in listed), name


def _emulated(cpu: str) -> dict:
    code = ("import json, platform; from distilforge.cpu import cpu_flags, cpu_class, flags_source; f = cpu_flags(); "
            "print(json.dumps({'class': cpu_class(platform.machine(), f), 'flags': f, 'source': flags_source()}))")
    done = subprocess.run([QEMU, "-cpu", cpu, sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (apt-get install qemu-user; .ci/run installs it)")
@pytest.mark.parametrize(("cpu", "expected"), [("Haswell", "x86-avx2"), ("Nehalem", "x86-sse")])
def test_an_emulated_cpu_is_seen_through_cpuid(cpu, expected):
    """Under qemu-user, /proc/cpuinfo still lists the host's flags; CPUID, which the runtimes read to pick their
    kernels, shows the emulated CPU, and so does distilforge."""
    seen = _emulated(cpu)
    assert seen["source"] == "cpuid" and seen["class"] == expected
    assert seen["flags"]["avx2"] == (cpu == "Haswell") and not seen["flags"]["avx512_vnni"]
