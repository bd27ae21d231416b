"""INT8 from measured layer sensitivity (issue 26): ours vs the peer's INT8, and against the in-run INT8 GEMM floor.

One run on this machine:

1. `distilforge build` of the default model (or `--checkpoint DIR`) for the INT8 targets asked for plus
   onnx:fp32-optimized, one target at a time, timed; with `--before REV`, the same build from that commit's source
   (a git worktree), timed the same way, for the build-time ratio;
2. `distilforge bench` of that build: our artifacts, Optimum's export and INT8 of the same checkpoint, eager
   PyTorch and the INT8 GEMM floor, in the same interleaved rounds;
3. from manifest.json and bench.json: each INT8 target's kept recipe, its float layer groups, pass/fail, p50 and
   p50 / floor; the fastest passing onnx:int8-* over Optimum's INT8; the best passing INT8 over the floor;
   ExecuTorch INT8 over the floor.

usage: python benchmarks/int8_sensitivity.py [--targets T,...] [--checkpoint DIR] [--before REV] [--work DIR]
                                             [--out FILE]
DistilBERT-base dimensions (random weights): benchmarks/onnx_int8_speed.py builds through the same ladder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INT8_TARGETS = ("onnx:int8-dynamic", "onnx:int8-static", "torchscript:int8-dynamic", "openvino:int8-weights",
                "openvino:int8-static", "tflite:int8-dynamic", "tflite:int8-static", "executorch:int8-dynamic",
                "executorch:int8-static")


def build(source: Path, out: Path, targets: list[str], checkpoint: str | None) -> float:
    """Seconds for one `distilforge build` from `source` (one target at a time, as the registry's costs are)."""
    command = [sys.executable, "-m", "distilforge", "build", *([checkpoint] if checkpoint else []), "--out", str(out),
               "--targets", ",".join(targets), "--jobs", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(source), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some target failed its rule, which the figures below show
        raise SystemExit(f"build from {source} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def bench(out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "distilforge", "bench", str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench failed: {done.stderr[-2000:]}")


def rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    results = {r["target"]: r for r in json.loads((out / "bench.json").read_text())["results"]}
    table = []
    for entry in manifest["artifacts"]:
        ladder = entry.get("ladder") or {}
        kept = next((t for t in ladder.get("tried", []) if t["name"] == ladder.get("kept")), {})
        timed = results.get(entry["target"], {})
        table.append({"target": entry["target"], "passed": entry["validation"] and entry["validation"]["passed"],
                      "kept": ladder.get("kept"), "float_layers": kept.get("float_layers"),
                      "tried": [t["name"] for t in ladder.get("tried", [])],
                      "min_cosine": (entry["validation"] or {}).get("worst", {}).get("min_cosine"),
                      "p50_ms": (timed.get("latency_ms") or {}).get("p50"), "x_floor": timed.get("ratio_floor"),
                      "most_costly": [c["layer"] for c in (ladder.get("sensitivity") or {}).get("layers", [])[:4]]})
    peer = results.get("optimum:int8", {})
    table.append({"target": "optimum:int8", "passed": (peer.get("validation") or {}).get("passed"),
                  "p50_ms": (peer.get("latency_ms") or {}).get("p50"), "x_floor": peer.get("ratio_floor")})
    return table


def ratios(table: list[dict]) -> dict[str, float | None]:
    int8 = [r for r in table if r["target"] in INT8_TARGETS and r["passed"] and r["p50_ms"]]
    peer = next((r for r in table if r["target"] == "optimum:int8"), {})
    onnx = [r for r in int8 if r["target"].startswith("onnx:")]
    et = [r for r in int8 if r["target"].startswith("executorch:")]
    return {"fastest_passing_onnx_int8_over_optimum_int8":
            min(r["p50_ms"] for r in onnx) / peer["p50_ms"] if onnx and peer.get("p50_ms") else None,
            "best_passing_int8_over_floor": min((r["x_floor"] for r in int8 if r["x_floor"]), default=None),
            "executorch_int8_over_floor": min((r["x_floor"] for r in et if r["x_floor"]), default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(INT8_TARGETS))
    parser.add_argument("--checkpoint", help="a checkpoint directory (default: the built-in model)")
    parser.add_argument("--before", help="also build from this commit and report the build-time ratio")
    parser.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="int8-sensitivity-"))
    targets = ["onnx:fp32-optimized", *args.targets.split(",")]
    result: dict = {"command": " ".join(["python", *sys.argv]), "cpu": platform.processor() or platform.machine(),
                    "targets": targets}
    result["build_s"] = build(ROOT, work / "after", targets, args.checkpoint)
    if args.before:
        source = work / "before-src"
        if not source.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(source), args.before],
                           check=True, capture_output=True)
        result["before"] = args.before
        result["build_s_before"] = build(source, work / "before", targets, args.checkpoint)
        result["build_time_ratio"] = result["build_s"] / result["build_s_before"]
    bench(work / "after")
    result["rows"] = rows(work / "after")
    result["ratios"] = ratios(result["rows"])
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
