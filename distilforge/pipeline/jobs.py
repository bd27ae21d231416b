"""`build --jobs N`: the targets built on N worker processes at once, the costliest first.

Each worker loads the checkpoint once and builds whole targets with the pipeline's own `build_target` (export,
validation, the INT8 ladder, the folder moved into place), so a target's entry and files are what a
one-at-a-time build gives: the same code on the same inputs, with the same thread count (the eager reference
sets it, as in the parent). The parent hands out targets, forwards each worker's progress, and assembles the
manifest in the registry's order. Tested byte for byte against --jobs 1 (tests/test_jobs.py).

A worker prefers a target of a format it has already converted (exporters share one conversion per format within
a process: exporters/common.py `shared_conversion`), else the costliest left. What the eager proxy measured
(each INT8 scheme's layer sensitivity table and the recipes' predicted errors, pipeline/source.py) goes back to the
parent with each finished target and out with each later one, so a scheme measured on one worker is not measured
again on the other (ExecuTorch's and TFLite's dynamic INT8 targets quantize alike: 26 of 530 worker-seconds of the
default model's build when their static ones did too). The proxy is the same code on the same inputs with the
same thread count in every process, so a shared table is the one the worker would have measured. Workers die with
the parent (PR_SET_PDEATHSIG), so a killed build leaves no process writing into its output directory.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from distilforge.cpu import SHARED_CORES_VARIABLE
from distilforge.errors import BuildFailure, DistilforgeError, UsageError, first_line
from distilforge.libraries import for_our_process

UNKNOWN_SECONDS_PER_RECIPE = 10.0


COSTS_FILE = Path(__file__).resolve().parents[1] / "data" / "target_costs.json"
FALLBACK_CLASS = "x86-avx2"


def expected_seconds(cost: float | None, rungs: int) -> float:
    """The prior for one target: its measured cost (`measured_costs`), or for a target not measured yet a guess
    per recipe times the recipes it is expected to try (the first, and half of the others: a ladder stops at the
    first that clears the margin)."""
    if cost is not None:
        return cost
    return UNKNOWN_SECONDS_PER_RECIPE * (1 + (rungs - 1) / 2)


def measured_costs(cpu: str) -> dict[str, float]:
    """Each target's seconds on the default model on a 2-core machine of CPU class `cpu` (another class: those of
    x86-avx2), from data/target_costs.json (benchmarks/demo_time.py measures them). Per class because what a
    target costs is not one factor between classes: its INT8 ladder climbs further where the kernels lose more
    (the default model's onnx:int8-dynamic: 16.5 s of 196 on AVX2, 51 s of 270 on VNNI, ExecuTorch less)."""
    table = json.loads(COSTS_FILE.read_text())
    return table.get(cpu) or table[FALLBACK_CLASS]


JOBS_VARIABLE = "DISTILFORGE_JOBS"
def default_jobs() -> int:
    """$DISTILFORGE_JOBS when set (a CI runner that already runs builds side by side sets 1), else the cores this
    process may run on."""
    value = os.environ.get(JOBS_VARIABLE, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"{JOBS_VARIABLE}={value!r}: give a whole number of at least 1")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class WorkerSetup:
    """What a worker loads once: the checkpoint and labelled data as `build` was given them, and where to write."""

    checkpoint: str | None
    eval_file: str | None
    out: str


@dataclass
class _Worker:
    process: Any
    conn: Connection
    formats: set[str] = field(default_factory=set)
    target: str | None = None


@dataclass
class Learned:
    """The eager proxy's results a worker's Source holds (pipeline/source.py), as sent between processes."""

    sensitivities: dict[Any, Any] = field(default_factory=dict)
    predictions: dict[Any, float] = field(default_factory=dict)

    def merge(self, other: Learned) -> None:
        self.sensitivities.update(other.sensitivities)
        self.predictions.update(other.predictions)


def take_learned(source: Any, learned: Learned) -> None:
    """What other workers measured, into this worker's Source: its proxy finds it there instead of measuring."""
    source.sensitivities.update(learned.sensitivities)
    source.predictions.update(learned.predictions)


def learned_by(source: Any) -> Learned:
    return Learned(dict(source.sensitivities), dict(source.predictions))


class Workers:
    """`count` worker processes, started by `start()` (the build starts them before it loads the checkpoint
    itself, so their imports and loading overlap its own) or at the first `run`; `close()` ends them."""

    def __init__(self, count: int, setup: WorkerSetup) -> None:
        self.count, self.setup = count, setup
        self.workers: list[_Worker] = []
        self.learned = Learned()

    def start(self) -> None:
        if not self.workers and self.count > 1:
            context = multiprocessing.get_context("spawn")
            self.workers = [_start(context, self.setup) for _ in range(self.count)]

    def run(self, names: list[str], shared: tuple[Any, ...], costs: dict[str, float], *,
            step: Callable[[str, str], None], note: Callable[[str], None],
            done: Callable[[str, Any], bool]) -> None:
        """Build `names`, each sent with `shared` (the build's options and calibration set). `done(name, entry)`
        gets each finished target's ArtifactEntry and returns False to stop handing out more (a failure without
        --keep-going); the ones running still finish."""
        self.start()
        pending = sorted(names, key=lambda n: -costs.get(n, 0.0))
        busy = self.workers[:len(names)]
        for worker in busy:
            _hand_out(worker, pending, (*shared, self.learned))
        handing_out = True
        while any(w.target for w in busy):
            for conn in wait([w.conn for w in busy if w.target]):
                worker = next(w for w in busy if w.conn is conn)
                message = _receive(worker)
                if message[0] == "step":
                    step(message[1], message[2])
                elif message[0] == "note":
                    note(message[1])
                elif message[0] == "raise":
                    raise message[1]
                else:  # done
                    worker.target = None
                    self.learned.merge(message[3])
                    handing_out = done(message[1], message[2]) and handing_out
                    if handing_out:
                        _hand_out(worker, pending, (*shared, self.learned))

    def close(self) -> None:
        """Every worker has sent its last result (or the build is failing): end them without waiting for their
        interpreters' shutdown (seconds with torch and the converters loaded)."""
        for worker in self.workers:
            worker.process.kill()
        for worker in self.workers:
            worker.process.join()
            worker.conn.close()
        self.workers = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def _start(context: Any, setup: WorkerSetup) -> _Worker:
    parent_end, child_end = context.Pipe()
    process = context.Process(target=_worker_main, args=(child_end, setup), daemon=True,
                              name="distilforge-build-worker")
    process.start()
    child_end.close()
    return _Worker(process, parent_end)


def _hand_out(worker: _Worker, pending: list[str], shared: tuple[Any, ...]) -> None:
    """The costliest pending target of a format this worker has converted, else the costliest (pending is sorted)."""
    if not pending:
        return
    name = next((n for n in pending if n.split(":")[0] in worker.formats), pending[0])
    pending.remove(name)
    worker.target = name
    worker.formats.add(name.split(":")[0])
    worker.conn.send((name, *shared))


def _receive(worker: _Worker) -> tuple[Any, ...]:
    try:
        return worker.conn.recv()
    except (EOFError, OSError):
        worker.process.join(timeout=5)
        raise BuildFailure(f"{worker.target}: the build worker process died "
                           f"(exit code {worker.process.exitcode}); run with --jobs 1 to see its error") from None


class _PipeProgress:
    """A worker's progress: each step and note goes to the parent, which shows it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def step(self, item: str, what: str) -> None:
        self.conn.send(("step", item, what))

    def note(self, message: str) -> None:
        self.conn.send(("note", message))

    def __call__(self, message: str) -> None:
        self.note(message)

    def phase(self, name: str, total: int, **_: Any) -> None:
        pass

    def advance(self, item: str, result: str = "done") -> None:
        pass

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the parent dies (a killed build leaves no worker behind)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    _die_with_parent()
    for_our_process()
    os.environ[SHARED_CORES_VARIABLE] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: before its import
    from distilforge.pipeline.ladder import build_target
    from distilforge.pipeline.source import eager_runner, load_source
    from distilforge.targets import get_target
    from distilforge.validate import Reference

    progress = _PipeProgress(conn)
    try:
        source = load_source(setup.checkpoint, setup.eval_file)
        reference = None
        while (task := conn.recv()) is not None:
            name, options, source.calibration, learned = task
            take_learned(source, learned)
            reference = reference or Reference(eager_runner(source.ckpt, options.threads))
            entry = build_target(get_target(name), source, Path(setup.out), options, reference, progress)
            conn.send(("done", name, entry, learned_by(source)))
    except DistilforgeError as e:
        conn.send(("raise", e))
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException as e:  # noqa: BLE001 - anything else: one line to the parent, which stops the build
        conn.send(("raise", BuildFailure(f"build worker: {type(e).__name__}: {first_line(e)}")))
