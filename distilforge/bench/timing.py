"""The coordinator's side: worker processes, interleaved rounds, and how busy the rest of the machine was.

Candidates are timed one at a time, in the order A B C ... in even rounds and ... C B A in odd ones, with a
pause between hand-offs so the previous worker's spinning threads are asleep. Slow drifts of a shared
machine then hit every candidate alike. For each round the share of the CPU used by other processes is
read from /proc (machine busy ticks minus our own processes' ticks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]


class WorkerError(Exception):
    """A worker failed to start or died; the message is one line."""


class WorkerHandle:
    """A persistent `distilforge.bench.worker` process; stderr goes to `log`."""

    def __init__(self, spec: dict[str, Any], spec_path: Path, log: Path) -> None:
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.log = log
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", "USE_TF": "0",
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
    """One candidate in the rounds: its worker, the (shape index, runs) it is timed on each turn, and what
    was recorded: per shape, one list of latencies (ms) per round."""

    name: str
    worker: WorkerHandle
    plan: list[tuple[int, int]]
    times: dict[int, list[list[float]]] = field(default_factory=dict)
    error: str | None = None


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


def time_rounds(timed: list[Timed], rounds: int, pause: float, say: Progress) -> list[float | None]:
    """rounds x one turn per candidate, ABC... then ...CBA, after one unrecorded warm-up round. A candidate
    whose worker dies gets its error and leaves the rounds; the others go on. Returns the foreign CPU share
    of each recorded round."""
    foreign: list[float | None] = []
    for r in range(-1, rounds):
        live = [t for t in timed if t.error is None]
        before = cpu_ticks([os.getpid(), *(t.worker.pid for t in live)])
        for t in (live if r % 2 == 0 else live[::-1]):
            time.sleep(pause)  # let the previous worker's spinning threads go to sleep
            try:
                turn = {index: t.worker.ask(f"time {index} {runs}") for index, runs in t.plan}
            except (WorkerError, ValueError) as e:
                t.error = f"worker failed while timing: {e}"
                t.worker.close()
                continue
            if r >= 0:
                for index, values in turn.items():
                    t.times.setdefault(index, []).append(values)
        after = cpu_ticks([os.getpid(), *(t.worker.pid for t in live)])
        if r >= 0:
            foreign.append(foreign_share(before, after))
            share = foreign[-1]
            say(f"round {r + 1}/{rounds}" + (f" (other processes: {share:.0%} of the CPU)" if share is not None
                                              else ""))
    return foreign


def quiet_rounds(foreign: list[float | None], limit: float) -> list[int]:
    """The rounds in which other processes used at most `limit` of the CPU, if enough remain (a third of all,
    at least 5); else every round."""
    quiet = [i for i, share in enumerate(foreign) if share is not None and share <= limit]
    return quiet if len(quiet) >= max(5, len(foreign) // 3) else list(range(len(foreign)))
