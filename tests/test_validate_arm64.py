"""Artifacts judged on emulated ARM64 CPUs (qemu-aarch64): `validate --cpu arm64:MODEL` and `build --validate-on`.

The runtime itself (provisioning, the fp32 outputs of tiny graphs) is tested in test_arm64_runtime.py; here a tiny
DistilBERT's artifacts go through the same validation as on the host, on two CPU models (Cortex-A53: no dot
product instructions; Cortex-A76: with them), and the verdicts land in the manifest, the card and the report."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TOLERANCES, installed_targets

from distilforge.artifacts.manifest import ArtifactEntry, Verdict
from distilforge.artifacts.records import ExportedArtifact, Tolerance, ValidationResult
from distilforge.cpu import SATURATING, cpu_class, cpu_flags
from distilforge.errors import UsageError
from distilforge.targets import arm64_formats
from distilforge.validate import arm64

# xdist_group: one pytest-xdist worker runs the ARM tests (the emulated runtime is set up on first use, in the cache)
pytestmark = [pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")),
    reason="the ARM64 CPUs are emulated on x86_64 Linux hosts"), pytest.mark.xdist_group("arm64")]

# one fp32 and one INT8 artifact of each format that runs there, and one whose runtime does not
ON_ARM = ["onnx:fp32", "onnx:int8-dynamic", "tflite:fp32", "tflite:int8-dynamic", "openvino:fp32",
          "openvino:int8-weights"]
NOT_ON_ARM = "torchscript:fp32"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def emulated():
    """The arm64 runtime, set up once (from Debian's packages and PyPI); skip only where that cannot be done."""
    try:
        return arm64.launcher("arm64:cortex-a76", arm64_formats())
    except arm64.Arm64UnavailableError as e:
        pytest.skip(f"the arm64 runtime cannot be set up here: {e}")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilforge", *args], capture_output=True, text=True, env=ENV,
                          timeout=1800)


def _tolerances() -> list[str]:
    return [arg for t in TINY_TOLERANCES for arg in ("--tolerance", t)]


@pytest.fixture(scope="module")
def tiny_build(tiny_checkpoints, tmp_path_factory, emulated):
    targets = [t for t in [*ON_ARM, NOT_ON_ARM] if t in installed_targets()]
    out = tmp_path_factory.mktemp("arm") / "out"
    done = _cli("build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", ",".join(targets),
                *_tolerances(), "--quiet")
    assert done.returncode == 0, done.stderr
    return out


def test_validate_on_two_emulated_arm_cpus_judges_each_artifact_there(tiny_build):
    done = _cli("validate", str(tiny_build), "--cpu", "arm64:cortex-a53", "--cpu", "arm64:cortex-a76", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] and result["artifacts"] == []  # --cpu without host: nothing re-run on this machine
    for cpu in ("arm64:cortex-a53", "arm64:cortex-a76"):
        rows = {r["target"]: r for r in result["elsewhere"][cpu]}
        assert set(rows) == {t for t in ON_ARM if t in installed_targets()}
        for target, row in rows.items():
            assert row["passed"] and row["decisions"] >= 100, (cpu, row)
            if target.endswith(":fp32"):  # fp32 is the same arithmetic on ARM: held to the fp32 rule
                assert row["max_abs"] <= 1e-4, (cpu, row)
    assert any(NOT_ON_ARM in note and "not validated on arm64:cortex-a53" in note for note in result["notes"])


def test_validate_cpu_names_the_allowed_cpus_in_one_line(tiny_build):
    done = _cli("validate", str(tiny_build), "--cpu", "arm64:cortex-a99")
    assert done.returncode == 2
    line, = done.stderr.strip().splitlines()
    assert "arm64:cortex-a99" in line and "arm64:cortex-a76" in line and "arm64:neoverse-n2" in line


def test_build_validate_on_records_a_verdict_per_cpu_in_manifest_card_and_report(tiny_checkpoints, tmp_path,
                                                                                 emulated):
    targets = [t for t in ("tflite:int8-static", NOT_ON_ARM) if t in installed_targets()]
    out = tmp_path / "out"
    done = _cli("build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", ",".join(targets),
                "--validate-on", "arm64:cortex-a76", *_tolerances(), "--quiet")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["settings"]["validate_on"] == ["arm64:cortex-a76"]
    for entry in manifest["artifacts"]:
        host, arm = entry["validated_on"]
        assert host["cpu_class"] == cpu_class(platform.machine(), cpu_flags()) and host["passed"] is True
        assert arm["spec"] == "arm64:cortex-a76"
        card = json.loads((out / entry["target"].replace(":", "-") / "distilforge.json").read_text())
        assert card["validated_on"] == entry["validated_on"]
        if entry["format"] == "tflite":
            assert arm["cpu_class"] == "arm64" and arm["passed"] is True and arm["emulated"].startswith("qemu-aarch64")
            assert arm["validation"]["worst"]["decisions"] >= 100
            assert entry["ladder"]["tried"][0]["clear_of_margin"]
        else:
            assert arm["passed"] is None and "torch" in arm["not_run"]
    report = _cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "arm64:cortex-a76 pass (emulated)" in (out / "report.md").read_text()
    assert _cli("validate", str(out), "--quiet").returncode == 0  # a schema-2 manifest re-validates


def test_a_failure_on_an_emulated_cpu_fails_the_artifact():
    """How a verdict elsewhere joins the host's (pipeline/judge.py judge_elsewhere's rule), on recorded figures."""
    from distilforge.pipeline.judge import merge_verdicts

    rule = Tolerance(max_abs=None, min_cosine=0.99, min_agreement=0.98, max_task_drop=1.0)
    passed = ValidationResult(passed=True, tolerance=rule, precision_class="int8", cases=[], failures=[])
    failed = replace(passed, passed=False, failures=["t: logits: agreement 97.00% over 100 decisions < 98.00%"])
    entry = ArtifactEntry(artifact=ExportedArtifact(target="t", files=[], inputs=[], outputs=[]), validation=passed,
                          format="tflite", precision="int8-static", runtime="LiteRT", validated_on={"cpu_class": "x"})
    entry.elsewhere = [Verdict(cpu={"spec": "arm64:cortex-a53"}, validation=failed),
                       Verdict(cpu={"spec": "arm64:cortex-a76"}, validation=passed),
                       Verdict(cpu={"spec": "arm64:cortex-a76"}, not_run="no runtime")]
    merge_verdicts(entry)
    assert not entry.passed
    assert entry.validation.failures == ["[arm64:cortex-a53] t: logits: agreement 97.00% over 100 decisions < 98.00%"]
    assert [v["passed"] for v in entry.to_dict()["validated_on"]] == [True, False, True, None]  # each CPU's own


def test_arm_runs_arms_int8_kernels_not_the_hosts(emulated, tmp_path):
    """u8 x s8 products that saturate x86's VPMADDUBSW (AVX2, AVX-512 without VNNI) are exact on ARM: under
    emulation the integer result is ARM's, whatever the host's class (docs/cpu-classes.md)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((64, 8), 127, np.int8)  # two adjacent products 255 * 127 add to 64770 > 32767 in int16
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "mmi",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [4, 64])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [4, 8])],
                              [numpy_helper.from_array(weights, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "mmi.onnx"))
    a = np.full((4, 64), 255, np.uint8)
    np.save(tmp_path / "a.npy", a)
    exact = a.astype(np.int64) @ weights.astype(np.int64)
    code = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider']); np.save(sys.argv[3], s.run(None, {'A': np.load(sys.argv[2])})[0])")
    args = [str(tmp_path / "mmi.onnx"), str(tmp_path / "a.npy")]
    subprocess.run([sys.executable, "-c", code, *args, str(tmp_path / "host.npy")], check=True, timeout=300)
    subprocess.run([*emulated.python, "-c", code, *args, str(tmp_path / "arm.npy")], env=emulated.env, check=True,
                   timeout=600)
    assert np.array_equal(np.load(tmp_path / "arm.npy"), exact)
    host_exact = np.array_equal(np.load(tmp_path / "host.npy"), exact)
    assert host_exact == (cpu_class(platform.machine(), cpu_flags()) not in SATURATING)


def test_max_is_refused_with_debian_12s_qemu_in_one_line():
    """The real qemu-aarch64 7.2 that Debian 12's qemu-user installs (.ci/run installs it) gives wrong INT8 results
    with -cpu max (an SVE bug): with it, arm64:max is refused, saying why."""
    found = shutil.which("qemu-aarch64")
    version = arm64._qemu_version(found) if found else None
    if not version or version >= arm64.MIN_QEMU_FOR_MAX:
        pytest.skip(f"needs Debian 12's qemu-aarch64 7.2 on PATH (found {found}: {version})")
    old = arm64.Arm64Runtime(qemu=Path(found), sysroot=Path("/nonexistent"), site=Path("/nonexistent"),
                             qemu_version=version)
    with pytest.raises(UsageError) as caught:
        old.command("max")
    assert "\n" not in str(caught.value) and "SVE" in str(caught.value)
