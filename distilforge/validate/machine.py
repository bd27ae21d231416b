"""Validating where an artifact runs: how this CPU differs from the one the manifest's figures were measured on.

INT8 kernels, and so INT8 numerics and speed, depend on the instruction set (distilforge/cpu.py). `distilforge
validate` on a deploy host re-runs every check there; these lines say what changed, so a deployer can tell a
figure that moved because the CPU differs from one that moved because a file did.
"""

from __future__ import annotations

from typing import Any

from distilforge.cpu import SATURATING

# What each flag changes, in the words a deployer needs.
FLAG_EFFECT = {
    "avx512_vnni": "int8 products accumulate in int32 with it; without it, u8 x s8 kernels add pairs in int16",
    "avx_vnni": "int8 products accumulate in int32 with it; without it, u8 x s8 kernels add pairs in int16",
    "amx_int8": "int8 matrix tiles: the fastest int8 kernels",
    "amx_bf16": "bf16 matrix tiles",
    "avx512_bf16": "bf16 arithmetic: OpenVINO would run f32 models in bf16 without an f32 hint",
    "avx512_fp16": "fp16 arithmetic",
    "avx512f": "512-bit vectors: kernels and their float summation order differ",
    "avx512bw": "512-bit int8/int16 vectors",
    "avx512vl": "AVX-512 on 128/256-bit vectors",
    "avx2": "256-bit integer vectors: the int8 kernels of every runtime need it",
    "fma": "fused multiply-add: float rounding differs",
    "avx": "256-bit float vectors",
    "f16c": "fp16 <-> fp32 conversion instructions",
    "sse4_2": "the oldest x86 kernels the runtimes ship",
    "asimddp": "ARM int8 dot products",
    "i8mm": "ARM int8 matrix multiply",
}


def cpu_differences(recorded: dict[str, Any] | None, here: dict[str, Any]) -> list[str]:
    """One line per speed- or numerics-relevant difference between the recorded machine and this one."""
    if not recorded or "flags" not in recorded:
        return ["CPU: the manifest records no CPU features; figures cannot be told apart from CPU effects"]
    lines = []
    if recorded.get("arch") and recorded.get("arch") != here.get("arch"):
        lines.append(f"CPU: architecture {here.get('arch')} here, {recorded.get('arch')} on the build machine")
    built, now = recorded.get("cpu_class"), here.get("cpu_class")
    if built and built != now:
        lines.append(f"CPU class: {now} here, {built} on the build machine" + _class_note(built, now))
    old, new = _flags(recorded), _flags(here)
    known = set(recorded["flags"]) if isinstance(recorded.get("flags"), dict) else set(FLAG_EFFECT)
    for flag in (f for f in FLAG_EFFECT if f in known):  # a flag an older manifest did not record is unknown
        had, has = flag in old, flag in new
        if had != has:
            where = "has it, the build machine did not" if has else "lacks it, the build machine had it"
            lines.append(f"CPU: {flag}: this machine {where} ({FLAG_EFFECT[flag]})")
    return lines


def _flags(machine: dict[str, Any]) -> set[str]:
    """The flags present: the manifest's `machine` maps every flag to a bool, an artifact's `validated_on` lists
    those present."""
    flags = machine.get("flags") or {}
    return {f for f, present in flags.items() if present} if isinstance(flags, dict) else set(flags)


def _class_note(built: str, now: str) -> str:
    if now in SATURATING and built not in SATURATING:
        return ": int8 artifacts built for int32 accumulation only (--int8-cpu native) can be wrong here"
    return ""


def outside_recipe(record: dict[str, Any], cpu_class: str) -> str | None:
    """A line when an INT8 artifact's recipe was not meant for this CPU class (built with --int8-cpu native)."""
    cpu = (record.get("details") or {}).get("int8_cpu") or {}
    safe_on = cpu.get("safe_on")
    if not safe_on or cpu_class in safe_on:
        return None
    return (f"{record['target']}: its recipe is meant for {', '.join(safe_on)} only ({cpu.get('mode')}: "
            f"{cpu.get('why')}); this CPU is {cpu_class}")
