"""TorchScript INT8 speed: torchscript:int8-dynamic against torchscript:fp32 and eager, on the default model.

One run on this machine, batch 1 x sequence 128, 2 threads: distilforge builds both targets from the built-in
default model (DistilBERT-base dimensions) and `distilforge bench` times them with eager PyTorch and the GEMM
floors, each in its own worker process, in interleaved rounds. The figures are ratios of p50 latencies from
that one run. `--int8-cpu native` builds the INT8 target for this machine's CPU class only (torch._int_mm on a
VNNI CPU; FBGEMM with 7-bit weights elsewhere, the same as the portable default).

usage: python benchmarks/torchscript_int8_speed.py [--rounds N] [--int8-cpu portable|native] [--workdir DIR]
                                                   [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distilforge.bench import BenchSettings, bench_dir  # noqa: E402
from distilforge.options import BuildOptions  # noqa: E402
from distilforge.pipeline import build  # noqa: E402

TARGETS = ["torchscript:fp32", "torchscript:int8-dynamic"]
THREADS = 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    parser.add_argument("--int8-cpu", choices=("portable", "native"), default="portable")
    parser.add_argument("--workdir", type=Path, help="where the artifacts go (default: a new temporary directory)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    out = (args.workdir or Path(tempfile.mkdtemp(prefix="ts-int8-speed-"))) / "artifacts"

    say = lambda msg: print(f"[torchscript_int8_speed] {msg}", file=sys.stderr)  # noqa: E731
    built = build(None, out, targets=TARGETS, progress=say, options=BuildOptions(int8_cpu=args.int8_cpu))
    if not built.passed:
        print("a target failed validation; see " + str(out / "manifest.json"), file=sys.stderr)
        return 1
    report = bench_dir(out, threads=THREADS, targets=TARGETS, settings=BenchSettings.fixed(args.rounds),
                       progress=say, peer=False).report
    rows = {r["target"]: r for r in report["results"]}
    p50 = {t: rows[t]["latency_ms"]["p50"] for t in [*TARGETS, "eager"]}
    int8 = "torchscript:int8-dynamic"
    result = {
        "batch": 1, "seq": report["method"]["seq"], "threads": THREADS, "rounds": args.rounds,
        "int8_cpu": args.int8_cpu, "kernel": built.manifest["artifacts"][1]["details"]["kernel"],
        "rung": built.manifest["artifacts"][1]["details"]["rung"],
        "rounds_used": report["method"]["rounds_used"], "machine": report["machine"], "p50_ms": p50,
        "int8_over_fp32": p50[int8] / p50["torchscript:fp32"],
        "int8_over_eager": p50[int8] / p50["eager"],
        "int8_over_int8_floor": rows[int8].get("ratio_floor"),
        "size_ratio": rows[int8]["bytes"] / rows["torchscript:fp32"]["bytes"],
    }
    for key in ("int8_over_fp32", "int8_over_eager", "int8_over_int8_floor", "size_ratio"):
        print(f"{key:>22}: {result[key]:.3f}" if result[key] is not None else f"{key:>22}: n/a")
    print(f"{'p50 ms':>22}: " + ", ".join(f"{t} {v:.2f}" for t, v in p50.items()))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
