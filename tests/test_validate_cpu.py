"""`distilforge validate` where an artifact runs: it says how the CPU differs from the one its figures were
recorded on, one line per difference, re-runs every check there, and judges the new figures by the pass rules."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest
from tiny import make_checkpoint

from distilforge.artifacts.manifest import manifest_digest
from distilforge.cpu import cpu_class, cpu_flags
from distilforge.validate.machine import cpu_differences, outside_recipe

HERE = cpu_class(platform.machine(), cpu_flags())
QEMU = shutil.which("qemu-x86_64") if platform.machine() == "x86_64" else None
XEON = {"arch": "x86_64", "cpu_class": "x86-vnni",
        "flags": {"avx": True, "avx2": True, "fma": True, "avx512f": True, "avx512bw": True, "avx512vl": True,
                  "avx512_vnni": True, "avx512_bf16": False}}
EPYC = {"arch": "x86_64", "cpu_class": "x86-avx2", "flags": ["sse4_2", "avx", "avx2", "fma", "f16c"]}


def test_each_difference_is_one_line():
    lines = cpu_differences(XEON, EPYC)
    assert lines[0].startswith("CPU class: x86-avx2 here, x86-vnni on the build machine")
    lacking = sorted(line.split(":")[1].strip() for line in lines[1:])
    assert lacking == ["avx512_vnni", "avx512bw", "avx512f", "avx512vl"]
    assert all("lacks it, the build machine had it" in line for line in lines[1:])
    assert cpu_differences(XEON, {**XEON}) == []


def test_a_flag_an_older_manifest_did_not_record_is_not_a_difference():
    older = {"arch": "x86_64", "flags": {"avx2": True, "fma": True}}  # no cpu_class, no avx / f16c / sse4_2
    assert cpu_differences(older, EPYC) == []
    assert cpu_differences({"arch": "x86_64"}, EPYC)[0].startswith("CPU: the manifest records no CPU features")


def test_a_native_recipe_is_flagged_off_its_class():
    record = {"target": "onnx:int8-dynamic", "details": {"int8_cpu": {"mode": "native", "safe_on": ["x86-vnni"],
                                                                      "why": "int32 accumulation"}}}
    assert "meant for x86-vnni only" in outside_recipe(record, "x86-avx2")
    assert outside_recipe(record, "x86-vnni") is None
    assert outside_recipe({"target": "onnx:fp32", "details": {}}, "x86-avx2") is None


def _build(tmp_path, *extra: str, targets: str = "onnx:int8-dynamic,onnx:fp32") -> object:
    checkpoint = make_checkpoint(tmp_path, "seq-single")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "distilforge", "build", str(checkpoint), "--out", str(out),
                           "--targets", targets, *extra],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return out


def _validate(out, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilforge", "validate", str(out)], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, **env})


def _rewrite_card(out, entry, checkpoint):
    from dataclasses import asdict

    from distilforge.artifacts.folder import write_card
    from distilforge.targets import get_target

    record = asdict(write_card(out / entry["target"].replace(":", "-"), entry, checkpoint,
                               get_target(entry["target"]).spec.loader))
    entry["files"] = [record if f["role"] == "card" else f for f in entry["files"]]


def test_a_manifest_from_another_cpu_is_rechecked_here(tmp_path):
    """The manifest says the build ran on another CPU class (a VNNI Xeon, or an AVX2 EPYC on a VNNI machine):
    validate says how this CPU differs and re-checks; figures that move with the CPU are reported, not failed."""
    out = _build(tmp_path)
    other = XEON if HERE != "x86-vnni" else {**EPYC, "flags": {f: True for f in EPYC["flags"]}}
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["machine"].update(other, cpu="recorded CPU")
    for entry in manifest["artifacts"]:
        entry["validated_on"] = [{"cpu": "recorded CPU", "arch": "x86_64", "cpu_class": other["cpu_class"],
                                  "flags": [f for f, on in other["flags"].items() if on], "passed": True}]
        entry["validation"]["worst"]["min_cosine"] -= 0.001  # as if that CPU's kernels had measured otherwise
        _rewrite_card(out, entry, manifest["checkpoint"])  # as a build there would have written it
    manifest["digest"] = manifest_digest(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    done = _validate(out)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("distilforge: note:")]
    assert any(f"CPU class: {HERE} here, {other['cpu_class']} on the build machine" in n for n in notes)
    assert any("min_cosine" in n and "(measured on another CPU)" in n for n in notes)
    assert "FAILED" not in done.stderr


@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (apt-get install qemu-user; .ci/run installs it)")
def test_validate_on_an_emulated_cpu_of_another_class(tmp_path):
    """Artifacts built here, run on another CPU class under QEMU: on a VNNI machine that is the AVX2 class whose
    u8 x s8 kernels saturate; on an AVX2 machine (QEMU cannot emulate AVX-512) the SSE4.2 class, whose kernels
    are exact like VNNI's. The portable recipes pass there too."""
    out = _build(tmp_path)
    emulated, expected = ("Haswell", "x86-avx2") if HERE in ("x86-vnni", "x86-avx512") else ("Nehalem", "x86-sse")
    done = _validate(out, DISTILFORGE_RUNTIME_WRAPPER=f"{QEMU} -cpu {emulated}")
    assert done.returncode == 0, done.stderr
    assert f"distilforge: note: CPU class: {expected} here, {HERE} on the build machine" in done.stderr
    assert "avx512_vnni: this machine lacks it" in done.stderr or "avx2: this machine lacks it" in done.stderr


@pytest.mark.skipif(QEMU is None, reason="needs qemu-x86_64 (apt-get install qemu-user; .ci/run installs it)")
def test_a_native_build_is_flagged_on_another_class(tmp_path):
    out = _build(tmp_path, "--int8-cpu", "native", targets="onnx:int8-dynamic")  # the one with a native recipe
    emulated = "Haswell" if HERE in ("x86-vnni", "x86-avx512") else "Nehalem"
    done = _validate(out, DISTILFORGE_RUNTIME_WRAPPER=f"{QEMU} -cpu {emulated}")
    assert f"onnx:int8-dynamic: its recipe is meant for {HERE} only (native" in done.stderr
