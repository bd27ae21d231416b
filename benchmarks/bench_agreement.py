"""Does the fast default bench give the ratios a long one gives? One machine, one build, back-to-back runs.

`distilforge bench` stops its rounds once every p50 ratio to eager is known within ±10 % (a 95 % bootstrap interval
over whole rounds). This script runs, on the same build, the default bench, then a long fixed one (--rounds 20
--runs 10: 200 latency runs per candidate), then the default again, and compares every ratio the report prints:
each candidate's p50 ÷ eager's, ÷ its floor, and ours ÷ Optimum's. A ratio of a fast run agrees with the long
run's when they differ by no more than their stated errors allow, combined in quadrature (`ratios` says which
errors). The second fast run shows how far two fast runs move apart.

usage: python benchmarks/bench_agreement.py DIR [--long-rounds N] [--long-runs N] [--no-peer] [--out FILE]

DIR is a build with bench's candidates in it (`make demo` leaves one in artifacts/); its bench.json is rewritten
by each run, and left as the last (fast) run wrote it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distilforge.bench import BenchSettings, bench_dir  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def run(out: Path, settings: BenchSettings, peer: bool, label: str) -> tuple[dict, float]:
    say = lambda msg: print(f"[bench_agreement {label}] {msg}", file=sys.stderr)  # noqa: E731
    start = time.monotonic()
    report = bench_dir(out, settings=settings, progress=say, peer=peer).report
    return report, time.monotonic() - start


def ratios(report: dict) -> dict[str, tuple[float, float]]:
    """name -> (ratio, its stated relative error): every ratio the report prints, with the row's own
    `ratio_eager_rel_error` / `ratio_floor_rel_error` (bootstrap over rounds); ours ÷ Optimum's the two rows'
    ratio-to-eager errors combined."""
    rows = {r["target"]: r for r in report["results"] if r.get("latency_ms")}
    to_eager = {t: r.get("ratio_eager_rel_error") or 0.0 for t, r in rows.items()}
    p50_error = {t: r.get("p50_rel_error") or 0.0 for t, r in rows.items()}
    out = {}
    for t, r in rows.items():
        if t != "eager" and r.get("ratio_eager"):
            out[f"{t} / eager"] = (r["ratio_eager"], to_eager[t])
        if r.get("ratio_floor"):
            out[f"{t} / floor"] = (r["ratio_floor"], r.get("ratio_floor_rel_error") or p50_error[t])
    for c in (report.get("peer") or {}).get("comparisons") or []:
        out[f"{c['ours']} / {c['peer']}"] = (c["ratio"], math.hypot(to_eager.get(c["ours"], 0.0),
                                                                     to_eager.get(c["peer"], 0.0)))
    return out


def compare(fast: dict, long: dict) -> list[dict]:
    a, b = ratios(fast), ratios(long)
    rows = []
    for name in sorted(set(a) & set(b)):
        (rf, ef), (rl, el) = a[name], b[name]
        allowed = math.hypot(ef, el)
        rows.append({"ratio": name, "fast": rf, "long": rl, "difference": rf / rl - 1, "allowed": allowed,
                     "agrees": abs(rf / rl - 1) <= allowed})
    return rows


def summary(rows: list[dict]) -> dict:
    diffs = sorted(abs(r["difference"]) for r in rows)
    return {"ratios": len(rows), "agree": sum(r["agrees"] for r in rows),
            "median_abs_difference": diffs[len(diffs) // 2] if diffs else None,
            "max_abs_difference": diffs[-1] if diffs else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--long-rounds", type=int, default=20)
    parser.add_argument("--long-runs", type=int, default=10)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--also-fixed", metavar="R,N", help="also a fixed run of R rounds x N runs (e.g. 8,10: the "
                        "default before the adaptive plan), compared with the long run the same way")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/bench_agreement.<cpu class>.json")
    args = parser.parse_args()
    peer = not args.no_peer

    first, first_s = run(args.dir, BenchSettings(), peer, "fast 1")
    long, long_s = run(args.dir, BenchSettings.fixed(args.long_rounds, args.long_runs), peer, "long")
    second, second_s = run(args.dir, BenchSettings(), peer, "fast 2")
    against_long = compare(first, long) + compare(second, long)
    between_fast = compare(first, second)
    fixed = None
    if args.also_fixed:
        rounds, runs = (int(x) for x in args.also_fixed.split(","))
        fixed_report, fixed_s = run(args.dir, BenchSettings.fixed(rounds, runs), peer, f"fixed {rounds}x{runs}")
        fixed_rows = compare(fixed_report, long)
        fixed = {"plan": {"rounds": rounds, "runs": runs}, "seconds": round(fixed_s, 1), **summary(fixed_rows),
                 "rows": fixed_rows, "run": fixed_report}
    result = {
        "machine": long["machine"], "threads": long["threads"],
        "seconds": {"fast_1": round(first_s, 1), "long": round(long_s, 1), "fast_2": round(second_s, 1)},
        "long_plan": {"rounds": args.long_rounds, "runs": args.long_runs},
        "fast_plan": first["method"]["stopping"],
        "fast_vs_long": {**summary(against_long), "rows": against_long},
        "fast_vs_fast": {**summary(between_fast), "rows": between_fast},
        "fixed_vs_long": fixed,
        "runs": {"fast_1": first, "long": long, "fast_2": second},
    }
    out = args.out or RESULTS / f"bench_agreement.{long['machine']['cpu_class']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["fast_vs_long"]
    print(f"{long['machine']['cpu']} ({long['machine']['cpu_class']}), {long['threads']} threads")
    print(f"seconds: fast {first_s:.0f} and {second_s:.0f}, long {long_s:.0f}")
    print(f"fast vs long: {s['agree']}/{s['ratios']} ratios within their stated error; |difference| median "
          f"{s['median_abs_difference']:.1%}, max {s['max_abs_difference']:.1%}")
    f = result["fast_vs_fast"]
    print(f"fast vs fast: {f['agree']}/{f['ratios']} within; |difference| median {f['median_abs_difference']:.1%}, "
          f"max {f['max_abs_difference']:.1%}")
    if fixed:
        print(f"fixed {fixed['plan']['rounds']}x{fixed['plan']['runs']} ({fixed['seconds']:.0f} s) vs long: "
              f"{fixed['agree']}/{fixed['ratios']} within; |difference| median {fixed['median_abs_difference']:.1%}, "
              f"max {fixed['max_abs_difference']:.1%}")
    for r in against_long:
        if not r["agrees"]:
            print(f"  outside: {r['ratio']}: fast {r['fast']:.3f} vs long {r['long']:.3f} "
                  f"({r['difference']:+.1%}, allowed ±{r['allowed']:.1%})")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
