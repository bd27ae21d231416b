"""A killed build lists nothing half-made and the next run completes; two builds cannot share a directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_bad_input import assert_one_line_error, run_cli

from distilforge.artifacts.layout import CACHE, IN_PROGRESS, MANIFEST, exclusive
from distilforge.artifacts.manifest import verify_files


def test_a_second_build_into_a_locked_directory_fails_at_once(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    with exclusive(out):  # a build in progress holds this lock
        result = run_cli("build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", "onnx:fp32")
    assert_one_line_error(result, str(out), "another distilforge build is writing into it")
    assert sorted(p.name for p in out.iterdir()) == [".distilforge.lock"]


KILL_POINTS = ["checkpoint: loading", "onnx:fp32: exporting", "onnx:fp32: validating", "torchscript:fp32: exporting",
               "tflite:fp32: exporting", "tflite:fp32: validating"]


def kill_during(args: list[str], env: dict, point: str, delay: float) -> bool:
    """SIGKILL the build `delay` s after it announces `point`; False if it had moved past that step, or finished.

    A tiny model's steps can be shorter than the delay (tflite validation takes ~0.3 s), so a kill that landed
    in a later step, or after the manifest was written, is told apart instead of being blamed on `point`.
    """
    build = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in build.stderr:
        if point in line:
            time.sleep(delay)  # inside the step, not at its edge
            break
    build.send_signal(signal.SIGKILL)
    build.wait()
    later = [line for line in build.stderr if line.startswith("[distilforge]")]  # what it printed before dying
    build.stderr.close()
    return build.returncode == -signal.SIGKILL and not later


@pytest.mark.slow
def test_builds_killed_at_several_points_list_nothing_and_the_rerun_completes(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "distilforge", "build", str(tiny_checkpoints["token"]), "--out", str(out),
            "--targets", "onnx:fp32,torchscript:fp32,tflite:fp32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(args, env=env, capture_output=True, timeout=900)  # a complete build to overwrite
    assert first.returncode == 0, first.stderr
    complete = (out / MANIFEST).read_bytes()
    for point in KILL_POINTS:
        # --rebuild: export everything again, so the kill lands while artifacts are being replaced
        landed = kill_during([*args, "--rebuild"], env, point, delay=0.3)
        if not landed or (point != "checkpoint: loading" and (out / MANIFEST).exists()):
            # the step was over before the kill: restore the complete build and kill as soon as the step starts
            assert subprocess.run(args, env=env, capture_output=True, timeout=900).returncode == 0, point
            assert kill_during([*args, "--rebuild"], env, point, delay=0.0), point
        if (out / MANIFEST).exists():  # killed before the build's first write: the last build still stands
            assert point == "checkpoint: loading" and (out / MANIFEST).read_bytes() == complete, point
            assert [p for a in json.loads(complete)["artifacts"] for p in verify_files(out, a)] == []
        else:
            assert (out / IN_PROGRESS).exists(), point  # nothing is vouched for, and the directory says why

        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)  # no --force needed
        assert rerun.returncode == 0, (point, rerun.stderr)
        manifest = json.loads((out / MANIFEST).read_text())
        assert [a["target"] for a in manifest["artifacts"]] == ["onnx:fp32", "torchscript:fp32", "tflite:fp32"]
        assert all(a["validation"]["passed"] for a in manifest["artifacts"]), point
        assert [p for a in manifest["artifacts"] for p in verify_files(out, a)] == [], point
        assert not (out / IN_PROGRESS).exists() and not list(out.glob(".staging-*")), point
        assert not (out / CACHE).exists(), point
        assert (out / MANIFEST).read_bytes() == complete, point  # same inputs, same manifest
    check = subprocess.run([sys.executable, "-m", "distilforge", "validate", str(out), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stderr
