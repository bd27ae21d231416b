"""INT8 recipes chosen for the CPUs an artifact must be right on (--int8-cpu portable|native), for every CPU
class with its features injected, and recorded per artifact in the manifest."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from tiny import make_checkpoint

from distilforge.cpu import PORTABLE, cpu_class, cpu_flags
from distilforge.quantize.ladder import Int8Cpu, int8_cpu
from distilforge.quantize.onnx import weight_recipe
from distilforge.quantize.openvino import overflow_fix
from distilforge.quantize.torchscript import kernel_for

CLASSES = ("x86-vnni", "x86-avx512", "x86-avx2", "arm64")
HERE = cpu_class(platform.machine(), cpu_flags())
# Per class: (ORT 7-bit weights, OpenVINO OverflowFix, TorchScript kernel) for a native build there.
NATIVE = {"x86-vnni": (False, "FIRST_LAYER", "int_mm"), "x86-avx512": (True, "ENABLE", "fbgemm"),
          "x86-avx2": (True, "ENABLE", "fbgemm"), "arm64": (False, "FIRST_LAYER", "fbgemm")}


def _choices(cpu: Int8Cpu) -> tuple[bool, str, str]:
    return weight_recipe(cpu).reduce_range, overflow_fix(cpu)[0], kernel_for(cpu)[0]


@pytest.mark.parametrize("build_class", CLASSES)
def test_portable_recipes_are_the_same_whatever_the_build_cpu(build_class):
    """Built anywhere, a portable artifact keeps every u8 x s8 product in range on AVX2 and AVX-512 without VNNI."""
    cpu = Int8Cpu("portable", build_class)
    assert cpu.classes == PORTABLE and cpu.saturating
    assert _choices(cpu) == (True, "ENABLE", "fbgemm")


@pytest.mark.parametrize("build_class", CLASSES)
def test_native_recipes_follow_the_build_cpu(build_class):
    cpu = Int8Cpu("native", build_class)
    assert cpu.classes == (build_class,)
    assert _choices(cpu) == NATIVE[build_class]


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2": True, "avx512bw": True, "avx512_vnni": True}, "x86-vnni"),
    ({"avx2": True, "fma": True}, "x86-avx2"),
])
def test_injected_features_decide_the_native_class(flags, expected):
    assert int8_cpu("native", arch="x86_64", flags=flags).build_class == expected


def _build(tmp_path, mode: str) -> dict:
    out = tmp_path / mode
    checkpoint = make_checkpoint(tmp_path, "seq-single")
    done = subprocess.run([sys.executable, "-m", "distilforge", "build", str(checkpoint), "--out", str(out),
                           "--targets", "onnx:int8-dynamic,openvino:int8-static", "--int8-cpu", mode],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("mode", ["portable", "native"])
def test_the_manifest_says_which_cpus_each_int8_artifact_is_for(tmp_path, mode):
    manifest = _build(tmp_path, mode)
    assert manifest["settings"]["int8_cpu"] == mode
    assert manifest["machine"]["cpu_class"] == HERE
    expected = Int8Cpu(mode, HERE)
    for entry in manifest["artifacts"]:
        record = entry["details"]["int8_cpu"]
        assert record["mode"] == mode and record["build_cpu_class"] == HERE
        assert record["safe_on"] == list(expected.classes) and record["why"]
        assert entry["validated_on"][0]["cpu_class"] == HERE
    by_target = {e["target"]: e["details"] for e in manifest["artifacts"]}
    assert ("7-bit" in by_target["onnx:int8-dynamic"]["weights"]) == weight_recipe(expected).reduce_range
    assert by_target["openvino:int8-static"]["overflow_fix"] == overflow_fix(expected)[0]
