"""The output directory: checked before anything is written, written so nothing is half-done."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distilforge.errors import OutputDirError

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"
LOCK = ".distilforge.lock"
IN_PROGRESS = ".distilforge-building"  # present from the first write of a build until its manifest is in place
CACHE = ".distilforge-cache.json"  # the previous build's entries while a build runs (see artifacts/cache.py)
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # the disk is full, a file-size limit, a quota
PROBE_BYTES = 1 << 20


def check_out_dir(out: Path, *, force: bool = False) -> None:
    """Refuse a directory we could not write safely. Creates nothing."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out}: exists and is not a directory")
    if out.is_dir():
        entries = [p for p in out.iterdir() if not p.name.startswith(STAGING_PREFIX) and p.name != LOCK]
        ours = (out / MANIFEST).is_file() or (out / IN_PROGRESS).is_file()
        if entries and not ours and not force:
            raise OutputDirError(f"{out}: not empty and holds no {MANIFEST} from an earlier build; "
                                 "pass --force to build into it anyway")
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutputDirError(f"{out}: not writable")
        return
    parent = _existing_parent(out)
    if not parent.is_dir():
        raise OutputDirError(f"{out}: cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"{out}: cannot be created: {parent} is not writable")


def first_missing(path: Path) -> Path | None:
    """The outermost directory that creating `path` would create; None when `path` exists."""
    path, missing = path.absolute(), None
    while not path.exists():
        path, missing = path.parent, path
    return missing


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` for a whole build, so a second build, merge or build-many into it fails at
    once, naming the process that holds it. The lock is the kernel's (flock): it goes with the process, a killed
    build leaves no stale lock."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        os.close(fd)
        raise OutputDirError(f"{out}: another distilforge process is writing into it"
                             f"{f' ({holder})' if holder else ''}; wait for it to finish or choose another --out"
                             ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {_command_line()}".encode(), 0)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _command_line() -> str:
    import sys

    args = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):
        args[0] = "distilforge"
    return " ".join(args)[:300]


def file_mode() -> int:
    """The mode a new file gets here (0o666 less the umask): what records written through a temporary file take,
    as every other file of a build has (mkstemp would leave them 0600, unreadable to another user)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def begin_build(out: Path) -> None:
    """Retire the previous manifest before any artifact is replaced: until the new manifest is
    written, nothing in `out` is vouched for, and a killed build leaves no artifact listed. It is kept
    as the cache, which only says what may be reused once its files check out."""
    (out / IN_PROGRESS).write_text("a distilforge build is writing here, or was killed; rerun it\n")
    if (out / MANIFEST).is_file():
        os.replace(out / MANIFEST, out / CACHE)


def end_build(out: Path) -> None:
    (out / CACHE).unlink(missing_ok=True)
    (out / IN_PROGRESS).unlink(missing_ok=True)


def staging_dir(out: Path, folder: str) -> Path:
    """A fresh temporary folder inside `out`, renamed into place once complete."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{folder}-", dir=out))


def move_into_place(staging: Path, final: Path) -> None:
    """Replace `final` with the finished `staging` folder."""
    if final.exists():
        old = final.with_name(f"{STAGING_PREFIX}old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def clean_staging(out: Path) -> None:
    """Remove leftovers of a build that was killed mid-way."""
    if out.is_dir():
        for p in out.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def out_of_space(out: Path, error: BaseException) -> str | None:
    """The system's reason ("No space left on device", "File too large") when `error` happened because
    `out` cannot take more data; None when it is something else. Converters often lose the errno
    (numpy: "problem writing element 1024 to file"), so unless an OSError in the chain says so, a probe
    tries to write PROBE_BYTES into `out`."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return cause.strerror or os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{STAGING_PREFIX}probe-", dir=out)
    except OSError as e:
        return e.strerror if e.errno in NO_SPACE else None
    try:
        data = memoryview(bytes(PROBE_BYTES))
        while data:  # past a file-size limit a write is first cut short, then fails
            data = data[os.write(fd, data):]
    except OSError as e:
        return e.strerror if e.errno in NO_SPACE else None
    finally:
        os.close(fd)
        os.unlink(probe)
    return None


def no_space_error(out: Path, reason: str, doing: str) -> OutputDirError:
    return OutputDirError(f"{out}: no space left {doing} ({reason}); nothing new is listed in it: "
                          "free some space and rerun")


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this machine (one of another user's counts as alive): a staging or
    temporary folder named after a dead one was left by a killed run and may go."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
