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


def test_a_second_build_into_a_directory_another_process_writes_fails_at_once_naming_it(tiny_checkpoints, tmp_path):
    """Two real processes: one holds `out` (as a build, merge or build-many does for its whole run); a build into it
    refuses at once, naming the holder. Killed, the holder leaves no lock behind: the kernel drops it."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from distilforge.artifacts.layout import exclusive\n"
                               "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", "onnx:fp32")
        assert_one_line_error(result, str(out), "another distilforge process is writing into it",
                              f"(pid {holder.pid}: ")
        assert sorted(p.name for p in out.iterdir()) == [".distilforge.lock"]
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out):  # nothing stuck
        assert (out / ".distilforge.lock").read_text().startswith(f"pid {os.getpid()}: ")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_records_take_the_mode_every_other_file_gets(tmp_path, umask):
    """manifest.json (and every record written through a temporary file) is not left 0600 by mkstemp."""
    from distilforge.artifacts.layout import write_json_atomic

    before = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "manifest.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(before)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 \
        == 0o666 & ~umask


# before the first write; in the first target's export; in a later one's, the earlier targets finished; in the last
# validation, before the manifest (each point costs two or three builds: ~30 s)
KILL_POINTS = ["checkpoint: loading", "onnx:fp32: exporting", "tflite:fp32: exporting", "tflite:fp32: validating"]


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
    # TMPDIR: what a killed build's temporary files are left in (its log, an exporter's folder) goes with tmp_path
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    first = subprocess.run(args, env=env, capture_output=True, timeout=900)  # a complete build to overwrite
    assert first.returncode == 0, first.stderr
    complete = (out / MANIFEST).read_bytes()
    assert {(out / MANIFEST).stat().st_mode & 0o777} == {p.stat().st_mode & 0o777 for p in out.rglob("*")
                                                         if p.is_file() and not p.name.startswith(".")}
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
