"""ExecuTorch attention: the programs lowered from transformers' attention against distilforge's plain attention.

transformers' DistilBERT attention (`scaled_dot_product_attention`) decomposes under torch.export with a guard
for fully masked rows (`any`, `logical_not`, `where`) that XNNPACK has no kernels for; exporters/executorch.py
rewrites it as plain matmul/softmax (`plain_attention`), and `lower` drops the no-op `expand_copy`s its 4-D
matmuls decompose into (XNNPACK's transform passes). This script lowers the default model three ways (transformers'
attention, the plain one, the plain one with those expands kept), fp32 and INT8 (dynamic, every Linear: the
`all-int8` recipe), and times the six programs with ExecuTorch's runtime in one process, in interleaved rounds,
batch 1 x 128, 2 threads. Prints and saves the p50s, the ratios plain / transformers' and expands dropped / kept,
each program's delegate count, portable ops and planned memory, the lowering seconds, the largest output difference
from eager on a padded batch, and the plain program's largest difference from the one with the expands kept.

usage: python benchmarks/executorch_attention.py [--rounds N] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distilforge.cpu import this_cpu_class  # noqa: E402

THREADS = 2
ROOT = Path(__file__).resolve().parent


def variants(ckpt: Any) -> dict[str, Any]:
    from distilforge.exporters.common import head_module
    from distilforge.exporters.executorch import wrap

    return {"transformers": head_module(ckpt), "plain": wrap(ckpt), NOOP_EXPANDS_KEPT: wrap(ckpt)}


NOOP_EXPANDS_KEPT = "plain, no-op expands kept"


def transform_passes(kept: bool) -> Any:
    """`lower` as it is, or (`kept`) without XNNPACK's transform passes: the 4-D matmuls' no-op `expand_copy`s
    stay in the program, as they did before 2026-12-08."""
    from executorch.backends.xnnpack.utils import configs

    if not kept:
        return contextlib.nullcontext()
    return mock.patch.object(configs, "get_transform_passes", lambda additional_passes=None: [])


def lower_fp32(module: Any, ckpt: Any, shape: tuple[int, ...]) -> Any:
    from distilforge.exporters.executorch import export_program, fewer_collections, lower

    with fewer_collections():
        return lower(export_program(module, ckpt, shape, "executorch:fp32"), "executorch:fp32")


def int8_module(module: Any, ckpt: Any, shape: tuple[int, ...]) -> Any:
    """`module` with the `all-int8` recipe of quantize/executorch.py applied (PT2E, converted)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from distilforge.exporters.executorch import example_tensors, export_program
    from distilforge.quantize import executorch as quantized
    from distilforge.quantize.ladder import pick

    module = copy.deepcopy(module)
    quantized.quantize_embeddings(module)
    quantizer = quantized._quantizer(module, pick(quantized.DYNAMIC_RUNGS, "all-int8"), static=False)
    prepared = prepare_pt2e(export_program(module, ckpt, shape, "x").module(), quantizer)
    prepared(*example_tensors(ckpt, shape))
    return convert_pt2e(prepared)


def lower_int8(module: Any, ckpt: Any, shape: tuple[int, ...]) -> Any:
    """The `all-int8` recipe of quantize/executorch.py on `module`, lowered."""
    from distilforge.exporters.executorch import export_program, fewer_collections, lower

    with fewer_collections():
        converted = int8_module(module, ckpt, shape)
        return lower(export_program(converted, ckpt, shape, "x"), "executorch:int8-dynamic")


def arguments(name: str) -> argparse.Namespace:
    """The options both ExecuTorch benchmarks take (this one and executorch_recipes.py)."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="inferences per program per round")
    parser.add_argument("--out", type=Path, help=f"default: results/{name}.<cpu class>.json")
    return parser.parse_args()


def default_model() -> tuple[Any, tuple[int, ...]]:
    """The built-in default model and the bounds its ExecuTorch programs are exported with."""
    import torch

    from distilforge.checkpoint import load_checkpoint
    from distilforge.default_model import ensure_default_checkpoint
    from distilforge.exporters.executorch import max_shape
    from distilforge.options import BuildOptions

    torch.manual_seed(0)
    ckpt = load_checkpoint(ensure_default_checkpoint()[0])
    return ckpt, max_shape(ckpt.info, BuildOptions())


def time_interleaved(methods: dict[str, Any], feed: list[Any], rounds: int, runs: int,
                     pause: float = 0.0) -> dict[str, float]:
    """Each loaded program's p50 (ms) on `feed`, THREADS threads, timed in interleaved rounds after 5 warm-ups,
    `pause` seconds before each program's turn."""
    import torch

    torch.set_num_threads(THREADS)
    for method in methods.values():
        for _ in range(5):
            method.execute(feed)
    samples: dict[str, list[float]] = {key: [] for key in methods}
    for _ in range(rounds):
        for key, method in methods.items():
            time.sleep(pause)
            for _ in range(runs):
                start = time.perf_counter()
                method.execute(feed)
                samples[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


def scratch(name: str) -> Path:
    """A fresh temporary folder for the programs a benchmark lowers, removed when the process exits (the disk is
    shared: a few hundred MB per run left in /tmp add up)."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def save(result: dict[str, Any], out: Path | None, name: str) -> None:
    out = out or ROOT / "results" / f"{name}.{result['cpu_class']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def same_outputs(one: Any, other: Any) -> float:
    """The largest difference between two loaded programs' first outputs over batches from 1 x 1 to 4 x 512, the
    smallest first and again last (a program resized by a larger call must still be right on a small one)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, seq in ((1, 1), (1, 7), (3, 33), (4, 512), (2, 128), (1, 1)):
        ids = torch.randint(1000, 20000, (batch, seq), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, seq // 2 + 1:] = 0
        worst = max(worst, float((one.execute([ids, mask])[0] - other.execute([ids, mask])[0]).abs().max()))
    return worst


def main() -> int:
    args = arguments("executorch_attention")

    import torch
    from executorch.runtime import Runtime

    from distilforge.exporters.executorch import program_facts

    ckpt, shape = default_model()
    ids = torch.randint(1000, 20000, (2, 128))
    mask = torch.ones_like(ids)
    mask[1, 70:] = 0
    with torch.no_grad():
        eager = ckpt.model(input_ids=ids, attention_mask=mask).logits
    runtime, methods, facts = Runtime.get(), {}, {}
    work = scratch("executorch_attention")
    for kind, lowering in (("fp32", lower_fp32), ("int8", lower_int8)):
        for name, module in variants(ckpt).items():
            key = f"{kind}/{name}"
            start = time.perf_counter()
            with torch.no_grad(), transform_passes(kept=name == NOOP_EXPANDS_KEPT):
                manager = lowering(module, ckpt, shape)
            seconds = time.perf_counter() - start
            path = work / f"{kind}-{name.replace(', ', '-').replace(' ', '-')}.pte"
            path.write_bytes(bytes(manager.buffer))
            methods[key] = runtime.load_program(str(path)).load_method("forward")
            out = methods[key].execute([ids, mask])[0]
            facts[key] = {**program_facts(manager), "lowering_s": round(seconds, 1),
                          "max_abs_diff_vs_eager": float((out - eager).abs().max())}
            print(f"{key}: lowered in {seconds:.1f} s, {facts[key]['xnnpack_delegates']} delegates", file=sys.stderr)
    dropped_vs_kept = {kind: same_outputs(methods[f"{kind}/plain"], methods[f"{kind}/{NOOP_EXPANDS_KEPT}"])
                       for kind in ("fp32", "int8")}
    p50 = time_interleaved(methods, [ids[:1], mask[:1]], args.rounds, args.runs)
    result = {"cpu_class": this_cpu_class(), "batch": 1, "seq": 128, "threads": THREADS, "rounds": args.rounds,
              "runs": args.runs, "p50_ms": p50, "programs": facts,
              "plain_over_transformers": {kind: p50[f"{kind}/plain"] / p50[f"{kind}/transformers"]
                                          for kind in ("fp32", "int8")},
              "noop_expands_dropped_vs_kept_max_abs_diff": dropped_vs_kept,
              "noop_expands_dropped_over_kept": {kind: p50[f"{kind}/plain"] / p50[f"{kind}/{NOOP_EXPANDS_KEPT}"]
                                                 for kind in ("fp32", "int8")}}
    for key in methods:
        print(f"{key:31s} p50 {p50[key]:7.2f} ms  delegates {facts[key]['xnnpack_delegates']:3d}  planned "
              f"{facts[key]['planned_memory_bytes'] / 1e6:6.1f} MB  lowering {facts[key]['lowering_s']:5.1f} s  "
              f"max diff vs eager {facts[key]['max_abs_diff_vs_eager']:.1e}")
    for kind, ratio in result["plain_over_transformers"].items():
        print(f"{kind}: plain / transformers' attention p50 = {ratio:.2f}")
    for kind, ratio in result["noop_expands_dropped_over_kept"].items():
        print(f"{kind}: no-op expands dropped / kept p50 = {ratio:.2f}, outputs differ by at most "
              f"{dropped_vs_kept[kind]:.1e}")
    save(result, args.out, "executorch_attention")
    return 0


if __name__ == "__main__":
    sys.exit(main())
