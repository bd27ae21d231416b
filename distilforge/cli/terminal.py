"""The user's terminal while a command runs: our own one-line messages and progress go there, while file descriptor 2
(which libraries write to from C and C++ as well as Python) points at a log file kept only after an internal error."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distilforge.progress import Progress

# Where our own messages go: the user's terminal (fd 2 points at the log while a command runs).
user_err = sys.stderr


def err(line: str) -> None:
    print(line, file=user_err, flush=True)


class Log:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.keep = False


@contextlib.contextmanager
def library_output_to_log(*, enabled: bool):
    """Point fd 2 (and sys.stderr) at a temporary log while the command runs; our own
    messages keep going to the terminal. The log is kept only after an internal error."""
    global user_err
    if not enabled:
        yield Log(None)
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    handle, path = tempfile.mkstemp(prefix="distilforge-", suffix=".log")
    log = Log(path)
    previous_user_err, previous_stderr = user_err, sys.stderr
    user_err = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    os.dup2(handle, 2)
    sys.stderr = os.fdopen(os.dup(handle), "w", buffering=1)
    try:
        yield log
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(handle)
        user_err.close()
        user_err, sys.stderr = previous_user_err, previous_stderr
        if not log.keep:
            os.unlink(path)


@contextlib.contextmanager
def progress_for(args: argparse.Namespace) -> Iterator[Progress]:
    """What a long command shows while it runs (distilforge/progress.py), on the user's terminal stream;
    the live display is stopped however the command ends, before anything else is printed."""
    from distilforge.progress import make_progress

    progress = make_progress(user_err, quiet=args.quiet or args.json, prefix="[distilforge] ")
    try:
        yield progress
    finally:
        progress.close()


def wall_time(args: argparse.Namespace, started: float) -> None:
    """The summary's last line."""
    from distilforge.progress import format_duration

    if not args.quiet and not args.json:
        print(f"wall time {format_duration(time.monotonic() - started)}", flush=True)

