"""`distilforge bench DIR`: every artifact of a build, timed through its own runner, the same way, in one run.

Candidates: every artifact the manifest records as passed, the eager PyTorch fp32 reference, the peers'
models (Optimum's export and INT8 of the same checkpoint, built and validated by peer.py just before the
workers start, and optimum-intel's OpenVINO export and INT8, peer_openvino.py), and the two floor graphs
(INT8 and fp32 GEMMs of the model's own shapes, see floor.py).
Each runs in its own persistent worker process (worker.py) and is timed in interleaved rounds (timing.py).
What is timed, at which shapes, is candidates.py's; the result is DIR/bench.json, written from results.py's
dict (schema_version 1; the keys below `BENCH_SCHEMA_VERSION` there are what a report reads).

Layering: bench imports artifacts, targets and validate (and, for the peer, pipeline's validation of one
artifact); only the CLI imports bench.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import write_json_atomic
from distilforge.artifacts.manifest import read_manifest
from distilforge.bench.candidates import (
    BATCHES,
    LATENCY_SEQ,
    SEQUENCES,
    Candidate,
    Model,
    artifact_candidate,
    chosen_records,
    eager_candidate,
    floor_candidates,
    peer_candidate,
)
from distilforge.bench.peer import (
    OPTIMUM,
    OURS_VS_PEER,
    SKIPPED_BY_FLAG,
    PeerBuild,
    PeerHeadStart,
    PeerTool,
    build_peer,
    comparisons,
)
from distilforge.bench.peer_openvino import OPTIMUM_INTEL, build_openvino_peer
from distilforge.bench.peer_openvino import OURS_VS_PEER as OURS_VS_OPENVINO_PEER
from distilforge.bench.results import BENCH_SCHEMA_VERSION, bench_record, mark_slower_than_fp32
from distilforge.bench.timing import Plan, Timed, WorkerError, WorkerHandle, time_rounds, time_sweeps
from distilforge.errors import DistilforgeError, first_line
from distilforge.progress import Progress, as_progress

__all__ = ["BATCHES", "BENCH_FILE", "BENCH_SCHEMA_VERSION", "LATENCY_SEQ", "SEQUENCES", "BenchResult", "BenchSettings",
           "Candidate", "Model", "bench_dir", "mark_slower_than_fp32"]

BENCH_FILE = "bench.json"


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
class BenchResult:
    path: Path
    report: dict[str, Any]

    @property
    def errors(self) -> list[str]:
        """Our candidates that could not be measured (exit code 1). A peer row's error is in its row only: the
        peer is a comparison, not something of ours that failed."""
        return [f"{r['target']}: {r['error']}" for r in self.report["results"]
                if r.get("error") and r.get("kind") != "peer"]


def bench_dir(out: str | Path, *, threads: int | None = None, targets: list[str] | None = None,
              settings: BenchSettings | None = None, progress: Progress | None = None,
              peer: bool = True, peer_head_starts: Sequence[PeerHeadStart] = ()) -> BenchResult:
    """Time every passed artifact of `out` (or the `targets` among them), eager, the peers (unless `peer` is
    False: Optimum's, then optimum-intel's; `peer_head_starts`: their commands, started beside a build) and the
    floor; write bench.json."""
    out = Path(out)
    manifest = read_manifest(out)
    settings = settings or BenchSettings()
    progress = as_progress(progress)
    threads = threads or int(manifest.get("settings", {}).get("threads", 2))
    model = Model.from_manifest(manifest)
    notes: list[str] = []
    records = chosen_records(manifest, targets, notes)
    shared: dict[str, Any] = {}  # the checkpoint and eager reference, loaded by the first peer step for both
    peers = [_peer(build, tool, out, manifest, threads, progress, peer_head_starts, shared) if peer else
             PeerBuild.skipped(SKIPPED_BY_FLAG, tool) for build, tool in PEERS]
    notes += list(dict.fromkeys(p.note for p in peers if p.note))
    work = Path(tempfile.mkdtemp(prefix="distilforge-bench-"))
    candidates = [eager_candidate(model, threads, settings)]
    candidates += [artifact_candidate(out, r, model, threads, settings) for r in records]
    candidates += [peer_candidate(out, m, model, threads, settings) for p in peers for m in p.models]
    candidates += floor_candidates(work, model, threads, settings, notes)
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
    report = bench_record(candidates, timed, foreign, model, threads, settings, notes)
    optimum, optimum_intel = peers
    # every ours-vs-peer pair (ONNX against Optimum, OpenVINO against optimum-intel) is under "peer"
    report["peer"] = {**optimum.to_dict(),
                      "comparisons": comparisons(report["results"], OURS_VS_PEER + OURS_VS_OPENVINO_PEER)}
    report["peer_openvino"] = optimum_intel.to_dict()
    if any(c.error for c in candidates):
        report["logs"] = str(work)  # kept: the failed workers' tracebacks are there
    else:
        shutil.rmtree(work, ignore_errors=True)
    path = out / BENCH_FILE
    write_json_atomic(path, report)
    return BenchResult(path=path, report=report)


# each peer's step and what it is: bench.json's "peer" (Optimum's) and "peer_openvino" (optimum-intel's)
PEERS: tuple[tuple[Callable[..., PeerBuild], PeerTool], ...] = ((build_peer, OPTIMUM),
                                                                (build_openvino_peer, OPTIMUM_INTEL))


def _peer(build: Callable[..., PeerBuild], tool: PeerTool, out: Path, manifest: dict[str, Any], threads: int,
          say: Progress, head_starts: Sequence[PeerHeadStart], shared: dict[str, Any]) -> PeerBuild:
    """One peer's step; whatever goes wrong in a third-party tool leaves bench running, with a one-line note."""
    head_start = next((h for h in head_starts if h.key[0] == tool.name), None)
    try:
        return build(out, manifest, threads=threads, say=say, head_start=head_start, shared=shared)
    except DistilforgeError as e:
        return PeerBuild.skipped(f"{tool.skipped}: {e}", tool)
    except Exception as e:
        return PeerBuild.skipped(f"{tool.skipped}: the peer step failed: {type(e).__name__}: {first_line(e)}", tool)


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
