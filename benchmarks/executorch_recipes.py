"""ExecuTorch INT8 recipes timed against each other: is a static recipe faster than the dynamic one on XNNPACK?

Lowers the default model with quantize/executorch.py's recipes `all-int8` (dynamic), `static-same-width` and
`static-qkv`, and with the recipe the static ladder no longer has (`widening`: the Linears that widen the width
static too), then times the four programs with ExecuTorch's runtime in one process, in interleaved rounds, batch
1 x 128, 2 threads, and judges each against eager on the validation cases a build uses (min cosine of the
logits, each case's as one vector). Prints and saves p50s and min cosines.

usage: python benchmarks/executorch_recipes.py [--rounds N] [--runs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distilforge.cpu import this_cpu_class  # noqa: E402

THREADS = 2
ROOT = Path(__file__).resolve().parent
RECIPES = ("all-int8", "static-same-width", "static-qkv", "widening")


def quantizer(module: Any, recipe: str) -> Any:
    """The recipe's XNNPACKQuantizer: quantize/executorch.py's own, and for `widening` the same built from a plan
    with every Linear that widens or keeps the width static (those writing an output dynamic)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    from distilforge.quantize import executorch as quantized
    from distilforge.quantize.ladder import pick

    if recipe != "widening":
        rungs = quantized.DYNAMIC_RUNGS if recipe == "all-int8" else quantized.STATIC_RUNGS
        return quantized._quantizer(module, pick(rungs, recipe), static=recipe != "all-int8")
    static, dynamic = [], []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            writes_output = name.rsplit(".", 1)[-1] in quantized.HEAD_OUTPUTS
            (static if m.out_features >= m.in_features and not writes_output else dynamic).append(name)
    return ComposableQuantizer([
        XNNPACKQuantizer().set_operator_type(torch.ops.aten.linear.default, config)
        .set_filter_function(quantized._from_modules(names))
        for names, config in ((static, get_symmetric_quantization_config(is_per_channel=True)),
                              (dynamic, get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)))])


def lower(ckpt: Any, recipe: str, calibration: Any, shape: tuple[int, ...]) -> Any:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from distilforge.exporters.executorch import export_program, fewer_collections
    from distilforge.exporters.executorch import lower as lower_program
    from distilforge.quantize import executorch as quantized

    module, _ = quantized._with_int8_embeddings(ckpt)
    with fewer_collections():
        prepared = prepare_pt2e(export_program(module, ckpt, shape, recipe).module(), quantizer(module, recipe))
        for sample in quantized._samples(ckpt, None if recipe == "all-int8" else calibration, shape):
            prepared(*sample)
        return lower_program(export_program(convert_pt2e(prepared), ckpt, shape, recipe), recipe)


def min_cosine(method: Any, ckpt: Any) -> float:
    """The worst cosine of the program's logits with eager's over the validation cases a build uses (each case's
    logits as one vector, as validate/compare.py judges logits)."""
    import numpy as np
    import torch

    from distilforge.default_model import sample_texts
    from distilforge.exporters.executorch import max_shape
    from distilforge.options import BuildOptions
    from distilforge.validate.inputs import validation_cases

    worst = 1.0
    bounds = max_shape(ckpt.info, BuildOptions())
    for case in validation_cases(ckpt.info, ckpt.tokenizer, sample_texts(), max_shape=bounds):
        feed = [torch.from_numpy(np.ascontiguousarray(case.inputs[k]).astype("int64"))
                for k in ("input_ids", "attention_mask")]
        got = method.execute(feed)[0].numpy()
        with torch.no_grad():
            want = ckpt.model(input_ids=feed[0], attention_mask=feed[1]).logits.numpy()
        cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))  # a case's, as a build's
        worst = min(worst, cos)
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="inferences per program per round")
    parser.add_argument("--out", type=Path, help="default: results/executorch_recipes.<cpu class>.json")
    args = parser.parse_args()

    import torch
    from executorch.runtime import Runtime

    from distilforge.checkpoint import load_checkpoint
    from distilforge.default_model import ensure_default_checkpoint
    from distilforge.exporters.executorch import max_shape
    from distilforge.options import BuildOptions
    from distilforge.quantize.calibration import load_calibration

    torch.manual_seed(0)
    ckpt = load_checkpoint(ensure_default_checkpoint()[0])
    shape = max_shape(ckpt.info, BuildOptions())
    calibration = load_calibration(None, ckpt.tokenizer, ckpt.head)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "executorch_recipes"
    work.mkdir(parents=True, exist_ok=True)
    runtime, methods, cosines = Runtime.get(), {}, {}
    for recipe in RECIPES:
        with torch.no_grad():
            manager = lower(ckpt, recipe, calibration, shape)
        path = work / f"{recipe}.pte"
        path.write_bytes(bytes(manager.buffer))
        methods[recipe] = runtime.load_program(str(path)).load_method("forward")
        cosines[recipe] = min_cosine(methods[recipe], ckpt)
        print(f"{recipe}: lowered, min cosine {cosines[recipe]:.5f}", file=sys.stderr)
    torch.set_num_threads(THREADS)
    one = [torch.randint(1000, 20000, (1, 128)), torch.ones(1, 128, dtype=torch.long)]
    for method in methods.values():
        for _ in range(5):
            method.execute(one)
    samples: dict[str, list[float]] = {recipe: [] for recipe in methods}
    for _ in range(args.rounds):
        for recipe, method in methods.items():
            for _ in range(args.runs):
                start = time.perf_counter()
                method.execute(one)
                samples[recipe].append((time.perf_counter() - start) * 1000)
    p50 = {recipe: statistics.median(values) for recipe, values in samples.items()}
    result = {"cpu_class": this_cpu_class(), "batch": 1, "seq": 128, "threads": THREADS, "rounds": args.rounds,
              "runs": args.runs, "p50_ms": p50, "min_cosine": cosines,
              "over_all_int8": {recipe: p50[recipe] / p50["all-int8"] for recipe in methods}}
    for recipe in methods:
        print(f"{recipe:18s} p50 {p50[recipe]:6.2f} ms ({result['over_all_int8'][recipe]:.2f}x all-int8)  "
              f"min cosine {cosines[recipe]:.5f}")
    out = args.out or ROOT / "results" / f"executorch_recipes.{result['cpu_class']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
