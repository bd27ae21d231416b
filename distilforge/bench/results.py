"""bench.json's contents from the timed rounds: each candidate's figures, its ratios to eager and to the floor,
the notes on how far to trust them, and the method the run followed."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from distilforge.artifacts.environment import machine_info
from distilforge.bench.candidates import BATCHES, SEQUENCES, Candidate, Model
from distilforge.bench.floor import PRECISIONS, Floor, GemmShape, make_floor, model_ops
from distilforge.bench.timing import Plan, Timed, median_interval, ratio_error, relative_error, used_rounds

if TYPE_CHECKING:
    from distilforge.bench import BenchSettings

BENCH_SCHEMA_VERSION = 1


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(samples), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def bench_record(candidates: list[Candidate], timed: list[Timed], foreign: list[float | None],
            model: Model, threads: int, settings: BenchSettings, notes: list[str]) -> dict[str, Any]:
    by_name = {t.name: t for t in timed}
    plan = settings.plan()
    eager = by_name.get("eager")
    measured = {c.target: _measure(c, by_name.get(c.target), eager, foreign, plan) for c in candidates}
    floor = _floor(model, measured)
    eager_p50 = (measured["eager"].get("latency_ms") or {}).get("p50")
    results = []
    for c in candidates:
        if c.kind == "floor":
            continue
        row = {"target": c.target, "kind": c.kind, "precision_class": c.precision_class, **measured[c.target],
               "load_ms": c.load_ms, "peak_rss_mb": c.peak_rss_mb, "bytes": c.bytes, "seq": c.seq}
        p50 = (row.get("latency_ms") or {}).get("p50")
        floor_ms = floor.for_class(c.precision_class) if floor else None
        row["ratio_eager"] = p50 / eager_p50 if p50 and eager_p50 else None
        row["ratio_floor"] = p50 / floor_ms if p50 and floor_ms else None
        floor_timed = by_name.get(f"floor:{'int8' if c.precision_class == 'int8' else 'fp32'}")
        row["ratio_floor_rel_error"] = (_ratio_error(by_name[c.target], floor_timed, used_rounds(
            by_name[c.target], foreign, plan)) if row["ratio_floor"] and c.target in by_name else None)
        row["notes"] = c.notes + _timing_notes(row, settings) + ([f"error: {c.error}"] if c.error else [])
        row["error"] = c.error
        row.update(c.row_extra)
        results.append(row)
    mark_slower_than_fp32(results)
    shares = [f for f in foreign if f is not None]
    used = [t.samples_used for t in (by_name.get(c.target) for c in candidates) if t is not None and t.samples_used]
    notes = list(notes)
    if used and min(used) < 100:
        notes.append(f"p99 is over {min(used)}-{max(used)} samples per candidate: read it as close to the worst seen")
    left_out = sum(1 for f in shares if f > settings.max_foreign)
    if left_out:
        notes.append(f"{left_out} of {len(foreign)} rounds had other processes using more than "
                     f"{settings.max_foreign:.0%} of the CPU: left out of each candidate's figures where at least "
                     f"{settings.min_rounds} quiet rounds remained")
    if shares and float(np.median(shares)) > settings.max_foreign:
        notes.append(f"the machine was busy (other processes: median {float(np.median(shares)):.0%} of the CPU "
                     "per round): absolute times are inflated, the ratios hold up better")
    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "threads": threads,
        "machine": machine_info(threads),
        "method": {"rounds": len(foreign), "runs_per_round": settings.runs, "warmup": settings.warmup,
                   "interleaved": True, "process_per_candidate": True,
                   "foreign_cpu_median": float(np.median(shares)) if shares else None,
                   "rounds_used": max((len(t.rounds) for t in timed), default=0),
                   "stopping": {"rel_error": settings.rel_error, "min_rounds": settings.min_rounds,
                                "max_rounds": settings.max_rounds, "on": "every p50 ratio to eager",
                                "interval": "95% bootstrap over whole rounds",
                                "slow_factor": settings.slow_factor, "box_ms": settings.box_ms},
                   "sweep_runs_per_round": settings.sweep_runs, "sweep_rounds": 1,
                   "sweep_budget_ms": settings.sweep_budget_ms,
                   "sweep": "other lengths and batch sizes: one pass before the rounds, up to sweep_runs runs "
                            "(fewer where a run takes over sweep_budget_ms), median",
                   "pause_s": settings.pause, "batch": 1, "seq": model.seq,
                   "inputs": "random token ids, no padding, attention mask all ones",
                   "load": "process-fresh: runtime import + open_runner + first inference (files in page cache)"},
        "floor": {**floor.to_dict(), "p50_rel_error": {p: measured[f"floor:{p}"].get("p50_rel_error")
                                                        for p in PRECISIONS if f"floor:{p}" in measured}}
        if floor else None,
        "results": results,
        "notes": notes,
    }


def _timing_notes(row: dict[str, Any], settings: BenchSettings) -> list[str]:
    error = row.get("ratio_eager_rel_error")
    if row.get("time_boxed"):
        return [f"time-boxed: over {settings.slow_factor:g}x slower than the median candidate, so timed for "
                f"{row['rounds']} rounds only ({row['samples']} runs"
                + (f"; its ratio to eager known to ±{error:.1%})" if error is not None else ")")]
    if error is not None and settings.rel_error > 0 and error > settings.rel_error:
        return [f"ratio to eager known to ±{error:.1%} only (the aim is ±{settings.rel_error:.0%}) after "
                f"{row['rounds']} rounds: read its ratios with that margin"]
    return []


def mark_slower_than_fp32(results: list[dict[str, Any]]) -> None:
    """An INT8 artifact whose p50 is above the fastest fp32 artifact of its format, on the CPU measured, says so
    (`slower_than_fp32` and a note): it is then only smaller, and `report` never recommends it."""
    def p50(row: dict[str, Any]) -> float | None:
        return (row.get("latency_ms") or {}).get("p50")

    artifacts = [r for r in results if r["kind"] == "artifact" and p50(r) is not None]
    for row in (r for r in artifacts if r["precision_class"] == "int8"):
        fmt = row["target"].split(":")[0]
        siblings = [r for r in artifacts if r["precision_class"] == "fp32" and r["target"].split(":")[0] == fmt]
        if not siblings:
            continue
        fastest = min(siblings, key=p50)
        if p50(row) > p50(fastest):
            ratio = p50(row) / p50(fastest)
            row["slower_than_fp32"] = {"target": fastest["target"], "ratio": ratio}
            row["notes"].append(f"slower than {fastest['target']} on this CPU ({ratio:.2f}x its p50): it only "
                                "saves size here, and report never recommends it")


def _measure(c: Candidate, t: Timed | None, eager: Timed | None, foreign: list[float | None],
             plan: Plan) -> dict[str, Any]:
    empty = {"latency_ms": None, "by_sequence": {str(s): None for s in SEQUENCES},
             "throughput": {str(b): None for b in BATCHES}}
    if t is None or c.error:
        return empty
    rounds = used_rounds(t, foreign, plan)
    main = t.samples(0, rounds)
    if not main:
        return empty
    t.samples_used = len(main)

    def median(batch: int, seq: int) -> float | None:
        if (batch, seq) not in c.shapes:
            return None
        index = c.shapes.index((batch, seq))
        values = t.samples(index, rounds) if index == 0 else t.all_samples(index)  # sweeps: their one pass
        return float(np.median(values)) if values else None

    by_sequence = {str(s): median(1, s) for s in SEQUENCES}
    throughput = {str(b): (b / (ms / 1e3) if ms else None) for b in BATCHES for ms in [median(b, c.seq)]}
    _, low, high = median_interval(main)
    return {"latency_ms": _percentiles(main), "by_sequence": by_sequence, "throughput": throughput,
            "samples": len(main), "rounds": len(rounds), "p50_interval_ms": [low, high],
            "p50_rel_error": relative_error(main), "ratio_eager_rel_error": _ratio_error(t, eager, rounds),
            "time_boxed": t.time_boxed}


def _ratio_error(t: Timed, eager: Timed | None, rounds: list[int]) -> float | None:
    if eager is None or eager is t:
        return 0.0 if eager is t else None
    error = ratio_error(t, eager, rounds)
    return None if math.isinf(error) else error


def _floor(model: Model, measured: dict[str, dict[str, Any]]) -> Floor | None:
    gemm_ms = {p: (measured.get(f"floor:{p}", {}).get("latency_ms") or {}).get("p50") for p in PRECISIONS}
    if not any(gemm_ms.values()):
        return None
    shape = GemmShape.from_config(model.config, tokens=model.seq * (model.choices or 1))
    return make_floor(model_ops(shape, model.seq), model.seq, gemm_ms)
