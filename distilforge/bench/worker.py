"""One benchmark candidate in its own process: `python -m distilforge.bench.worker SPEC.json`.

Each candidate gets a fresh process so its runtime, thread pool and allocator are its own, the load time
is a cold load (imports of the runtime included), and its peak RSS is its alone. The worker loads the
candidate, prints one JSON line ({"ready": ..., "load_ms": ...}), warms every shape up (the latency shape
`warmup` times, the others once) and says how long each took ({"warm": true, "warm_ms": [...]}), then answers
the coordinator line by line on stdin/stdout:

    time I K [W] -> runs shape I of the spec W times unrecorded, then K times; prints those K latencies
                    in ms as a JSON list
    stats      -> prints {"peak_rss_mb": ...}

Libraries that print to stdout would break this protocol: the original stdout is kept for it, and
file descriptor 1 is pointed at stderr (a log the coordinator keeps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.libraries import for_our_process


def feed(batch: int, seq: int, vocab: int, choices: int | None) -> dict[str, np.ndarray]:
    """Random token ids (no padding: every position is real work), the same for every candidate."""
    shape = (batch, choices, seq) if choices else (batch, seq)
    ids = np.random.default_rng(0).integers(min(5, vocab - 1), vocab, size=shape, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def open_candidate(spec: dict[str, Any]) -> Any:
    """A runner for the spec's candidate: an artifact through its target's own runner, the eager model, or
    a floor graph."""
    threads = int(spec["threads"])
    if spec["kind"] == "artifact":
        from distilforge.validate.runners import open_by_ref

        return open_by_ref(spec["runner"], spec["out"], spec["record"], threads)
    if spec["kind"] == "eager":
        from distilforge.checkpoint import load_checkpoint
        from distilforge.validate.runners.eager import EagerRunner

        path = spec["checkpoint"]
        if path is None:  # the built-in default model, from its cache
            from distilforge.default_model import ensure_default_checkpoint

            path, _ = ensure_default_checkpoint()
        ckpt = load_checkpoint(path)
        return EagerRunner(ckpt.model, ckpt.head, threads)
    if spec["kind"] == "gemm":
        from distilforge.bench.floor import GemmRunner

        return GemmRunner(Path(spec["path"]), threads)
    raise ValueError(f"unknown candidate kind {spec['kind']!r}")


def peak_rss_mb() -> float:
    """This process's peak resident set. /proc's VmHWM first: Linux carries ru_maxrss across execve, so it
    would report the coordinator's size at fork time when that is larger than the worker's own peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def serve(spec: dict[str, Any], reply: Any) -> None:
    start = time.perf_counter()
    runner = open_candidate(spec)
    feeds = [feed(b, s, spec["vocab"], spec.get("choices")) for b, s in spec["shapes"]]
    runner.run(feeds[0])
    load_ms = (time.perf_counter() - start) * 1e3
    _say(reply, {"ready": True, "load_ms": load_ms})
    warm_ms = []  # each shape's last warm-up run: the coordinator sizes the sweep's runs from it
    for i, f in enumerate(feeds):
        for _ in range(spec["warmup"] if i == 0 else 1):
            t = time.perf_counter()
            runner.run(f)
        warm_ms.append((time.perf_counter() - t) * 1e3)
    _say(reply, {"warm": True, "warm_ms": warm_ms})
    for line in sys.stdin:
        command, *args = line.split()
        if command == "time":
            f, times = feeds[int(args[0])], []
            for _ in range(int(args[2]) if len(args) > 2 else 0):  # the turn's own warm-up, not recorded
                runner.run(f)
            for _ in range(int(args[1])):
                t = time.perf_counter()
                runner.run(f)
                times.append((time.perf_counter() - t) * 1e3)
            _say(reply, times)
        elif command == "stats":
            _say(reply, {"peak_rss_mb": peak_rss_mb()})


def _say(reply: Any, value: Any) -> None:
    reply.write(json.dumps(value) + "\n")
    reply.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        serve(spec, reply)
    except Exception as e:  # one line for the coordinator; the traceback stays in the log
        import traceback

        traceback.print_exc()
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        _say(reply, {"error": f"{type(e).__name__}: {message}"})
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for_our_process()
    sys.exit(main(sys.argv[1:]))
