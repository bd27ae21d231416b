"""`distilforge bench DIR`: every artifact of a build, timed through its own runner, the same way, in one run.

Candidates: every artifact the manifest records as passed, the eager PyTorch fp32 reference, the peer's
models (Optimum's export and INT8 of the same checkpoint, built and validated by peer.py just before the
workers start), and the two floor graphs (INT8 and fp32 GEMMs of the model's own shapes, see floor.py).
Each runs in its own persistent worker process (worker.py) and is timed in interleaved rounds (timing.py).
The result is DIR/bench.json (schema_version 1; the keys below `BENCH_SCHEMA_VERSION` are what a report reads).

Layering: bench imports artifacts, targets and validate (and, for the peer, pipeline's validation of one
artifact); only the CLI imports bench.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.environment import machine_info
from distilforge.artifacts.layout import write_json_atomic
from distilforge.artifacts.manifest import read_manifest, verify_files
from distilforge.bench.floor import PRECISIONS, Floor, GemmShape, make_floor, model_ops, write_gemm_model
from distilforge.bench.peer import (
    SKIPPED_BY_FLAG,
    PeerBuild,
    PeerHeadStart,
    PeerModel,
    build_peer,
    comparisons,
    peer_target,
)
from distilforge.bench.timing import (
    Plan,
    Timed,
    WorkerError,
    WorkerHandle,
    median_interval,
    ratio_error,
    relative_error,
    time_rounds,
    time_sweeps,
    used_rounds,
)
from distilforge.errors import DistilforgeError, UsageError, first_line
from distilforge.progress import Progress, as_progress
from distilforge.validate.runners import runner_ref
from distilforge.validate.tolerances import precision_class

BENCH_FILE = "bench.json"
BENCH_SCHEMA_VERSION = 1
SEQUENCES = (32, 128, 384)
BATCHES = (1, 4, 16)
LATENCY_SEQ = 128

@dataclass(frozen=True)
class BenchSettings:
    """How much to measure. By default every candidate is timed in interleaved rounds of `runs` runs (batch 1, the
    latency shape) until each one's p50 ratio to eager is known within `rel_error` (half the 95 % interval,
    relative, bootstrapped over rounds), after `min_rounds` and at most `max_rounds` rounds; the other sequence
    lengths and batch sizes get up to `sweep_runs` runs (fewer when a run takes over `sweep_budget_ms`) in one pass
    and report their median only. A candidate `slow_factor` times slower than the median one is time-boxed
    (`box_ms` a round, `min_rounds` rounds). `fixed(rounds)` times every candidate for exactly that many rounds
    (the long reference run)."""

    runs: int = 5
    min_rounds: int = 4
    max_rounds: int = 6
    rel_error: float = 0.10  # on 2 shared cores eager's p50 alone moves by 5-10 % between runs minutes apart
    sweep_runs: int = 3
    sweep_budget_ms: float = 150.0
    warmup: int = 5
    pause: float = 0.05  # seconds between hand-offs
    max_foreign: float = 0.10  # leave out rounds in which other processes used more of the CPU (if enough stay)
    slow_factor: float = 10.0
    box_ms: float = 1000.0

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(runs=3, min_rounds=2, max_rounds=2, rel_error=math.inf, sweep_runs=1, warmup=2, pause=0.01)

    @classmethod
    def fixed(cls, rounds: int, runs: int | None = None) -> BenchSettings:
        return cls(runs=runs or cls.runs, min_rounds=rounds, max_rounds=rounds, rel_error=0.0)

    def plan(self) -> Plan:
        return Plan(min_rounds=self.min_rounds, max_rounds=self.max_rounds, rel_error=self.rel_error,
                    pause=self.pause, max_foreign=self.max_foreign, slow_factor=self.slow_factor,
                    box_ms=self.box_ms)


@dataclass
class Candidate:
    """One thing to time: its worker spec, the shapes it runs (index 0: the latency shape) and its record."""

    target: str
    kind: str  # "artifact" | "reference" | "peer" | "floor"
    precision_class: str
    bytes: int
    spec: dict[str, Any]
    seq: int  # the latency and throughput sequence length
    shapes: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    row_extra: dict[str, Any] = field(default_factory=dict)  # more keys for its bench.json row (a peer's validation)

    def shape_index(self, batch: int, seq: int) -> int:
        if (batch, seq) not in self.shapes:
            self.shapes.append((batch, seq))
        return self.shapes.index((batch, seq))


@dataclass
class BenchResult:
    path: Path
    report: dict[str, Any]

    @property
    def errors(self) -> list[str]:
        """Our candidates that could not be measured (exit code 1). A peer row's error is in its row only: the
        peer is a comparison, not something of ours that failed."""
        return [f"{r['target']}: {r['error']}" for r in self.report["results"]
                if r.get("error") and r.get("kind") != "peer"]


@dataclass(frozen=True)
class Model:
    """What the inputs and the floor need from the manifest's checkpoint record."""

    config: dict[str, Any]
    vocab: int
    max_seq: int
    choices: int | None  # multiple choice: (batch, choices, sequence) inputs
    checkpoint: str | None  # None: the built-in default model
    weight_bytes: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Model:
        record = manifest["checkpoint"]
        config = record["config"]
        weights = sum(f["bytes"] for f in record.get("files", []) if f["path"].endswith((".safetensors", ".bin")))
        return cls(config=config, vocab=int(config.get("vocab_size", 30522)),
                   max_seq=int(config.get("max_position_embeddings", 512)),
                   choices=2 if record.get("head") == "DistilBertForMultipleChoice" else None,
                   checkpoint=None if record.get("default") else record["path"], weight_bytes=weights)

    @property
    def seq(self) -> int:
        return min(LATENCY_SEQ, self.max_seq)


def bench_dir(out: str | Path, *, threads: int | None = None, targets: list[str] | None = None,
              settings: BenchSettings | None = None, progress: Progress | None = None,
              peer: bool = True, peer_head_start: PeerHeadStart | None = None) -> BenchResult:
    """Time every passed artifact of `out` (or the `targets` among them), eager, the peer (unless `peer` is
    False) and the floor; write bench.json."""
    out = Path(out)
    manifest = read_manifest(out)
    settings = settings or BenchSettings()
    progress = as_progress(progress)
    threads = threads or int(manifest.get("settings", {}).get("threads", 2))
    model = Model.from_manifest(manifest)
    notes: list[str] = []
    records = _chosen_records(manifest, targets, notes)
    peers = _peer(out, manifest, threads, progress, peer_head_start) if peer else PeerBuild.skipped(SKIPPED_BY_FLAG)
    if peers.note:
        notes.append(peers.note)
    work = Path(tempfile.mkdtemp(prefix="distilforge-bench-"))
    candidates = [_eager(model, threads, settings)]
    candidates += [_artifact(out, r, model, threads, settings) for r in records]
    candidates += [_peer_candidate(out, m, model, threads, settings) for m in peers.models]
    candidates += _floor_candidates(work, model, threads, settings, notes)
    timed: list[Timed] = []
    try:
        _start(candidates, work, timed, settings, progress)
        time_sweeps(timed, settings.pause, progress)
        foreign = time_rounds(timed, settings.plan(), progress)
        _finish(candidates, timed)
    finally:
        progress.close()
        for t in timed:
            t.worker.close()
    report = _report(candidates, timed, foreign, model, threads, settings, notes)
    report["peer"] = {**peers.to_dict(), "comparisons": comparisons(report["results"])}
    if any(c.error for c in candidates):
        report["logs"] = str(work)  # kept: the failed workers' tracebacks are there
    else:
        shutil.rmtree(work, ignore_errors=True)
    path = out / BENCH_FILE
    write_json_atomic(path, report)
    return BenchResult(path=path, report=report)


def _chosen_records(manifest: dict[str, Any], targets: list[str] | None, notes: list[str]) -> list[dict[str, Any]]:
    records = manifest["artifacts"]
    if targets:
        known = {r["target"] for r in records}
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise UsageError(f"--targets: {', '.join(unknown)} not in the manifest (built: {', '.join(known)})")
        records = [r for r in records if r["target"] in targets]
    passed = []
    for r in records:
        if r.get("error") or not (r.get("validation") or {}).get("passed"):
            notes.append(f"{r['target']}: not benchmarked, it did not pass validation")
        else:
            passed.append(r)
    return passed


def _worker_spec(kind: str, model: Model, threads: int, settings: BenchSettings, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "threads": threads, "vocab": model.vocab, "choices": model.choices,
            "warmup": settings.warmup, "runs": settings.runs, "sweep_runs": settings.sweep_runs, **extra}


def _eager(model: Model, threads: int, settings: BenchSettings) -> Candidate:
    spec = _worker_spec("eager", model, threads, settings, checkpoint=model.checkpoint)
    c = Candidate("eager", "reference", "fp32", model.weight_bytes, spec, seq=model.seq)
    if model.checkpoint is not None and not Path(model.checkpoint).is_dir():
        c.error = f"the checkpoint {model.checkpoint} is gone"
    _plan_shapes(c, model, None)
    return c


def _artifact(out: Path, record: dict[str, Any], model: Model, threads: int, settings: BenchSettings) -> Candidate:
    from distilforge.targets import get_target

    target = get_target(record["target"])
    spec = _worker_spec("artifact", model, threads, settings, out=str(out), record=record,
                        runner=runner_ref(target.open_runner))
    fixed = [tuple(s) for s in record["fixed_shapes"]] if record.get("fixed_shapes") else None
    bounds = tuple(record["details"]["max_shape"]) if record.get("details", {}).get("max_shape") else None
    longest = max(s[-1] for s in fixed) if fixed else bounds[-1] if bounds else model.seq
    seq = min(model.seq, longest)
    c = Candidate(record["target"], "artifact", precision_class(target.precision), int(record["bytes"]), spec, seq)
    c.notes += verify_files(out, record)  # still timed: the figures say what the changed file does
    if not target.installed():
        c.error = f"its backend is not installed: pip install 'distilforge[{target.extra}]'"
    if target.precision == "int8-weights":
        c.notes.append("weights-only INT8: compute runs in fp32, so the int8 floor is out of reach by design")
    _plan_shapes(c, model, fixed, bounds)
    return c


def _peer(out: Path, manifest: dict[str, Any], threads: int, say: Progress,
          head_start: PeerHeadStart | None) -> PeerBuild:
    """The peer step; whatever goes wrong in a third-party tool leaves bench running, with a one-line note."""
    try:
        return build_peer(out, manifest, threads=threads, say=say, head_start=head_start)
    except DistilforgeError as e:
        return PeerBuild.skipped(f"peer rows skipped: {e}")
    except Exception as e:
        return PeerBuild.skipped(f"peer rows skipped: the peer step failed: {type(e).__name__}: {first_line(e)}")


def _peer_candidate(out: Path, m: PeerModel, model: Model, threads: int, settings: BenchSettings) -> Candidate:
    """One of Optimum's models, timed through our ONNX runner like an `onnx:` artifact of ours. It is timed
    even when it failed our validation (the comparison is the point); its row says so."""
    target = peer_target(m.target)
    spec = _worker_spec("artifact", model, threads, settings, out=str(out), record=m.artifact.to_dict(),
                        runner=runner_ref(target.open_runner))
    c = Candidate(m.target, "peer", precision_class(target.precision), m.artifact.total_bytes, spec, seq=model.seq)
    c.row_extra = {"validation": m.validation_summary(), "command": m.command}
    c.notes.append("peer: Optimum's model, validated and timed by distilforge's ONNX runner")
    if m.error:
        c.error = m.error
    elif not m.passed:
        failures = (c.row_extra["validation"] or {}).get("failures") or ["no validation result"]
        c.notes.append(f"did not pass our validation ({failures[0]}); timed anyway, as the peer")
    _plan_shapes(c, model, None)
    return c


def _plan_shapes(c: Candidate, model: Model, fixed: list[tuple[int, ...]] | None,
                 bounds: tuple[int, ...] | None = None) -> None:
    """Index 0: 1 x seq (latency); then the other sequence lengths it takes; then the batch sizes at seq (those
    within its bounds)."""
    c.shape_index(1, c.seq)
    longest = max(s[-1] for s in fixed) if fixed else bounds[-1] if bounds else model.max_seq
    declared = sorted({s[-1] for s in fixed}) if fixed else []
    padded, missing = [], []
    for s in SEQUENCES:
        if s <= min(longest, model.max_seq):
            c.shape_index(1, s)
            if fixed and s not in declared:
                padded.append(s)
        else:
            missing.append(s)
    for b in BATCHES:
        if not bounds or b <= bounds[0]:
            c.shape_index(b, c.seq)
    if bounds and (missing or bounds[0] < BATCHES[-1]):
        over = [str(b) for b in BATCHES if b > bounds[0]]
        c.notes.append(f"exported for at most {'x'.join(map(str, bounds))}"
                       + (f": batch {', '.join(over)} not taken" if over else "")
                       + (f"; seq {', '.join(map(str, missing))} not taken" if missing else ""))
    if fixed:
        shapes = ", ".join("x".join(map(str, s)) for s in fixed)
        c.notes.append(f"fixed shapes {shapes}: its runner pads smaller inputs into them"
                       + (f"; seq {', '.join(map(str, padded))} padded" if padded else "")
                       + (f"; seq {', '.join(map(str, missing))} not taken" if missing else "")
                       + ("; batches > 1 run as chunks" if any(s[0] == 1 for s in fixed) else ""))
    if c.seq != LATENCY_SEQ:
        c.notes.append(f"latency and throughput at seq {c.seq} (the longest it takes), not {LATENCY_SEQ}")


def _floor_candidates(work: Path, model: Model, threads: int, settings: BenchSettings,
                      notes: list[str]) -> list[Candidate]:
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        notes.append("no floor: it is measured with ONNX Runtime (pip install 'distilforge[onnx]')")
        return []
    shape = GemmShape.from_config(model.config, tokens=model.seq * (model.choices or 1))
    out = []
    for precision in PRECISIONS:
        path = write_gemm_model(work / f"gemms_{precision}.onnx", shape, precision)
        spec = _worker_spec("gemm", model, threads, settings, path=str(path))
        c = Candidate(f"floor:{precision}", "floor", precision, path.stat().st_size, spec, seq=model.seq)
        c.shape_index(1, model.seq)
        out.append(c)
    return out


def _start(candidates: list[Candidate], work: Path, timed: list[Timed], settings: BenchSettings,
           progress: Any) -> None:
    """One worker at a time (so each cold load is timed alone), all kept alive for the rounds (in `timed`)."""
    progress.phase("bench: loading", sum(1 for c in candidates if not c.error))
    for i, c in enumerate(candidates):
        if c.error:
            continue
        progress.step(c.target, "loading")
        c.spec["shapes"] = c.shapes
        worker = WorkerHandle(c.spec, work / f"spec-{i}.json", work / f"{c.target.replace(':', '-')}.log")
        try:
            c.load_ms = float(worker.read()["load_ms"])
            warm_ms = [float(x) for x in worker.read()["warm_ms"]]
        except (WorkerError, ValueError, KeyError, TypeError) as e:
            c.error = f"the worker failed to load it: {e}"
            worker.close()
            progress.advance(c.target, "FAILED")
            continue
        timed.append(Timed(c.target, worker, settings.runs, _sweep_runs(warm_ms, settings)))
        progress.advance(c.target, f"loaded in {c.load_ms / 1e3:.1f}s")


def _sweep_runs(warm_ms: list[float], settings: BenchSettings) -> list[tuple[int, int]]:
    """(shape index, runs) for the shapes after the latency shape: up to `sweep_runs`, fewer for slow shapes."""
    return [(k, max(1, min(settings.sweep_runs, int(settings.sweep_budget_ms / max(ms, 1e-3)))))
            for k, ms in enumerate(warm_ms) if k > 0]


def _finish(candidates: list[Candidate], timed: list[Timed]) -> None:
    by_name = {c.target: c for c in candidates}
    for t in timed:
        c = by_name[t.name]
        if t.error:
            c.error = t.error
            continue
        try:
            c.peak_rss_mb = float(t.worker.ask("stats")["peak_rss_mb"])
        except (WorkerError, ValueError, KeyError) as e:
            c.error = f"worker failed: {e}"


def _percentiles(samples: list[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(samples), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _report(candidates: list[Candidate], timed: list[Timed], foreign: list[float | None],
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
