"""Run an artifact's runtime in a child process, so a runtime that crashes (a segfault, an abort in
native code) fails only its own target instead of killing the build.

The child (`python -m distilforge.validate.runners.isolated`) opens the artifact with its target's own
`open_runner`, says which CPU it runs on, then answers requests on stdin/stdout: a length-prefixed .npz of
named inputs in, a length-prefixed .npz of named outputs (or a one-line JSON error) out. Validation sees an
ordinary Runner.

A runtime whose import takes seconds (ExecuTorch's, torch for TorchScript: its runner module has a `preload()`)
can have its child started ahead (`prestart`, called by the build before an export): the child imports while the
artifact is exported, and the IsolatedRunner that opens it next takes that child instead of starting one. The
child is the same command in the same environment; it only imports earlier.

`DISTILFORGE_RUNTIME_WRAPPER` (e.g. "qemu-x86_64 -cpu Haswell") is put in front of the child's command: the
artifact then runs on an emulated CPU, which is how the test suite validates on another CPU class than its
machine's (docs/cpu-classes.md). The CPU the child reports is the one the figures are recorded against.
"""

from __future__ import annotations

import atexit
import importlib
import io
import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from distilforge.artifacts.environment import cpu_record
from distilforge.artifacts.records import ExportedArtifact
from distilforge.validate.runners import open_by_ref, runner_ref

_HEADER = struct.Struct("<cQ")  # kind (b"A" arrays, b"E" error, b"R" ready), payload length
WRAPPER = "DISTILFORGE_RUNTIME_WRAPPER"


class RuntimeCrash(RuntimeError):
    """The runtime's process died while loading or running the artifact."""


class RunnerError(RuntimeError):
    """The runtime raised in the child; the message is already `Type: first line`."""


@dataclass(frozen=True)
class Launcher:
    """How to start the child on another machine than this one (e.g. an emulated arm64 CPU): the command that
    stands for `python`, the variables it needs, and what to record as the way it ran."""

    cpu: str  # what the user asked for, e.g. "arm64:cortex-a76"
    python: tuple[str, ...]
    env: dict[str, str]
    emulated: str  # how, e.g. "qemu-aarch64 10.0.2 -cpu cortex-a76"


class IsolatedRunner:
    def __init__(self, open_runner: Any, out_dir: Path, artifact: ExportedArtifact, threads: int, *,
                 launcher: Launcher | None = None) -> None:
        ref = runner_ref(open_runner)
        spec = {"runner": ref, "out": str(out_dir), "record": artifact.to_dict(), "threads": threads}
        self.output_names = tuple(o.name for o in artifact.outputs)
        command, env = _child_command(launcher)
        self._process, self._log = _take_spare((tuple(command), ref, _frozen(env))) or _start_child(command, env)
        self._send(b"S", json.dumps(spec).encode())
        self.cpu: dict[str, Any] = json.loads(self._receive())  # b"R" once the artifact is open: the child's CPU
        if launcher:
            self.cpu.update(spec=launcher.cpu, emulated=launcher.emulated)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        buffer = io.BytesIO()
        np.savez(buffer, **inputs)
        self._send(b"A", buffer.getvalue())
        return _arrays(self._receive())

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, kind: bytes, payload: bytes) -> None:
        try:
            self._process.stdin.write(_HEADER.pack(kind, len(payload)) + payload)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crash() from None

    def _receive(self) -> bytes:
        kind, payload = _read_message(self._process.stdout)
        if kind is None:
            raise self._crash()
        if kind == b"E":
            raise RunnerError(payload.decode("utf-8", "replace"))
        return payload

    def _crash(self) -> RuntimeCrash:
        code = self._process.wait()
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        last = f"; its last words: {lines[-1][:200]}" if lines else ""
        return RuntimeCrash(f"the runtime's process {how}{last}")


# (command, runner ref, environment) -> a child started ahead for that runner, waiting for its spec
_spares: dict[tuple[Any, ...], tuple[subprocess.Popen, Any]] = {}


def prestart(open_runner: Any) -> None:
    """Start, on this machine, the child the next IsolatedRunner of `open_runner` will take, when its runner module
    has a `preload()` (a runtime whose import takes seconds); it imports meanwhile. At most one waits per runner."""
    ref = runner_ref(open_runner)
    if not hasattr(importlib.import_module(open_runner.__module__), "preload"):
        return
    command, env = _child_command(None)
    key = (tuple(command), ref, _frozen(env))
    if key not in _spares:
        _spares[key] = _start_child([*command, "--preload", ref], env)


def _take_spare(key: tuple[Any, ...]) -> tuple[subprocess.Popen, Any] | None:
    """The child started ahead for `key`, if it is still alive (one that died importing is replaced by a fresh one,
    whose open then says what is wrong)."""
    spare = _spares.pop(key, None)
    if spare is not None and spare[0].poll() is not None:
        spare[1].close()
        return None
    return spare


def _child_command(launcher: Launcher | None) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(launcher.env if launcher else {})}
    python = list(launcher.python) if launcher else [*shlex.split(os.environ.get(WRAPPER, "")), sys.executable]
    return [*python, "-m", "distilforge.validate.runners.isolated"], env


def _start_child(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Any]:
    log = tempfile.TemporaryFile()
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env), log


def _frozen(env: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(env.items())


@atexit.register
def _end_spares() -> None:
    """Children started ahead and never taken: their stdin closes, they read no spec and end."""
    while _spares:
        process, log = _spares.popitem()[1]
        process.stdin.close()
        process.wait()
        log.close()


def _read_message(stream: BinaryIO) -> tuple[bytes | None, bytes]:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None, b""
    kind, length = _HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None, b""
    return kind, payload


def _arrays(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload)) as data:
        return {name: data[name] for name in data.files}


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    def reply(kind: bytes, payload: bytes) -> None:
        replies.write(_HEADER.pack(kind, len(payload)) + payload)
        replies.flush()

    kind, payload = _read_message(requests)
    if kind is None:  # started ahead and never used
        return
    spec = json.loads(payload)
    try:
        runner = open_by_ref(spec["runner"], spec["out"], spec["record"], int(spec["threads"]))
    except Exception as e:
        reply(b"E", _one_line(e))
        return
    reply(b"R", json.dumps(cpu_record()).encode())
    while True:
        kind, payload = _read_message(requests)
        if kind is None:
            return
        try:
            outputs = runner.run(_arrays(payload))
        except Exception as e:
            reply(b"E", _one_line(e))
            continue
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        reply(b"A", buffer.getvalue())


def _one_line(e: BaseException) -> bytes:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".encode()


def _preload(ref: str) -> None:
    """Import what the runner `ref` imports when it opens an artifact (its module's `preload()`); any failure is
    left for the real open to report."""
    try:
        importlib.import_module(ref.partition(":")[0]).preload()
    except Exception:  # noqa: BLE001, S110 - open_by_ref raises it again, as one line
        pass


if __name__ == "__main__":
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # libraries that print must not corrupt the protocol
    sys.stdout = sys.stderr
    if sys.argv[1:2] == ["--preload"]:
        _preload(sys.argv[2])
    _serve(requests, replies)
    replies.flush()
    sys.stderr.flush()
    # Nothing is left to write: skip the interpreter's teardown (1.5 s after an ExecuTorch or TorchScript
    # runtime, measured), which the parent waits for after every validation.
    os._exit(0)
