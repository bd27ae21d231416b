"""The driver of `build-many`: a Ray task per (checkpoint, target), then a merge per checkpoint.

With no address it starts Ray on this machine (`ray.init()`); with one it joins that cluster, whose nodes must
have the same distilforge install (the merge refuses parts built with other tool versions). Each task asks for
the plan's `threads` CPUs. A task whose worker dies (killed, out of memory) is retried by Ray; a build that fails
for a reason of its own (a bad checkpoint) is not, and is reported once per checkpoint while the others finish.
Results reach ROOT only through this driver: a task's files are unpacked into a staging folder in ROOT, and each
checkpoint's folder is written by `merge` (renames, manifest last). A target whose inputs are unchanged since the
last run into ROOT is not exported again: its entry goes to the task, which reuses it when the cache keys match.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import STAGING_PREFIX, check_out_dir, exclusive
from distilforge.artifacts.manifest import read_manifest, verify_files
from distilforge.artifacts.merge import link_or_copy, merge
from distilforge.errors import DistilforgeError, MissingBackendError, UsageError, first_line
from distilforge.many.plan import CheckpointPlan, Plan, read_plan
from distilforge.many.task import TaskResult, TaskSpec, run_task, unpack
from distilforge.progress import Progress, as_progress

MAX_RETRIES = 3  # a task whose worker process died is run again up to this many times


@dataclass
class CheckpointOutcome:
    """One checkpoint's row of the summary."""

    name: str
    out: Path
    targets: int
    passed: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed target
    reused: int = 0
    error: str | None = None  # the checkpoint could not be built at all: reported once
    nodes: dict[str, int] = field(default_factory=dict)  # node -> tasks it ran
    task_seconds: float = 0.0  # the sum of its tasks' times

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


@dataclass
class ManyResult:
    root: Path
    outcomes: list[CheckpointOutcome]
    nodes: dict[str, str]  # node id -> its address, as Ray reports it
    wall_seconds: float

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "passed": self.passed, "wall_seconds": round(self.wall_seconds, 1),
                "nodes": self.nodes,
                "checkpoints": [{**asdict(o), "out": str(o.out), "task_seconds": round(o.task_seconds, 1)}
                                for o in self.outcomes]}


def build_many(plan_path: str | Path, root: str | Path, *, address: str | None = None,
               progress: Progress | None = None, max_retries: int = MAX_RETRIES) -> ManyResult:
    started = time.monotonic()
    progress = as_progress(progress)
    plan = read_plan(plan_path)
    root = Path(root)
    for c in plan.checkpoints:
        check_out_dir(root / c.name)
    with tempfile.TemporaryDirectory(prefix="distilforge-ray-") as empty:
        ray = _connect(address, empty)
        try:  # ROOT held: a second build-many into it refuses at once (each merge locks its checkpoint's folder)
            with exclusive(root):
                nodes = {n["NodeID"]: n.get("NodeManagerAddress", "") for n in ray.nodes() if n.get("Alive")}
                progress.note(f"ray: {len(nodes)} node(s), {int(ray.cluster_resources().get('CPU', 0))} CPU(s); "
                              f"{len(plan.tasks)} task(s) of {plan.threads} CPU(s) each")
                with contextlib.redirect_stdout(_RayMessages(progress)):  # Ray prints its cluster's errors on stdout
                    outcomes = _run(ray, plan, root, progress, max_retries)
        finally:
            ray.shutdown()
    return ManyResult(root=root, outcomes=outcomes, nodes=nodes, wall_seconds=time.monotonic() - started)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once on an address nothing listens at (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: give HOST:PORT of the cluster's head, e.g. 10.0.0.1:6379, "
                         "or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UsageError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); "
                         "is the cluster's head running ('ray start --head')?") from None


class _RayMessages(io.TextIOBase):
    """Where Ray's messages to the driver go while tasks run ("Task run_task failed. There are 3 retries
    remaining..."): a progress note per message (its first line), so `--json` keeps stdout to itself."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def write(self, text: str) -> int:
        line = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
        if line and line[0]:
            self.progress.note(f"ray: {line[0]}")
        return len(text)


def _connect(address: str | None, working_dir: str) -> Any:
    """ray.init for this job. `working_dir` (an empty directory): without a job working directory Ray puts the
    driver's current directory first on every worker's sys.path, so a `distilforge` folder there (another
    checkout) was imported instead of the installed package; with one, workers import what the driver did."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise MissingBackendError("build-many runs on Ray: pip install 'distilforge[ray]'") from None
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "USE_TF", "USE_FLAX", "TF_CPP_MIN_LOG_LEVEL")
           if k in os.environ}
    kwargs: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR,
                                  runtime_env={"working_dir": working_dir, **({"env_vars": env} if env else {})})
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(f"--ray-address {address}: cannot join: {first_line(e)}" if address
                         else f"ray: cannot start on this machine: {first_line(e)}") from None
    return ray


def _run(ray: Any, plan: Plan, root: Path, progress: Progress, max_retries: int) -> list[CheckpointOutcome]:
    remote = ray.remote(run_task).options(num_cpus=plan.threads, max_retries=max_retries, retry_exceptions=False)
    pending = {remote.remote(_spec(plan, c, t, root)): (c, t) for c, t in plan.tasks}
    waiting = Counter(c.name for c, _ in plan.tasks)
    results: dict[str, list[TaskResult]] = {c.name: [] for c in plan.checkpoints}
    outcomes = {c.name: CheckpointOutcome(c.name, root / c.name, len(c.targets)) for c in plan.checkpoints}
    progress.phase("build-many", len(pending))
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}many-", dir=root))
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            checkpoint, target = pending.pop(done[0])
            result = _result(ray, done[0], checkpoint, target)
            if result.manifest is not None:  # to disk now: the driver holds no checkpoint's files in memory
                _unpack_part(result, _part_dir(staging, result), root / checkpoint.name)
            results[checkpoint.name].append(result)
            progress.advance(f"{checkpoint.name} {target}", _task_line(result))
            waiting[checkpoint.name] -= 1
            if waiting[checkpoint.name] == 0:
                _finish(checkpoint, results[checkpoint.name], outcomes[checkpoint.name], staging, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [outcomes[c.name] for c in plan.checkpoints]


def _spec(plan: Plan, c: CheckpointPlan, target: str, root: Path) -> TaskSpec:
    return TaskSpec(checkpoint=c.name, path=str(c.path), target=target, targets=c.targets, options=plan.options,
                    threads=plan.threads, eval_file=str(c.eval_file) if c.eval_file else None,
                    calibration_file=str(c.calibration_file) if c.calibration_file else None,
                    reuse=_verified_entry(root / c.name, target))


def _verified_entry(out: Path, target: str) -> dict[str, Any] | None:
    """The last run's entry for `target` in ROOT/<name>, if its files are intact (what the task may reuse)."""
    try:
        manifest = read_manifest(out)
    except DistilforgeError:
        return None
    entry = next((a for a in manifest["artifacts"] if a["target"] == target), None)
    if not entry or entry.get("error") or verify_files(out, entry):
        return None
    return entry


def _result(ray: Any, ref: Any, checkpoint: CheckpointPlan, target: str) -> TaskResult:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:  # the worker died more than max_retries times, or a bug in the task
        return TaskResult(checkpoint.name, target, error=f"{target}: the Ray task failed: {type(e).__name__}: "
                                                         f"{first_line(e)}")


def _task_line(result: TaskResult) -> str:
    where = f"on {result.node.get('node', '')[:8] or '?'}, {result.seconds:.1f}s"
    if result.error:
        return f"FAILED ({where}): {result.error.strip().splitlines()[0]}"
    entry = next(a for a in result.manifest["artifacts"] if a["target"] == result.target)
    if entry.get("error") or not (entry.get("validation") or {}).get("passed"):
        return f"FAILED ({where})"
    return f"{'up to date' if result.reused else 'passed'} ({where})"


def _finish(checkpoint: CheckpointPlan, results: list[TaskResult], outcome: CheckpointOutcome, staging: Path,
            progress: Progress) -> None:
    """Every task of one checkpoint is back: merge them into ROOT/<name>, or say once why it could not be built."""
    for r in results:
        node = r.node.get("node", "")[:8] or "?"
        outcome.nodes[node] = outcome.nodes.get(node, 0) + 1
        outcome.task_seconds += r.seconds
    errors = list(dict.fromkeys(r.error for r in results if r.error))
    if errors:
        outcome.error = errors[0] + (f" (and {len(errors) - 1} other error(s))" if len(errors) > 1 else "")
        progress.note(f"{checkpoint.name}: not built: {outcome.error}")
        return
    try:
        manifest = merge([_part_dir(staging, r) for r in results], outcome.out)
    except DistilforgeError as e:
        outcome.error = str(e)
        progress.note(f"{checkpoint.name}: not merged: {e}")
        return
    finally:
        shutil.rmtree(staging / checkpoint.name, ignore_errors=True)
    for a in manifest["artifacts"]:
        if a.get("error") or not (a.get("validation") or {}).get("passed"):
            outcome.failed.append(a.get("error") or "; ".join(a["validation"].get("failures", [])) or a["target"])
        else:
            outcome.passed += 1
    outcome.reused = sum(1 for r in results if r.reused)
    progress.note(f"{checkpoint.name}: {outcome.passed}/{outcome.targets} passed -> {outcome.out}")


def _part_dir(staging: Path, result: TaskResult) -> Path:
    return staging / result.checkpoint / result.target.replace(":", "-")


def _unpack_part(result: TaskResult, part: Path, previous: Path) -> None:
    """The task's files into `part`. A reused entry's files stayed in ROOT/<name>: they are linked in, so the merge
    checks them like any other."""
    unpack(result.archive, part)
    result.archive = b""
    for entry in result.manifest["artifacts"]:
        for f in entry["files"]:
            dest = part / f["path"]
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(previous / f["path"], dest)
