"""build-many on a two-node local Ray cluster, with a worker killed mid-run, against sequential builds.

    .venv/bin/python benchmarks/build_many.py [--targets T,...] [--work DIR] [--no-kill]

Three tiny checkpoints (tests/tiny.py: token, qa, seq-single) x every installed target (or --targets), with the
tests' INT8 rules for tiny random models (tests/conftest.py: TINY_TOLERANCES). It starts
`ray start --head` and a second node joined to it (one CPU each), runs `distilforge build-many` with one thread
per task, SIGKILLs a Ray worker 3 s into a task, then runs the three sequential `distilforge build`s (one thread,
one after the other) and checks that every merged manifest equals its sequential one byte for byte. Prints the wall
times, their ratio, how the tasks spread over the nodes, and saves it all to WORK/build_many.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import TINY_TOLERANCES  # noqa: E402
from localray import RAY_ENV, Killer, two_node_cluster  # noqa: E402
from tiny import TINY_MODELS, make_checkpoint  # noqa: E402

KEYS = ("token", "qa", "seq-single")
DISTILFORGE = str(Path(sys.executable).with_name("distilforge"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", help="comma-separated (default: every installed target)")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, kept)")
    parser.add_argument("--no-kill", action="store_true", help="do not kill a worker")
    args = parser.parse_args()
    os.environ.update(RAY_ENV)
    work = args.work or Path(tempfile.mkdtemp(prefix="build-many-bench-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tiny = {t.key: t for t in TINY_MODELS}
    checkpoints = {k: make_checkpoint(work / "checkpoints", tiny[k]) for k in KEYS}
    targets = args.targets.split(",") if args.targets else None
    plan = work / "plan.toml"
    plan.write_text(("targets = " + json.dumps(targets) + "\n" if targets else "") + "threads = 1\n\n"
                    + f"[options]\ntolerance = {json.dumps(TINY_TOLERANCES)}\n\n"
                    + "".join(f'[[checkpoint]]\npath = "{p}"\nname = "{k}"\n\n' for k, p in checkpoints.items()))

    with two_node_cluster() as address:
        killer = Killer(after=3.0)
        if not args.no_kill:
            killer.start()
        started = time.monotonic()
        run = subprocess.run([DISTILFORGE, "build-many", str(plan), "--out", str(work / "many"), "--ray-address",
                              address, "--json"], capture_output=True, text=True)
        many_wall = time.monotonic() - started
        killer.stop.set()
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:])
        return 1
    summary = json.loads(run.stdout)

    started = time.monotonic()
    for key, path in checkpoints.items():
        cmd = [DISTILFORGE, "build", str(path), "--out", str(work / "sequential" / key), "--threads", "1", "-q",
               *(f"--tolerance={t}" for t in TINY_TOLERANCES)]
        subprocess.run(cmd + (["--targets", ",".join(targets)] if targets else []), check=True)
    sequential_wall = time.monotonic() - started

    identical = {k: (work / "many" / k / "manifest.json").read_bytes()
                 == (work / "sequential" / k / "manifest.json").read_bytes() for k in KEYS}
    spread: dict[str, int] = {}
    for c in summary["checkpoints"]:
        for node, count in c["nodes"].items():
            spread[node] = spread.get(node, 0) + count
    result = {"targets": summary["checkpoints"][0]["targets"],
              "tasks": sum(c["targets"] for c in summary["checkpoints"]),
              "build_many_wall_s": round(many_wall, 1), "sequential_wall_s": round(sequential_wall, 1),
              "ratio_many_to_sequential": round(many_wall / sequential_wall, 3),
              "tasks_per_node": spread, "nodes": summary["nodes"],
              "killed_worker_pid": killer.killed, "identical_manifests": identical,
              "task_seconds": round(sum(c["task_seconds"] for c in summary["checkpoints"]), 1)}
    (work / "build_many.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"work: {work}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
