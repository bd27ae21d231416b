"""A killed build lists nothing half-made and the next run completes; two builds cannot share a directory."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_bad_input import assert_one_line_error, run_cli

from distilforge.artifacts.layout import IN_PROGRESS, MANIFEST, exclusive


def test_a_second_build_into_a_locked_directory_fails_at_once(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    with exclusive(out):  # a build in progress holds this lock
        result = run_cli("build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", "onnx:fp32")
    assert_one_line_error(result, str(out), "another distilforge build is writing into it")
    assert sorted(p.name for p in out.iterdir()) == [".distilforge.lock"]


@pytest.mark.slow
def test_killed_build_lists_nothing_and_the_rerun_completes(tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "distilforge", "build", str(tiny_checkpoints["token"]), "--out", str(out),
            "--targets", "onnx:fp32,torchscript:fp32,tflite:fp32", "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(args, env=env, capture_output=True, timeout=900)  # a complete build to overwrite
    assert first.returncode == 0, first.stderr
    build = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (out / IN_PROGRESS).exists() and build.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # mid-way: the old manifest is retired, artifacts are being replaced
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert not (out / MANIFEST).exists()  # nothing is vouched for

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)  # no --force needed
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert [a["target"] for a in manifest["artifacts"]] == ["onnx:fp32", "torchscript:fp32", "tflite:fp32"]
    assert not (out / IN_PROGRESS).exists() and not list(out.glob(".staging-*"))
    check = subprocess.run([sys.executable, "-m", "distilforge", "validate", str(out), "--quiet"], env=env,
                           capture_output=True, text=True, timeout=900)
    assert check.returncode == 0, check.stderr
