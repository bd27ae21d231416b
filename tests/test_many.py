"""Builds beyond one process: `build --shard K/N` + `merge` (a CI matrix), and `build-many` on a real two-node Ray
cluster on this machine with a worker killed mid-run. The merged manifests must be the bytes one sequential build
writes. (docs/build-many.md; the refusals of merge and of a bad plan are cases of tests/test_bad_input.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_TOLERANCES, installed_targets
from localray import RAY_ENV, Killer, two_node_cluster

from distilforge.pipeline import Part
from distilforge.targets import TARGETS

# one pytest-xdist worker runs the Ray tests, one after another (two local clusters at once could want one port)
pytestmark = pytest.mark.xdist_group("ray")

# cheap targets of three formats (the every-target run is benchmarks/build_many.py)
SOME = [t for t in ("onnx:fp32", "torchscript:fp32", "onnx:int8-dynamic", "openvino:fp32") if t in installed_targets()]


def cli(*args: str, env: dict[str, str] | None = None, timeout: int = 1200,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m distilforge ...`; from `cwd`, the installed console script (`-m` would put `cwd` on the driver's
    own sys.path)."""
    command = [str(Path(sys.executable).with_name("distilforge"))] if cwd else [sys.executable, "-m", "distilforge"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=timeout)


TOLERANCES = [f"--tolerance={t}" for t in TINY_TOLERANCES]


def sequential(checkpoint: Path, out: Path, targets: list[str], *extra: str) -> bytes:
    result = cli("build", str(checkpoint), "--out", str(out), "--targets", ",".join(targets), "-q", *TOLERANCES,
                 *extra)
    assert result.returncode == 0, result.stderr
    return (out / "manifest.json").read_bytes()


def test_shards_are_round_robin_slices_that_cover_every_target_once():
    names = list(TARGETS.values())
    slices = [Part(index=k, count=4).pick(names) for k in range(1, 5)]
    assert sorted(t.name for s in slices for t in s) == sorted(TARGETS)
    assert max(len(s) for s in slices) - min(len(s) for s in slices) <= 1
    assert {t.format for t in slices[0]} != {slices[0][0].format}  # formats spread over the shards


def test_merged_shards_give_the_unsharded_manifest_byte_for_byte(tiny_checkpoints, tmp_path):
    ckpt, targets = tiny_checkpoints["token"], ",".join(SOME)
    whole = sequential(ckpt, tmp_path / "whole", SOME)
    for k in (1, 2, 3):
        result = cli("build", str(ckpt), "--out", str(tmp_path / f"s{k}"), "--targets", targets, "--shard", f"{k}/3",
                     "-q", *TOLERANCES)
        assert result.returncode == 0, result.stderr
        part = json.loads((tmp_path / f"s{k}" / "manifest.json").read_text())["part"]
        assert part == {"shard": f"{k}/3", "targets": SOME[k - 1::3]}
    # overlapping parts that agree are fine (a retried CI job uploaded twice)
    result = cli("merge", *(str(tmp_path / s) for s in ("s1", "s2", "s3", "s1")), "--out", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "merged" / "manifest.json").read_bytes() == whole
    assert cli("validate", str(tmp_path / "merged"), "-q").returncode == 0


def test_plain_build_does_not_import_ray(tiny_checkpoints, tmp_path):
    code = ("import sys; from distilforge.cli import main; "
            f"rc = main(['build', {str(tiny_checkpoints['seq-single'])!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'--targets', 'torchscript:fp32', '-q']); assert rc == 0; assert 'ray' not in sys.modules, 'ray imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr


def _plan(path: Path, checkpoints: dict[str, Path], targets: list[str]) -> Path:
    path.write_text(f"targets = {json.dumps(targets)}\nthreads = 1\n\n"
                    f"[options]\ntolerance = {json.dumps(TINY_TOLERANCES)}\n\n"
                    + "".join(f'[[checkpoint]]\nname = "{n}"\npath = "{p}"\n\n' for n, p in checkpoints.items()))
    return path


def _broken_checkpoint(tiny: Path, where: Path) -> Path:
    """Config and tokenizer fine, weights unreadable: it fails in the tasks, not when the plan is read."""
    shutil.copytree(tiny, where)
    (where / "model.safetensors").write_bytes(b"not a safetensors file")
    return where


@pytest.mark.skipif(not shutil.which("ps"), reason="the killer finds Ray workers with ps")
def test_build_many_on_two_local_nodes_survives_a_killed_worker_and_equals_sequential_builds(
        tiny_checkpoints, tmp_path):
    keys = ("token", "qa", "seq-single")
    checkpoints = {k: tiny_checkpoints[k] for k in keys}
    checkpoints["broken"] = _broken_checkpoint(tiny_checkpoints["seq-single"], tmp_path / "broken")
    plan = _plan(tmp_path / "plan.toml", checkpoints, SOME)
    root = tmp_path / "root"
    # run from a directory holding another `distilforge` (another checkout): the workers must import the installed
    # package, as the driver does (Ray put the driver's directory first on their sys.path: every task failed)
    decoy = tmp_path / "checkout"
    (decoy / "distilforge").mkdir(parents=True)
    (decoy / "distilforge" / "__init__.py").write_text("raise ImportError('the checkout in the working directory')\n")
    with two_node_cluster() as address:
        killer = Killer(after=2.0)
        killer.start()
        first = cli("build-many", str(plan), "--out", str(root), "--ray-address", address, "--json", env=RAY_ENV,
                    cwd=decoy)
        killer.stop.set()
        second = cli("build-many", str(plan), "--out", str(root), "--ray-address", address, "--json", env=RAY_ENV)

    assert killer.killed is not None, "no worker was seen running a task"
    # the broken checkpoint fails (exit 1), once, and the others are finished
    assert first.returncode == 1, first.stderr
    failed = [line for line in first.stderr.splitlines() if line.startswith("distilforge: FAILED")]
    assert len(failed) == 1 and "broken" in failed[0] and "safetensors" in failed[0], first.stderr
    summary = json.loads(first.stdout)
    by_name = {c["name"]: c for c in summary["checkpoints"]}
    assert by_name["broken"]["error"] and not (root / "broken").exists()
    assert len(summary["nodes"]) == 2
    assert sum(sum(c["nodes"].values()) for c in summary["checkpoints"]) == len(checkpoints) * len(SOME)
    for key in keys:
        assert by_name[key]["passed"] == len(SOME), by_name[key]
        merged = (root / key / "manifest.json").read_bytes()
        assert merged == sequential(checkpoints[key], tmp_path / "seq" / key, SOME, "--threads", "1"), key
        assert not list((root / key).glob(".staging-*")) and not (root / key / ".distilforge-cache.json").exists()
    assert not list(root.glob(".staging-*"))
    # a second run over the same ROOT exports nothing again, and leaves the manifests as they were
    assert second.returncode == 1, second.stderr
    again = {c["name"]: c for c in json.loads(second.stdout)["checkpoints"]}
    for key in keys:
        assert again[key]["reused"] == len(SOME), again[key]
        assert (root / key / "manifest.json").read_bytes() == (tmp_path / "seq" / key / "manifest.json").read_bytes()
