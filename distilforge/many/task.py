"""One (checkpoint, target) build, as a Ray task runs it on whichever node it lands on.

The task writes only into its own staging folder (a temporary folder named with its process id, on the node's
own disk), and returns the folder's files as a tar archive with the part's manifest: results reach ROOT through
the driver, which writes them atomically. A folder left behind by a killed task is removed by the next task on
that node. Importing this module does not import Ray.
"""

from __future__ import annotations

import io
import os
import platform
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import process_alive
from distilforge.errors import DistilforgeError
from distilforge.libraries import for_our_process

STAGING_PREFIX = "distilforge-task-"


@dataclass(frozen=True)
class TaskSpec:
    checkpoint: str  # the plan's name for it (ROOT/<name>)
    path: str
    target: str
    targets: tuple[str, ...]  # the checkpoint's whole list: the merged manifest's settings.targets
    options: dict[str, Any]
    threads: int
    eval_file: str | None = None
    calibration_file: str | None = None
    reuse: dict[str, Any] | None = None  # ROOT's entry for this target, its files verified by the driver


@dataclass
class TaskResult:
    checkpoint: str
    target: str
    manifest: dict[str, Any] | None = None  # the part's manifest; None when the build raised
    archive: bytes = b""  # the part's output folder, tar
    error: str | None = None  # why the build raised (a bad checkpoint or data file): one line
    reused: bool = False  # the last run's artifact was taken as it is (same cache keys)
    node: dict[str, Any] = field(default_factory=dict)  # where it ran: node id, host, pid
    seconds: float = 0.0


def run_task(spec: TaskSpec) -> TaskResult:
    """Build one target of one checkpoint into a fresh staging folder and hand its files back."""
    from distilforge.many.plan import build_options
    from distilforge.pipeline import Part, build

    for_our_process()
    started = time.monotonic()
    result = TaskResult(spec.checkpoint, spec.target, node=_where())
    remove_orphans()
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    try:
        options = build_options(spec.options, spec.threads, _path(spec.calibration_file))
        built = build(spec.path, staging / "out", targets=list(spec.targets), options=options,
                      eval_file=_path(spec.eval_file), keep_going=True, part=Part(names=(spec.target,)),
                      reuse={spec.target: spec.reuse} if spec.reuse else None)
        result.manifest = built.manifest
        result.reused = all(e.reused == "all" for e in built.entries)
        result.archive = pack(staging / "out")
    except DistilforgeError as e:
        result.error = str(e)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _where() -> dict[str, Any]:
    node = ""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except ImportError:
        pass
    import distilforge

    return {"node": node, "host": platform.node(), "pid": os.getpid(),
            "package": os.path.dirname(distilforge.__file__)}  # the distilforge this worker imported


def pack(folder: Path) -> bytes:
    """The artifact folders and manifest of a part, as tar bytes (the lock and staging leftovers left out)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and not rel.parts[0].startswith("."):
                tar.add(path, arcname=rel.as_posix())
    return buffer.getvalue()


def unpack(archive: bytes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
        tar.extractall(folder, filter="data")


def remove_orphans(base: Path | None = None) -> None:
    """Staging folders of tasks whose process is gone (killed mid-build) on this node."""
    base = Path(base or tempfile.gettempdir())
    for folder in base.glob(f"{STAGING_PREFIX}*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
