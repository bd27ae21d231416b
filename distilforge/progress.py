"""Progress for the long commands (build, bench): what runs now, for how long, and how much is left.

The pipeline and the bench call one small object; `make_progress` picks how it shows:

- `LiveProgress` when the user's stderr is a terminal: a rich display (spinner, phase, bar, done/total,
  elapsed, ETA, then the current item and step with its own timer), and above it a line per item done
  and per note, so the terminal keeps the history;
- `LineProgress` elsewhere (CI, pipes): a line per phase, step, item done and note, each stamped with the
  seconds since the command started, e.g. `[distilforge] 12.3s onnx:fp32: validating`;
- `SilentProgress` for --quiet and --json.

Every one of them offers these calls (the `Progress` protocol):

    progress.phase(name: str, total: int, costs: dict[str, float] | None = None, workers: int = 1) -> None
        start a phase of `total` items, e.g. phase("build", 15), phase("bench: loading", 19),
        phase("bench: timing", 19); the previous phase ends. Done/total, elapsed and the ETA are per phase.
        `costs`: each item's expected cost (the build passes each target's seconds on the default model,
        distilforge/pipeline/jobs.py), `workers`: items run at once; see `Phase.eta`.
    progress.step(item: str, what: str) -> None
        `item` (a target, a candidate) is now at step `what`, e.g. step("onnx:fp32", "validating"),
        step("onnx:int8-dynamic", "round 3/8").
    progress.advance(item: str, result: str = "done") -> None
        `item` is finished and counts towards the phase's total; `result` says how ("passed", "FAILED").
        The ETA: each item left at its cost times the rate measured so far on items of its kind, laid out on
        the workers (without costs: the mean time per finished item times the items left).
    progress.note(message: str) -> None, and progress(message), the same
        a one-off line (a recipe ladder's verdict, a skipped target); the bench's `say(str)` calls land here.
    progress.close() -> None
        stop the live display (it may start again at the next phase); the CLI calls it before printing
        a table and on any error, so the terminal is never left garbled.

`as_progress` turns None into a `SilentProgress` and a plain `Callable[[str], None]` into a `LineProgress`
that passes the bare messages (no time stamp), as the pipeline's callers got before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

Clock = Callable[[], float]


class Progress(Protocol):
    def phase(self, name: str, total: int, costs: dict[str, float] | None = None, workers: int = 1) -> None: ...
    def step(self, item: str, what: str) -> None: ...
    def advance(self, item: str, result: str = "done") -> None: ...
    def note(self, message: str) -> None: ...
    def __call__(self, message: str) -> None: ...
    def close(self) -> None: ...


def make_progress(stream: TextIO, *, quiet: bool, prefix: str = "") -> Progress:
    """Silent when `quiet`; a live display when `stream` is a terminal; else plain lines, each after `prefix`."""
    if quiet:
        return SilentProgress()
    if _is_terminal(stream):
        from rich.console import Console

        return LiveProgress(Console(file=stream, highlight=False), prefix=prefix)
    return LineProgress(lambda line: print(prefix + line, file=stream, flush=True))


def as_progress(progress: Progress | Callable[[str], None] | None) -> Progress:
    """What the Python API accepts: a progress object, a plain callable (bare messages) or None (silence)."""
    if progress is None:
        return SilentProgress()
    if hasattr(progress, "phase"):
        return progress  # type: ignore[return-value]
    return LineProgress(progress, stamp=False)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def format_duration(seconds: float) -> str:
    """42.3s, 3m12s, 1h02m05s."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class Phase:
    """A phase's count and times (clock seconds). An item's time runs from its first step (or, advanced
    without a step, from the previous item's end) to its end. Several items may run at once (`workers`)."""

    name: str
    total: int
    started: float
    # each item's expected cost (any unit: seconds on a reference machine); None: every item alike
    costs: dict[str, float] | None = None
    workers: int = 1
    done: int = 0
    busy: float = 0.0  # the finished items' time, summed
    running: dict[str, float] = field(default_factory=dict)  # item -> when its first step came
    finished: dict[str, float] = field(default_factory=dict)  # item -> how long it took
    last_done: float | None = None

    @property
    def item(self) -> str | None:
        """The latest item still running."""
        return next(reversed(self.running), None)

    def begin_item(self, item: str, now: float) -> None:
        self.running.setdefault(item, now)

    def finish_item(self, item: str, now: float) -> float:
        """Count one item done; return how long it took."""
        began = self.running.pop(item, None)
        took = now - (began if began is not None else (self.last_done or self.started))
        self.done, self.busy, self.last_done = self.done + 1, self.busy + took, now
        self.finished[item] = took
        return took

    def eta(self, now: float) -> float | None:
        """Without costs: the mean time per finished item for each item left, less what the current one has
        already run. With costs: each item left is its cost times the rate measured so far (seconds per unit of
        cost, from finished items of the same kind, i.e. format, when there are any, else from all), laid out
        on `workers` lanes in the order the costliest start first, less what the running ones have run."""
        left = self.total - self.done
        if left <= 0:
            return 0.0
        if self.costs is None:
            return self._mean_eta(now, left)
        lanes = sorted(max(self._estimate(item) - (now - began), 0.0) for item, began in self.running.items())
        lanes = (lanes + [0.0] * self.workers)[:max(self.workers, len(lanes))]
        waiting = [i for i in self.costs if i not in self.finished and i not in self.running]
        for item in sorted(waiting, key=lambda i: -self.costs[i]):
            lanes.sort()
            lanes[0] += self._estimate(item)
        return max(lanes) if lanes else 0.0

    def _mean_eta(self, now: float, left: int) -> float | None:
        if not self.done:
            return None
        mean = self.busy / self.done
        running = now - self.running[self.item] if self.item is not None else 0.0
        return mean * (left - 1) + max(mean - running, 0.0)

    def _estimate(self, item: str) -> float:
        """Seconds for `item`: its cost times the measured rate of its kind (else of all finished, else 1)."""
        assert self.costs is not None
        kind = item.split(":")[0]
        same = [i for i in self.finished if i.split(":")[0] == kind and self.costs.get(i)]
        basis = same or [i for i in self.finished if self.costs.get(i)]
        rate = sum(self.finished[i] for i in basis) / sum(self.costs[i] for i in basis) if basis else 1.0
        return self.costs.get(item, 0.0) * rate


def done_text(phase: Phase | None, item: str, result: str, now: float) -> str:
    """`onnx:fp32: passed (3/15, 12.8s, eta 2m40s)`."""
    if phase is None:
        return f"{item}: {result}"
    took = phase.finish_item(item, now)
    eta = phase.eta(now)
    left = f", eta {format_duration(eta)}" if eta and phase.done < phase.total else ""
    return f"{item}: {result} ({phase.done}/{phase.total}, {format_duration(took)}{left})"


class SilentProgress:
    """--quiet, --json and the Python API's default: nothing is shown."""

    def phase(self, name: str, total: int, costs: dict[str, float] | None = None, workers: int = 1) -> None:
        pass

    def step(self, item: str, what: str) -> None:
        pass

    def advance(self, item: str, result: str = "done") -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def __call__(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """One line per event, for logs: `12.3s onnx:fp32: validating` (seconds since the start) to `write`."""

    def __init__(self, write: Callable[[str], None], *, stamp: bool = True, clock: Clock = time.monotonic) -> None:
        self.write, self.stamp, self.clock = write, stamp, clock
        self.started = clock()
        self.current: Phase | None = None

    def phase(self, name: str, total: int, costs: dict[str, float] | None = None, workers: int = 1) -> None:
        self.current = Phase(name, total, self.clock(), costs, workers)
        self._line(f"{name}: {total} to do" + (f" on {workers} workers" if workers > 1 else ""))

    def step(self, item: str, what: str) -> None:
        if self.current is not None:
            self.current.begin_item(item, self.clock())
        self._line(f"{item}: {what}")

    def advance(self, item: str, result: str = "done") -> None:
        self._line(done_text(self.current, item, result, self.clock()))

    def note(self, message: str) -> None:
        self._line(message)

    def __call__(self, message: str) -> None:
        self.note(message)

    def close(self) -> None:
        self.current = None

    def _line(self, text: str) -> None:
        self.write(f"{self.clock() - self.started:.1f}s {text}" if self.stamp else text)


class LiveProgress:
    """A rich progress display on `console` (the user's terminal), with a line above it per item done and note."""

    def __init__(self, console: Any, *, prefix: str = "", clock: Clock = time.monotonic) -> None:
        self.console, self.prefix, self.clock = console, prefix, clock
        self.started = clock()
        self.current: Phase | None = None
        self.doing: dict[str, tuple[str, float]] = {}  # each running item: its step, and since when
        self.display: Any = None  # a running rich.progress.Progress, or None
        self.task: Any = None

    def phase(self, name: str, total: int, costs: dict[str, float] | None = None, workers: int = 1) -> None:
        self._show(name, total)
        self.current = Phase(name, total, self.clock(), costs, workers)

    def _show(self, name: str, total: int | None) -> None:
        """A fresh line in the display (started if need be); total None: no count (a step before any phase)."""
        self.current, self.doing = None, {}
        if self.display is None:
            self.display = _display(self)
            self.display.start()
        if self.task is not None:
            self.display.remove_task(self.task)
        self.task = self.display.add_task(name, total=total)

    def step(self, item: str, what: str) -> None:
        if self.task is None:
            self._show("", None)
        now = self.clock()
        self.doing[item] = (what, now)
        if self.current is not None:
            self.current.begin_item(item, now)
        self.display.refresh()

    def advance(self, item: str, result: str = "done") -> None:
        line = done_text(self.current, item, result, self.clock())
        if self.task is not None:
            self.doing.pop(item, None)
            self.display.advance(self.task)
        self.note(line)

    def note(self, message: str) -> None:
        from rich.text import Text

        # printed above the live display while it runs, as a plain line otherwise; Text: no markup parsing
        self.console.print(Text(f"{self.prefix}{self.clock() - self.started:.1f}s {message}"), soft_wrap=True)

    def __call__(self, message: str) -> None:
        self.note(message)

    def close(self) -> None:
        """Stop and erase the display (idempotent); the lines printed above it stay."""
        if self.display is not None:
            self.display.stop()
        self.display, self.task, self.current, self.doing = None, None, None, {}

    def eta_text(self) -> str:
        eta = self.current.eta(self.clock()) if self.current else None
        return "eta " + ("-:--:--" if eta is None else _clock_face(eta))

    def doing_text(self) -> str:
        """Each running item's step with its own timer (several with build --jobs), latest first."""
        now = self.clock()
        return " | ".join(f"{item}: {what} {int(now - since)}s" for item, (what, since) in reversed(self.doing.items()))


def _display(live: LiveProgress) -> Any:
    """spinner | phase | bar | done/total | elapsed | eta | item: step (with its own timer)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # redirect_*=False: sys.stdout is the summary's stream and sys.stderr the libraries' log, neither the terminal
    return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=20),
                    MofNCompleteColumn(), TimeElapsedColumn(), _computed(live.eta_text), _computed(live.doing_text),
                    console=live.console, transient=True, redirect_stdout=False, redirect_stderr=False,
                    get_time=live.clock)


def _clock_face(seconds: float) -> str:
    """0:02:05, as rich's TimeElapsedColumn shows the elapsed time beside it."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _computed(text: Callable[[], str]) -> Any:
    """A rich column showing text(), recomputed at every refresh (so the timers tick between calls)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Computed(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(text(), no_wrap=True, overflow="ellipsis")

    return Computed()
