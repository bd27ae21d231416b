"""The coordinator's side: worker processes, interleaved rounds, and how busy the rest of the machine was.

Candidates are timed one at a time, in the order A B C ... in even rounds and ... C B A in odd ones, with a
pause between hand-offs so the previous worker's spinning threads are asleep. Slow drifts of a shared
machine then hit every candidate alike. For each round the share of the CPU used by other processes is
read from /proc (machine busy ticks minus our own processes' ticks).

The work follows what the figures need. Every candidate runs in every round, so all are measured over the same
stretch of time (a shared machine drifts by 10-30 % from round to round; candidates timed over different rounds
gave ratios that moved by as much between runs), and the rounds stop once every ratio to the eager reference is
known within the plan's relative error: a bootstrap over whole rounds. The other sequence lengths and batch sizes
are timed once, in one pass before the rounds (they report a median); a candidate an order of magnitude slower
than the rest is time-boxed and says so.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class WorkerError(Exception):
    """A worker failed to start or died; the message is one line."""


class WorkerHandle:
    """A persistent `distilforge.bench.worker` process; stderr goes to `log`."""

    def __init__(self, spec: dict[str, Any], spec_path: Path, log: Path) -> None:
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", "USE_TF": "0", "USE_FLAX": "0",
               "PYTHONWARNINGS": "ignore"}
        with log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-u", "-m", "distilforge.bench.worker", str(spec_path)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> Any:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(timeout=30)
            raise WorkerError(f"the worker exited with code {self.proc.returncode}{self._log_tail()}")
        value = json.loads(line)
        if isinstance(value, dict) and "error" in value:
            raise WorkerError(value["error"])
        return value

    def ask(self, command: str) -> Any:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # read() reports how it died
        return self.read()

    def _log_tail(self) -> str:
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()] if self.log.exists() \
            else []
        return f": {lines[-1].strip()[:300]}" if lines else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@dataclass
class Timed:
    """One candidate in the rounds: its worker, the main shape's runs per round, the sweep shapes' (index, runs)
    timed in the first rounds, and what was recorded: per shape, per round, the latencies (ms)."""

    name: str
    worker: WorkerHandle
    runs: int
    sweep: list[tuple[int, int]]
    times: dict[int, dict[int, list[float]]] = field(default_factory=dict)
    error: str | None = None
    stopped: int | None = None  # the last round it was timed in, once it stopped
    time_boxed: bool = False
    samples_used: int = 0  # latency-shape runs its figures come from (set by the report)

    def samples(self, index: int, rounds: list[int]) -> list[float]:
        by_round = self.times.get(index, {})
        return [x for r in rounds if r in by_round for x in by_round[r]]

    @property
    def rounds(self) -> list[int]:
        """The rounds it was timed in (the latency shape's)."""
        return sorted(self.times.get(0, {}))

    def all_samples(self, index: int) -> list[float]:
        return [x for values in self.times.get(index, {}).values() for x in values]


def cpu_ticks(pids: list[int]) -> tuple[int, int, int] | None:
    """(machine busy, machine total, busy in `pids`) in clock ticks, from /proc; None where there is no /proc."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = 0
        for pid in pids:
            try:
                rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue  # a worker that died
            own += int(rest[11]) + int(rest[12])  # utime, stime
    except OSError:
        return None
    total = sum(fields)
    return total - fields[3] - fields[4], total, own  # minus idle and iowait


def foreign_share(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    if not before or not after or after[1] <= before[1]:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[2] - before[2])) / (after[1] - before[1]))


@dataclass(frozen=True)
class Plan:
    """How long to time: until every candidate's p50 ratio to the reference is known within `rel_error` (the 95 %
    interval's half-width, relative), after at least `min_rounds` and at most `max_rounds`. A candidate
    `slow_factor` times slower than the median one in round 1 is time-boxed to `min_rounds`, with `box_ms` of
    main-shape runs per round."""

    min_rounds: int
    max_rounds: int
    rel_error: float
    pause: float
    max_foreign: float
    slow_factor: float
    box_ms: float


def median_interval(samples: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """(median, low, high): the distribution-free interval of the median from order statistics (normal
    approximation to the binomial: ranks n/2 -+ z*sqrt(n)/2); with few samples it spans all of them."""
    x = sorted(samples)
    n = len(x)
    half = z * math.sqrt(n) / 2
    low, high = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half) - 1)
    return float(statistics.median(x)), x[low], x[high]


def relative_error(samples: list[float]) -> float:
    """Half the width of the median's 95 % interval, relative to the median (inf for fewer than 2 samples)."""
    if len(samples) < 2:
        return math.inf
    median, low, high = median_interval(samples)
    return (high - low) / 2 / median if median > 0 else math.inf


def used_rounds(t: Timed, foreign: list[float | None], plan: Plan) -> list[int]:
    """The candidate's rounds in which other processes used at most `max_foreign` of the CPU, if at least
    `min_rounds` of them; else all its rounds."""
    quiet = [r for r in t.rounds if r < len(foreign) and foreign[r] is not None and foreign[r] <= plan.max_foreign]
    return quiet if len(quiet) >= plan.min_rounds else t.rounds


def time_sweeps(timed: list[Timed], pause: float, progress: Any) -> None:
    """The other sequence lengths and batch sizes, one candidate after another: each reports a median only."""
    live = [t for t in timed if t.error is None and t.sweep]
    progress.phase("bench: lengths and batches", len(live))
    for t in live:
        progress.step(t.name, ", ".join(f"{runs}x shape {index}" for index, runs in t.sweep))
        time.sleep(pause)
        try:
            for index, runs in t.sweep:
                t.times.setdefault(index, {})[0] = t.worker.ask(f"time {index} {runs}")
        except (WorkerError, ValueError) as e:
            _failed(t, f"worker failed while timing: {e}", progress)
            continue
        progress.advance(t.name)


def time_rounds(timed: list[Timed], plan: Plan, progress: Any, reference: str = "eager") -> list[float | None]:
    """Interleaved rounds (A B C ..., then ... C B A) of the latency shape over every candidate, so that all are
    measured over the same stretch of time, until each one's ratio to `reference` is known within the plan's error
    (`ratio_error`), after `min_rounds` and at most `max_rounds` rounds. A time-boxed candidate leaves after
    `min_rounds`; one whose worker dies gets its error and leaves; the others go on. Returns the foreign CPU share
    of each round."""
    foreign: list[float | None] = []
    progress.phase("bench: timing rounds", plan.max_rounds)
    for r in range(plan.max_rounds):
        live = [t for t in timed if t.error is None and t.stopped is None]
        if not live:
            break
        before = cpu_ticks([os.getpid(), *(t.worker.pid for t in live)])
        for t in (live if r % 2 == 0 else live[::-1]):
            progress.step(f"round {r + 1}", t.name)
            _take_turn(t, r, pause=plan.pause, progress=progress)
        foreign.append(foreign_share(before, cpu_ticks([os.getpid(), *(t.worker.pid for t in live)])))
        if r == 0:
            time_box(live, plan)
        worst = _worst_ratio_error(timed, reference, foreign, plan) if r + 1 >= plan.min_rounds else math.inf
        done = r + 1 == plan.max_rounds or (r + 1 >= plan.min_rounds and worst <= plan.rel_error)
        for t in live:
            if t.error is None and (done or (t.time_boxed and r + 1 >= plan.min_rounds)):
                t.stopped = r
        progress.advance(f"round {r + 1}", "" if math.isinf(worst) else
                         f"ratios to {reference} known within ±{worst:.1%} (aim ±{plan.rel_error:.0%})")
        if done:
            break
    return foreign


def ratio_error(t: Timed, ref: Timed, rounds: list[int], draws: int = 400) -> float:
    """Half the width of the 95 % bootstrap interval of p50(t) / p50(ref), relative to it, resampling whole rounds
    (both candidates' runs of a drawn round together): round-to-round drift of the machine is most of the noise
    here, and the rounds are what pairs the two candidates. inf for fewer than 2 shared rounds."""
    shared = [r for r in rounds if r in t.times.get(0, {}) and r in ref.times.get(0, {})]
    if len(shared) < 2:
        return math.inf
    ours = [np.asarray(t.times[0][r]) for r in shared]
    theirs = [np.asarray(ref.times[0][r]) for r in shared]
    point = float(np.median(np.concatenate(ours)) / np.median(np.concatenate(theirs)))
    rng = np.random.default_rng(0)
    drawn = []
    for _ in range(draws):
        pick = rng.integers(0, len(shared), len(shared))
        drawn.append(np.median(np.concatenate([ours[i] for i in pick]))
                     / np.median(np.concatenate([theirs[i] for i in pick])))
    low, high = np.percentile(drawn, [2.5, 97.5])
    return float((high - low) / 2 / point)


def _worst_ratio_error(timed: list[Timed], reference: str, foreign: list[float | None], plan: Plan) -> float:
    """The largest ratio error over the candidates still timed (the reference's own p50 error where there is no
    reference to divide by)."""
    ref = next((t for t in timed if t.name == reference and t.error is None), None)
    live = [t for t in timed if t.error is None and t.stopped is None and not t.time_boxed]
    if ref is None:
        return max((relative_error(t.samples(0, used_rounds(t, foreign, plan))) for t in live), default=0.0)
    return max((ratio_error(t, ref, used_rounds(t, foreign, plan)) for t in live if t is not ref), default=0.0)


def _take_turn(t: Timed, r: int, *, pause: float, progress: Any) -> None:
    time.sleep(pause)  # let the previous worker's spinning threads go to sleep
    try:
        # the first run after a hand-off is ~10% slower (caches, sleeping threads): one unrecorded run first
        t.times.setdefault(0, {})[r] = t.worker.ask(f"time 0 {t.runs} 1")
    except (WorkerError, ValueError) as e:
        _failed(t, f"worker failed while timing: {e}", progress)


def _failed(t: Timed, message: str, progress: Any) -> None:
    t.error = message
    t.worker.close()
    progress.note(f"{t.name}: {message}")


def time_box(live: list[Timed], plan: Plan) -> None:
    """After round 1: a candidate `slow_factor` x slower than the median candidate gets `box_ms` of runs a round
    and stops at `min_rounds`, so one slow artifact cannot make the bench's cost."""
    p50 = {t.name: statistics.median(t.samples(0, [0])) for t in live if t.error is None and t.samples(0, [0])}
    if len(p50) < 2:
        return
    typical = statistics.median(p50.values())
    for t in live:
        if t.name in p50 and p50[t.name] > plan.slow_factor * typical:
            t.time_boxed = True
            t.runs = max(2, min(t.runs, int(plan.box_ms / p50[t.name])))


