"""ExecuTorch INT8 recipes timed against each other: is a static recipe faster than the dynamic one on XNNPACK?

Lowers the default model with quantize/executorch.py's recipes `all-int8` (dynamic) and `static-same-width`, and
with the two the static ladder no longer has (`widening`: the Linears that widen the width static too;
`static-qkv`: only the query, key and value projections static), then times the four programs with
ExecuTorch's runtime in one process, in interleaved rounds, batch 1 x 128, 2 threads, and judges each against
eager on the validation cases a build uses (min cosine of the logits, each case's as one vector). Prints and saves
p50s and min cosines.

usage: python benchmarks/executorch_recipes.py [--rounds N] [--runs N] [--out FILE]
(shares its options, timing and saving with executorch_attention.py, beside it)
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from executorch_attention import THREADS, arguments, default_model, save, scratch, time_interleaved  # noqa: E402

from distilforge.cpu import this_cpu_class  # noqa: E402

RECIPES = ("all-int8", "static-same-width", "static-qkv", "widening")


def quantizer(module: Any, recipe: str) -> Any:
    """The recipe's XNNPACKQuantizer: quantize/executorch.py's own for its recipes; for the two it no longer has,
    the same built from a plan: `widening`, every Linear that widens or keeps the width static, `static-qkv`, only
    the query, key and value projections (those writing an output dynamic in both)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    from distilforge.quantize import executorch as quantized
    from distilforge.quantize.ladder import pick
    from distilforge.quantize.sensitivity import group_of, role_of

    if recipe in ("all-int8", "static-same-width"):
        rungs = quantized.DYNAMIC_RUNGS if recipe == "all-int8" else quantized.STATIC_RUNGS
        return quantized._quantizer(module, pick(rungs, recipe), static=recipe != "all-int8")
    static, dynamic = [], []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            writes_output = name.rsplit(".", 1)[-1] in quantized.HEAD_OUTPUTS
            chosen = (m.out_features >= m.in_features if recipe == "widening"
                      else role_of(group_of(name)) == "qkv")
            (static if chosen and not writes_output else dynamic).append(name)
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
    args = arguments("executorch_recipes")

    import torch
    from executorch.runtime import Runtime

    from distilforge.quantize.calibration import load_calibration

    ckpt, shape = default_model()
    calibration = load_calibration(None, ckpt.tokenizer, ckpt.head)
    work = scratch("executorch_recipes")
    runtime, methods, cosines = Runtime.get(), {}, {}
    for recipe in RECIPES:
        with torch.no_grad():
            manager = lower(ckpt, recipe, calibration, shape)
        path = work / f"{recipe}.pte"
        path.write_bytes(bytes(manager.buffer))
        methods[recipe] = runtime.load_program(str(path)).load_method("forward")
        cosines[recipe] = min_cosine(methods[recipe], ckpt)
        print(f"{recipe}: lowered, min cosine {cosines[recipe]:.5f}", file=sys.stderr)
    feed = [torch.randint(1000, 20000, (1, 128)), torch.ones(1, 128, dtype=torch.long)]
    p50 = time_interleaved(methods, feed, args.rounds, args.runs)
    result = {"cpu_class": this_cpu_class(), "batch": 1, "seq": 128, "threads": THREADS, "rounds": args.rounds,
              "runs": args.runs, "p50_ms": p50, "min_cosine": cosines,
              "over_all_int8": {recipe: p50[recipe] / p50["all-int8"] for recipe in methods}}
    for recipe in methods:
        print(f"{recipe:18s} p50 {p50[recipe]:6.2f} ms ({result['over_all_int8'][recipe]:.2f}x all-int8)  "
              f"min cosine {cosines[recipe]:.5f}")
    save(result, args.out, "executorch_recipes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
