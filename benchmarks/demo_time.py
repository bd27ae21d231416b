"""How long `make demo` takes, where the time goes, and how well the build's ETA held (issue 24).

    .venv/bin/python benchmarks/demo_time.py [--jobs N] [--also-jobs-1] [--update-costs] [--work DIR] [--out FILE]

Runs the demo's three commands as `make demo` does (`build --out DIR --keep-going --bench`, `report`, `predict`),
each timed as a whole process, with the build's progress lines (stderr, one per step, stamped with the seconds
since it started). From those lines: when each target ended, and at each target's end the ETA the build showed
against the time really left until the last target ended. `--also-jobs-1` first runs the build one target at a
time into another folder: its wall time gives the --jobs speed-up, and the two manifests are compared byte for
byte. Writes FILE (default benchmarks/results/demo_time.<cpu class>.json) and prints a table. `--update-costs`
also writes each target's own seconds in this build into distilforge/data/target_costs.json for this CPU class:
the build's schedule and ETA priors (pipeline/jobs.py `measured_costs`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "distilforge"]
DONE = re.compile(r"^\[distilforge\] ([\d.]+)s (\S+): (\w+) \((\d+)/(\d+), ([^,)]+)(?:, eta ([0-9hms.]+))?\)$")
STAMP = re.compile(r"^\[distilforge\] ([\d.]+)s (.*)$")


def seconds(text: str) -> float:
    """42.3s, 3m12s, 1h02m05s -> seconds."""
    total, number = 0.0, ""
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[ch]
            number = ""
    return total


def run(argv: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took, done.stdout, done.stderr


def eta_table(stderr: str) -> tuple[list[dict], float, list[dict]]:
    """One row per target done: when, the ETA shown, the time really left until the last target ended; when that
    was; and the same rows for what came after the manifest was written (the bench's phases under --bench)."""
    rows, end = [], None
    for line in stderr.splitlines():
        m = DONE.match(line)
        if m:
            rows.append({"t": float(m[1]), "target": m[2], "result": m[3], "done": int(m[4]), "total": int(m[5]),
                         "took": seconds(m[6]), "eta_shown": seconds(m[7]) if m[7] else None})
        s = STAMP.match(line)
        if s and s[2].startswith("manifest: writing") and end is None:
            end = float(s[1])
    if end is None:
        sys.exit("the build's progress lines have no 'manifest: writing' line")
    build = [r for r in rows if r["t"] <= end]
    after = [r for r in rows if r["t"] > end]
    for phase in (build, after):
        last_done = phase[-1]["t"] if phase else end
        for row in phase:
            row["left_really"] = round(last_done - row["t"], 1)
            shown, real = row["eta_shown"], row["left_really"]
            row["error"] = None if shown is None or real <= 0 else round((shown - real) / real, 3)
    return build, build[-1]["t"] if build else end, after


def worst_error_after_a_third(rows: list[dict], end: float) -> float | None:
    """The largest |ETA error| among the rows shown once a third of the phase's time had passed."""
    later = [r for r in rows if r["error"] is not None and r["t"] >= end / 3]
    return max((abs(r["error"]) for r in later), default=None)


TAIL = 0.1  # the last tenth of the phase: what is left is a few seconds, and a relative error says little


def eta_errors(rows: list[dict], end: float) -> dict:
    """The worst |relative error| once a third was done, and the same without the last tenth of the phase (where
    the left-over seconds are few) beside the worst error in seconds there."""
    later = [r for r in rows if r["error"] is not None and r["t"] >= end / 3]
    body = [r for r in later if r["left_really"] >= TAIL * end]
    tail = [r for r in later if r["left_really"] < TAIL * end]
    return {"worst_after_a_third": max((abs(r["error"]) for r in later), default=None),
            "worst_after_a_third_before_the_last_tenth": max((abs(r["error"]) for r in body), default=None),
            "worst_seconds_in_the_last_tenth": max((abs(r["eta_shown"] - r["left_really"]) for r in tail),
                                                   default=None)}


def update_costs(cpu: str, rows: list[dict]) -> None:
    """This build's seconds per target (its own time, as its progress line gives it) as the class's priors."""
    from distilforge.pipeline.jobs import COSTS_FILE

    table = json.loads(COSTS_FILE.read_text())
    order = list(table["x86-avx2"])
    took = {r["target"]: r["took"] for r in rows if r["result"] == "passed"}
    missing = [t for t in order if t not in took]
    if missing:
        sys.exit(f"not updating {COSTS_FILE}: no passed build of {', '.join(missing)}")
    table[cpu] = {t: round(took[t], 1) for t in order}
    COSTS_FILE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {cpu}'s costs into {COSTS_FILE}")


def main() -> None:

    from distilforge.cpu import this_cpu_class

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="build --jobs (default: the build's own default)")
    parser.add_argument("--also-jobs-1", action="store_true", help="also build one target at a time, for the ratio")
    parser.add_argument("--work", type=Path, default=None, help="where the artifacts go (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--update-costs", action="store_true",
                        help="write each target's seconds into distilforge/data/target_costs.json for this CPU class")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="demo-time-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("TERM", None)  # plain progress lines, not the live display
    result: dict = {"cpu_class": this_cpu_class(), "cores": os.cpu_count(), "jobs": args.jobs}
    if args.also_jobs_1:
        shutil.rmtree(work / "one-at-a-time", ignore_errors=True)
        took, _, err = run(CLI + ["build", "--out", str(work / "one-at-a-time"), "--keep-going", "--jobs", "1"], env)
        rows, build_end, _ = eta_table(err)
        result["jobs_1"] = {"build_seconds": round(took, 1), "build_phase_end": build_end, "eta": rows,
                            "eta_worst_error_after_a_third": worst_error_after_a_third(rows, build_end)}
    out = work / "artifacts"
    shutil.rmtree(out, ignore_errors=True)
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    build = CLI + ["build", "--out", str(out), "--keep-going", "--bench", *jobs]
    steps = {"build --bench": build, "report": CLI + ["report", str(out)],
             "predict": CLI + ["predict", str(out), "the striker scored twice in the final"]}
    timings, stderr = {}, ""
    for name, argv in steps.items():
        took, _, err = run(argv, env)
        timings[name] = round(took, 1)
        stderr = stderr or err
    rows, build_end, bench_rows = eta_table(stderr)
    result.update(demo_seconds=round(sum(timings.values()), 1), steps=timings, build_phase_end=build_end, eta=rows,
                  eta_worst_error_after_a_third=worst_error_after_a_third(rows, build_end),
                  eta_errors=eta_errors(rows, build_end), bench_eta=bench_rows)
    if args.also_jobs_1:
        one, many = work / "one-at-a-time" / "manifest.json", out / "manifest.json"
        result["manifests_byte_identical"] = one.read_bytes() == many.read_bytes()
        result["build_phase_ratio_jobs_n_to_1"] = round(build_end / result["jobs_1"]["build_phase_end"], 3)
    if args.update_costs:
        update_costs(result["cpu_class"], rows)
    path = args.out or ROOT / "benchmarks" / "results" / f"demo_time.{result['cpu_class']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"demo: {result['demo_seconds']} s ({', '.join(f'{k} {v} s' for k, v in timings.items())}); "
          f"build phase {build_end} s")
    print(f"{'t s':>7} {'target':<26} {'eta shown':>9} {'really':>7} {'error':>7}")
    for r in rows:
        err = "" if r["error"] is None else f"{r['error']:+.0%}"
        shown = "" if r["eta_shown"] is None else f"{r['eta_shown']:.0f}"
        print(f"{r['t']:>7.1f} {r['target']:<26} {shown:>9} {r['left_really']:>7.0f} {err:>7}")
    print(f"worst ETA error once a third of the build was done: {result['eta_worst_error_after_a_third']}"
          + (f" (--jobs 1: {result['jobs_1']['eta_worst_error_after_a_third']})" if args.also_jobs_1 else ""))
    errors = result["eta_errors"]
    print(f"  before the last tenth of the build: {errors['worst_after_a_third_before_the_last_tenth']}; "
          f"in the last tenth, at most {errors['worst_seconds_in_the_last_tenth']} s off")
    if args.also_jobs_1:
        print(f"build phase, --jobs {args.jobs or 'default'} / --jobs 1: {result['build_phase_ratio_jobs_n_to_1']}; "
              f"manifests byte-identical: {result['manifests_byte_identical']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
