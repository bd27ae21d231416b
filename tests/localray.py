"""A real Ray cluster of two nodes on this machine (`ray start --head`, then a second `ray start --address`), and a
killer that SIGKILLs a Ray worker while it runs a build-many task. Used by tests/test_many.py and
benchmarks/build_many.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
TASK_TITLE = "ray::run_task"  # what Ray names a worker process while it runs distilforge.many.task.run_task


# Token authentication is Ray's default once ~/.ray/auth_token exists (a local `ray.init()` writes it); a test
# cluster on this machine does without, and so must every process that joins it (the driver inherits this).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster(cpus_per_node: int = 1) -> Iterator[str]:
    """Start a head node and a second node joined to it, both local; yield the address; stop both. Ray's session
    folder is a short path of its own: its sockets live there, and a socket path may not exceed 107 bytes (pytest's
    tmp_path is too deep)."""
    env = {**os.environ, **RAY_ENV}
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus", str(cpus_per_node), "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
                        "--include-dashboard=false", "--temp-dir", str(temp), *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        _wait_for_nodes(address, 2, env)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True)
        if status.stdout.count(" node_") >= count:  # one "1 node_<id>" line per active node
            return
        time.sleep(1)
    raise RuntimeError(f"ray: {count} nodes did not come up at {address}: {status.stdout}{status.stderr}")


def task_processes() -> dict[int, str]:
    """pid -> title of every Ray worker running a build-many task now."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.startswith(TASK_TITLE):
            found[int(pid)] = args
    return found


class Killer(threading.Thread):
    """SIGKILL the first Ray worker seen running a task for `after` seconds (mid-build), once."""

    def __init__(self, after: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.after = after
        self.killed: int | None = None
        self.killed_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        seen: dict[int, float] = {}
        while not self.stop.is_set() and self.killed is None:
            now = time.monotonic()
            running = task_processes()
            seen = {pid: seen.get(pid, now) for pid in running}
            for pid, since in seen.items():
                if now - since >= self.after:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        self.killed, self.killed_at = pid, now
                    break
            time.sleep(0.2)
