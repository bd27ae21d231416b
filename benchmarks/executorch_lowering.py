"""What `traced_once` (exporters/executorch.py) saves in ExecuTorch's lowering, and that it changes no byte.

Lowers the default model's fp32 program and its INT8 one (dynamic, every Linear: the `all-int8` recipe) through
distilforge's `lower`, with `traced_once` and with it passed over (the program handed to ExecuTorch's edge step
as exported, which then re-traces it twice), in alternating rounds in one process. Each lowering starts from a
fresh torch.export of the same module; only `lower` is timed. Prints and saves each program's median seconds per
way, the ratio, and whether the two ways gave the same sha256 in every round.

usage: python benchmarks/executorch_lowering.py [--rounds N] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from executorch_attention import default_model, int8_module, save  # noqa: E402

from distilforge.cpu import this_cpu_class  # noqa: E402


def lowered(module: Any, ckpt: Any, shape: tuple[int, ...], once: bool) -> tuple[float, str]:
    """Seconds of `lower` and the program's sha256; `once=False`: `traced_once` hands the program on as it is."""
    from distilforge.exporters import executorch as exporter

    program = exporter.export_program(module, ckpt, shape, "x")
    as_exported = mock.patch.object(exporter, "traced_once", lambda program, _: contextlib.nullcontext(program))
    with contextlib.nullcontext() if once else as_exported, exporter.fewer_collections():
        start = time.perf_counter()
        manager = exporter.lower(program, "x")
        seconds = time.perf_counter() - start
    return seconds, hashlib.sha256(bytes(manager.buffer)).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="default: results/executorch_lowering.<cpu class>.json")
    args = parser.parse_args()

    import torch

    from distilforge.exporters.executorch import wrap

    ckpt, shape = default_model()
    plain = wrap(ckpt)
    modules = {"fp32": plain, "int8 all-int8": int8_module(plain, ckpt, shape)}
    seconds: dict[str, dict[str, list[float]]] = {name: {"once": [], "twice": []} for name in modules}
    digests: dict[str, set[str]] = {name: set() for name in modules}
    with torch.no_grad():
        for round_ in range(args.rounds):
            for name, module in modules.items():
                for way in (("once", "twice") if round_ % 2 == 0 else ("twice", "once")):
                    took, digest = lowered(module, ckpt, shape, once=way == "once")
                    seconds[name][way].append(took)
                    digests[name].add(digest)
                    print(f"round {round_ + 1} {name} {way}: {took:.1f} s {digest[:12]}", flush=True)
    result: dict[str, Any] = {"cpu_class": this_cpu_class(), "rounds": args.rounds, "programs": {}}
    for name in modules:
        once, twice = (statistics.median(seconds[name][way]) for way in ("once", "twice"))
        result["programs"][name] = {"once_s": round(once, 2), "twice_s": round(twice, 2),
                                    "once_over_twice": round(once / twice, 3),
                                    "same_bytes": len(digests[name]) == 1}
        print(f"{name}: traced once {once:.1f} s, as ExecuTorch does {twice:.1f} s ({once / twice:.2f}x); "
              f"same bytes: {len(digests[name]) == 1}")
    save(result, args.out, "executorch_lowering")
    return 0 if all(p["same_bytes"] for p in result["programs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
