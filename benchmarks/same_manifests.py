"""Does a refactor change what a build writes? Builds the same checkpoints with two commits and compares the
manifests byte for byte (issue 25: "no change of behaviour").

    .venv/bin/python benchmarks/same_manifests.py [--before REV] [--after REV] [--default-model] [--heads a,b]
                                                   [--jobs N] [--work DIR] [--out FILE]

Each commit is checked out in turn into one worktree at one path and run with this venv's Python from there
(`PYTHONPATH` is that worktree), because torch.onnx and TorchScript write the traced code's file paths and lines
into their files (docs/determinism.md): two paths would differ for that reason alone. Checkpoints: every tiny
head of tests/tiny.py (seeded), and with `--default-model` the built-in default model; every installed target,
`build --jobs N` (default 2). A manifest lists each file's sha256, so equal manifests mean equal artifacts too.
Two things differ by design and are compared apart: each artifact's cache keys, which fold in a fingerprint of
distilforge's own code (artifacts/cache.py: a code change must not reuse an older build's artifact), and the
manifest's digest, which covers them. `--compare WORK` compares the outputs of an earlier run again.
Writes FILE (default benchmarks/results/same_manifests.<cpu class>.json) and prints one line per checkpoint.
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
BEFORE = "0d46a10"  # the last commit before issue 25's refactor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--default-model", action="store_true")
    parser.add_argument("--heads", help="tiny heads, comma-separated (default: every one in tests/tiny.py)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path, metavar="WORK", help="compare an earlier run's outputs again")
    args = parser.parse_args()
    if args.compare:
        return _report(args, json.loads((args.compare / "run.json").read_text()), args.compare)
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import TINY_MODELS, make_checkpoint

    work = args.work or Path(tempfile.mkdtemp(prefix="distilforge-same-"))
    revs = {which: _resolve(rev) for which, rev in (("before", args.before), ("after", args.after))}
    heads = args.heads.split(",") if args.heads else [t.key for t in TINY_MODELS]
    checkpoints: dict[str, Path | None] = {h: make_checkpoint(work / "checkpoints", h) for h in heads}
    if args.default_model:
        checkpoints["default-model"] = None
    tree = work / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revs["before"]], check=True,
                   capture_output=True)
    seconds: dict[str, float] = {}
    try:
        for which, rev in revs.items():
            subprocess.run(["git", "-C", str(tree), "checkout", "--quiet", "--detach", rev], check=True)
            started = time.monotonic()
            for name, checkpoint in checkpoints.items():
                _build(tree, checkpoint, work / which / name, args.jobs)
            seconds[which] = round(time.monotonic() - started, 1)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    run = {"before": revs["before"], "after": revs["after"], "jobs": args.jobs, "seconds": seconds,
           "checkpoints": list(checkpoints)}
    (work / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return _report(args, run, work)


def _report(args: argparse.Namespace, run: dict, work: Path) -> int:
    from distilforge.cpu import this_cpu_class

    results = {name: _compare(work / "before" / name, work / "after" / name) for name in run["checkpoints"]}
    for name, result in results.items():
        print(f"{name:16} {result}")
    record = {**run, "cpu_class": this_cpu_class(), "manifests": results}
    out = args.out or ROOT / "benchmarks" / "results" / f"same_manifests.{record['cpu_class']}.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0 if all(r.startswith("equal") for r in results.values()) else 1


def _resolve(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def _build(tree: Path, checkpoint: Path | None, out: Path, jobs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "distilforge", "build", *([str(checkpoint)] if checkpoint else []),
               "--out", str(out), "--keep-going", "--jobs", str(jobs), "--quiet"]
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if not (out / "manifest.json").exists():
        raise SystemExit(f"{out.name}: no manifest (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def _compare(before: Path, after: Path) -> str:
    """"equal" (byte for byte), "equal but the cache keys and digest" (see the module docstring), or what
    differs: the top-level keys, and the artifacts whose entries differ."""
    a, b = (before / "manifest.json").read_bytes(), (after / "manifest.json").read_bytes()
    if a == b:
        return "equal"
    old, new = _without_code_keys(json.loads(a)), _without_code_keys(json.loads(b))
    if old == new and json.dumps(old, indent=2) == json.dumps(new, indent=2):
        return "equal but the cache keys and digest"
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k != "artifacts"]
    pairs = [(x, y) for x, y in zip(old.get("artifacts", []), new.get("artifacts", []), strict=False) if x != y]
    only_bytes = [x["target"] for x, y in pairs if _without_hashes(x) == _without_hashes(y)]
    other = [x["target"] for x, y in pairs if x["target"] not in only_bytes]
    if not keys and not other:
        return f"equal but the cache keys and digest, and the file bytes of {only_bytes} (every figure equal)"
    return f"differ: keys {keys}, artifacts {other}, file bytes only {only_bytes}"


def _without_hashes(entry: dict) -> dict:
    return {**entry, "files": [{k: v for k, v in f.items() if k != "sha256"} for f in entry.get("files", [])]}


def _without_code_keys(manifest: dict) -> dict:
    manifest.pop("digest", None)
    for entry in manifest.get("artifacts", []):
        entry.pop("cache", None)
    return manifest


if __name__ == "__main__":
    raise SystemExit(main())
