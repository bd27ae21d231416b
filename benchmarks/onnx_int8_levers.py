"""ONNX INT8 levers against the portable recipe: can any of them make every encoder MatMul int8 and pass our rule?

The fastest passing `onnx:int8-dynamic` keeps the six feed-forward output MatMuls float (`ffn-out-float`); with
every MatMul int8 (`all-int8`) the default model misses the INT8 rule. This script tries the known levers for
that on the default model's fp32-optimized graph (the one a build quantizes), each then quantized with ONNX
Runtime's `quantize_dynamic` exactly as quantize/onnx.py does (7-bit per-channel weights, the portable recipe;
embeddings and head float):

- `smooth-a0.5`: SmoothQuant-style migration of the post-GELU input's per-channel range into the feed-forward
  output weights (alpha 0.5; a Mul before each such MatMul, weights rows scaled by the inverse);
- `outliers-float-32`: LLM.int8-style decomposition: each feed-forward output MatMul's 32 input channels with
  the largest calibration range run float, the rest int8;
- `per-row-ffn-out`: the feed-forward output MatMuls with one activation scale per token (ONNX ops: Abs,
  ReduceMax, quantize, MatMulInteger, rescale), the rest per tensor;
- `nbits8-b128`: ONNX Runtime's own MatMulNBits quantizer, 8-bit blockwise weights (block 128, symmetric,
  accuracy_level 4: int8 compute with per-block activation scales) on every encoder MatMul, the attention
  QAttention as in all-int8;
- `all-int8-8bit`: all-int8 with full 8-bit weights (right only on VNNI/ARM, for reference);
- `float-top2`: the measured rung (the two layer groups the build's sensitivity table ranks most costly float),
  the one a build of the default model kept on a VNNI Xeon;
- `... (Add)`: all-int8, ffn-out-float and float-top2 with the residual Adds left as Add, as graphs were before
  2026-12-07: every loader's ORT session then fuses them into the slower SkipLayerNormalization at load.

Activation ranges come from the first 64 sample texts (the smoothing and the outlier split need them). Each model
is judged against eager on the validation cases a build uses (min cosine of each case's logits as one vector, and
the number of argmax flips), and timed with Optimum's INT8 model of the same checkpoint (optimum-cli, the same
commands as `distilforge bench`) in one process, in interleaved rounds, batch 1 x 128, 2 threads, every session
with the runner's settings. Prints and saves p50, p50 / Optimum's and the margin verdict (min cosine >= 0.993).

usage: python benchmarks/onnx_int8_levers.py [--rounds N] [--runs N] [--out FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from onnx_int8_speed import build_optimum  # noqa: E402

from distilforge.cpu import this_cpu_class  # noqa: E402
from distilforge.exporters.onnx_graph import _copy as copy_model  # noqa: E402

THREADS = 2
ROOT = Path(__file__).resolve().parent
MARGIN_COSINE = 0.993  # the INT8 rule's 0.99 plus the ladder's margin
CALIBRATION_TEXTS = 64


# ---------------------------------------------------------------------------------------------- graph edits

def ffn_out_matmuls(model: Any) -> list[Any]:
    from distilforge.quantize.onnx_layers import matmul_role

    producers = {o: n for n in model.graph.node for o in n.output}
    weights = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type == "MatMul" and matmul_role(n, producers) == "ffn_out" and n.input[1] in weights]


def input_ranges(model: Any, tensors: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each tensor's per-channel (last axis) largest magnitude over the calibration feeds' real tokens."""
    import onnx
    from onnx import helper

    probe = copy_model(model)
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = open_session(probe)
    ranges: dict[str, np.ndarray] = {}
    for feed in feeds:
        kept = feed["attention_mask"].reshape(-1).astype(bool)
        for name, value in zip(tensors, session.run(tensors, feed), strict=True):
            top = np.abs(value.reshape(-1, value.shape[-1]))[kept].max(axis=0)
            ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges


def replace_nodes(model: Any, plan: dict[str, list[Any]]) -> None:
    """Put each planned node's list of nodes in its place (the list may hold the node itself), in place."""
    order = []
    for node in model.graph.node:
        order += plan.get(node.name, [node])
    del model.graph.node[:]
    model.graph.node.extend(order)


def smooth(model: Any, feeds: list[dict[str, np.ndarray]], alpha: float = 0.5) -> tuple[Any, tuple[str, ...]]:
    from onnx import helper, numpy_helper

    out = copy_model(model)
    inits = {t.name: t for t in out.graph.initializer}
    targets = ffn_out_matmuls(out)
    ranges = input_ranges(out, [n.input[0] for n in targets], feeds)
    plan = {}
    for node in targets:
        w = numpy_helper.to_array(inits[node.input[1]])
        x_max = np.maximum(ranges[node.input[0]], 1e-5)
        w_max = np.maximum(np.abs(w).max(axis=1), 1e-5)
        scale = np.clip(x_max ** alpha / w_max ** (1 - alpha), 1e-2, 1e3).astype(np.float32)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), node.input[1]))
        out.graph.initializer.append(numpy_helper.from_array(1 / scale, f"{node.name}_smooth"))
        smoothed = f"{node.name}_smoothed_input"
        plan[node.name] = [helper.make_node("Mul", [node.input[0], f"{node.name}_smooth"], [smoothed],
                                            name=f"{node.name}_smooth"), node]
        node.input[0] = smoothed
    replace_nodes(out, plan)
    return out, ()


def outliers_float(model: Any, feeds: list[dict[str, np.ndarray]], k: int = 32) -> tuple[Any, tuple[str, ...]]:
    from onnx import helper, numpy_helper

    out = copy_model(model)
    inits = {t.name: t for t in out.graph.initializer}
    targets = ffn_out_matmuls(out)
    ranges = input_ranges(out, [n.input[0] for n in targets], feeds)
    plan, floats = {}, []
    for node in targets:
        w = numpy_helper.to_array(inits[node.input[1]])
        picked = np.sort(np.argsort(-ranges[node.input[0]])[:k]).astype(np.int64)
        rest = np.ones(w.shape[0], np.float32)
        rest[picked] = 0
        p = f"{node.name}_outliers_"
        out.graph.initializer.extend([numpy_helper.from_array(picked, p + "index"),
                                      numpy_helper.from_array(rest, p + "rest"),
                                      numpy_helper.from_array(w[picked].astype(np.float32), p + "weight")])
        x, y = node.input[0], node.output[0]
        before = [helper.make_node("Gather", [x, p + "index"], [p + "x"], axis=-1, name=p + "gather"),
                  helper.make_node("MatMul", [p + "x", p + "weight"], [p + "y"], name=p + "matmul"),
                  helper.make_node("Mul", [x, p + "rest"], [p + "x_rest"], name=p + "mask")]
        node.input[0], node.output[0] = p + "x_rest", p + "y_rest"
        plan[node.name] = [*before, node, helper.make_node("Add", [p + "y_rest", p + "y"], [y], name=p + "add")]
        floats.append(p + "matmul")
    replace_nodes(out, plan)
    return out, tuple(floats)


def per_row_ffn_out(model: Any, weight_bits: int = 7) -> tuple[Any, tuple[str, ...]]:
    """Each feed-forward output MatMul as per-token symmetric uint8 activations (zero point 128) x per-channel
    int8 weights in MatMulInteger, rescaled to float: the ops ORT would need without a fused per-row kernel."""
    from onnx import TensorProto, helper, numpy_helper

    out = copy_model(model)
    inits = {t.name: t for t in out.graph.initializer}
    constants = {"row_axis": np.array([1], np.int64), "row_127": np.array(127.0, np.float32),
                 "row_eps": np.array(1e-8, np.float32), "row_128": np.array(128.0, np.float32),
                 "row_0": np.array(0.0, np.float32), "row_255": np.array(255.0, np.float32),
                 "row_zp": np.array(128, np.uint8), "row_start": np.array([0], np.int64),
                 "row_end": np.array([-1], np.int64)}
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    top = 2 ** (weight_bits - 1) - 1
    plan = {}
    for node in ffn_out_matmuls(out):
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        k, n = w.shape
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / top
        p = f"{node.name}_row_"
        out.graph.initializer.extend([
            numpy_helper.from_array(np.clip(np.round(w / w_scale), -top, top).astype(np.int8), p + "wq"),
            numpy_helper.from_array(w_scale.astype(np.float32), p + "ws"),
            numpy_helper.from_array(np.array([-1, k], np.int64), p + "flat"),
            numpy_helper.from_array(np.array([n], np.int64), p + "n")])

        def op(kind: str, inputs: list[str], output: str, p: str = p, **attrs: Any) -> Any:
            return helper.make_node(kind, inputs, [p + output], name=p + output, **attrs)

        x = node.input[0]
        nodes = [op("Reshape", [x, p + "flat"], "x"), op("Abs", [p + "x"], "abs"),
                 op("ReduceMax", [p + "abs", "row_axis"], "max", keepdims=1), op("Max", [p + "max", "row_eps"], "top"),
                 op("Div", [p + "top", "row_127"], "scale"), op("Div", [p + "x", p + "scale"], "scaled"),
                 op("Round", [p + "scaled"], "round"), op("Add", [p + "round", "row_128"], "shift"),
                 op("Clip", [p + "shift", "row_0", "row_255"], "clip"),
                 op("Cast", [p + "clip"], "xq", to=TensorProto.UINT8),
                 op("MatMulInteger", [p + "xq", p + "wq", "row_zp"], "acc"),
                 op("Cast", [p + "acc"], "accf", to=TensorProto.FLOAT), op("Mul", [p + "accf", p + "scale"], "y1"),
                 op("Mul", [p + "y1", p + "ws"], "y2"), op("Shape", [x], "shape"),
                 op("Slice", [p + "shape", "row_start", "row_end"], "lead"),
                 op("Concat", [p + "lead", p + "n"], "out_shape", axis=0)]
        nodes.append(helper.make_node("Reshape", [p + "y2", p + "out_shape"], [node.output[0]], name=p + "out"))
        plan[node.name] = nodes
    replace_nodes(out, plan)
    return out, ("MatMulInteger",)


def residual_adds(model: Any) -> tuple[Any, tuple[str, ...]]:
    """The graph as built before 2026-12-07: each residual Sum back to Add (ORT fuses SkipLayerNormalization)."""
    out = copy_model(model)
    for node in out.graph.node:
        if node.op_type == "Sum" and len(node.input) == 2:
            node.op_type = "Add"
    return out, ()


def most_costly_groups(ckpt: Any, texts: list[str], k: int) -> tuple[str, ...]:
    """The k layer groups the build's sensitivity table for onnx:int8-dynamic ranks most costly."""
    from distilforge.options import BuildOptions
    from distilforge.quantize.onnx import dynamic_scheme
    from distilforge.quantize.sensitivity import measure
    from distilforge.validate.inputs import sensitivity_cases

    cases = sensitivity_cases(ckpt.info, ckpt.tokenizer, texts)
    table = measure(ckpt.model, ckpt.head.output_names, [c.inputs for c in cases], dynamic_scheme(BuildOptions()))
    return table.top(k)


def nbits8(model: Any, block: int = 128) -> tuple[Any, tuple[str, ...]]:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from distilforge.quantize.onnx_layers import head_nodes, matmul_role

    out = copy_model(model)
    producers = {o: n for n in out.graph.node for o in n.output}
    heads = head_nodes(out)
    encoder = [n.name for n in out.graph.node
               if n.op_type == "MatMul" and matmul_role(n, producers) is not None and n.name not in heads]
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(out, bits=8, block_size=block, is_symmetric=True, accuracy_level=4,
                                     nodes_to_include=encoder, algo_config=config)
    quantizer.process()
    return quantizer.model.model, ("MatMul",)


# ---------------------------------------------------------------------------------------------- build, judge, time

def quantize(ckpt: Any, model: Any, keep: tuple[str, ...], folder: Path, name: str, reduce_range: bool = True) -> Path:
    """quantize_dynamic with quantize/onnx.py's settings; `keep`: more op types, roles or node names kept float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from distilforge.exporters.onnx import save_model
    from distilforge.quantize.onnx import DYNAMIC_KEEP_FLOAT, _extra_options, _stage
    from distilforge.quantize.onnx_layers import kept_float_nodes

    with tempfile.TemporaryDirectory(prefix="distilforge-levers-") as tmp:
        src, dst = _stage(model, Path(tmp), "onnx:int8-dynamic")
        quantize_dynamic(src, dst, per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         nodes_to_exclude=kept_float_nodes(model, DYNAMIC_KEEP_FLOAT + keep),
                         extra_options=_extra_options())
        import onnx

        path = folder / name / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(onnx.load(dst), path, "onnx:int8-dynamic")
    return path


def open_session(model: Any) -> Any:
    """An ORT session with the runner's settings for an INT8 graph (validate/runners/onnx.py; no optimizer
    disabled, as the build and every loader run INT8 ONNX) from a path or an in-memory model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = THREADS, 1, 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def judge(session: Any, cases: list[Any], wanted: list[np.ndarray]) -> dict[str, Any]:
    names = [i.name for i in session.get_inputs()]
    worst, flips, rows = 1.0, 0, 0
    for case, want in zip(cases, wanted, strict=True):
        got = session.run(None, {k: case.inputs[k].astype(np.int64) for k in names})[0]
        worst = min(worst, float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want))))
        flips += int((got.argmax(-1) != want.argmax(-1)).sum())
        rows += got.shape[0]
    return {"min_cosine": round(worst, 5), "argmax_flips": f"{flips} of {rows}",
            "clear_of_margin": worst >= MARGIN_COSINE}


def time_interleaved(sessions: dict[str, Any], rounds: int, runs: int) -> dict[str, float]:
    ids = np.random.default_rng(0).integers(1000, 20000, size=(1, 128)).astype(np.int64)
    samples: dict[str, list[float]] = {key: [] for key in sessions}
    feeds = {key: {k: v for k, v in {"input_ids": ids, "attention_mask": np.ones_like(ids)}.items()
                   if k in [i.name for i in s.get_inputs()]} for key, s in sessions.items()}
    for key, session in sessions.items():
        for _ in range(5):
            session.run(None, feeds[key])
    for _ in range(rounds):
        for key, session in sessions.items():
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, feeds[key])
                samples[key].append((time.perf_counter() - start) * 1000)
    return {key: round(statistics.median(values), 3) for key, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="inferences per model per round")
    parser.add_argument("--out", type=Path, help="default: results/onnx_int8_levers.<cpu class>.json")
    parser.add_argument("--workdir", type=Path, help="keep the models here (default: a temporary folder)")
    args = parser.parse_args()

    import torch

    from distilforge.bench.peer import optimum_flag
    from distilforge.checkpoint import load_checkpoint
    from distilforge.cpu import cpu_flags
    from distilforge.default_model import ensure_default_checkpoint, sample_texts
    from distilforge.exporters.onnx import optimized_model
    from distilforge.options import BuildOptions
    from distilforge.validate.inputs import validation_cases

    torch.manual_seed(0)
    checkpoint = ensure_default_checkpoint()[0]
    ckpt = load_checkpoint(checkpoint)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="onnx_int8_levers-"))
    base, _ = optimized_model(ckpt, BuildOptions(), "onnx:int8-dynamic")
    texts = sample_texts()
    cases = validation_cases(ckpt.info, ckpt.tokenizer, texts)
    with torch.no_grad():
        wanted = [ckpt.model(**{k: torch.from_numpy(c.inputs[k].astype(np.int64))
                                for k in ("input_ids", "attention_mask")}).logits.numpy() for c in cases]
    encoded = ckpt.tokenizer(texts[:CALIBRATION_TEXTS], padding=True, truncation=True, max_length=128,
                             return_tensors="np")
    feeds = [{k: encoded[k][i:i + 16].astype(np.int64) for k in ("input_ids", "attention_mask")}
             for i in range(0, CALIBRATION_TEXTS, 16)]

    from distilforge.quantize.onnx_layers import group_nodes

    top2 = tuple(group_nodes(base, ckpt, most_costly_groups(ckpt, texts, 2), "onnx:int8-dynamic"))
    as_before = residual_adds(base)[0]
    levers: dict[str, Callable[[], tuple[Any, tuple[str, ...]]]] = {
        "all-int8": lambda: (base, ()),
        "ffn-out-float": lambda: (base, ("ffn_out",)),
        "float-top2": lambda: (base, top2),
        "all-int8 (Add)": lambda: (as_before, ()),
        "ffn-out-float (Add)": lambda: (as_before, ("ffn_out",)),
        "float-top2 (Add)": lambda: (as_before, top2),
        "smooth-a0.5": lambda: smooth(base, feeds),
        "outliers-float-32": lambda: outliers_float(base, feeds),
        "per-row-ffn-out": lambda: per_row_ffn_out(base),
        "nbits8-b128": lambda: nbits8(base),
    }
    paths = {}
    for name, make in levers.items():
        print(f"  quantizing {name} ...", flush=True)
        model, keep = make()
        paths[name] = quantize(ckpt, model, keep, work, name.replace(" (Add)", "-add"))
    print("  quantizing all-int8-8bit ...", flush=True)
    paths["all-int8-8bit"] = quantize(ckpt, base, (), work, "all-int8-8bit", reduce_range=False)
    sessions = {name: open_session(path) for name, path in paths.items()}  # as the build runs INT8 (none disabled)
    verdicts = {name: judge(session, cases, wanted) for name, session in sessions.items()}

    optimum = build_optimum(checkpoint, work / "optimum", optimum_flag(cpu_flags(), os.uname().machine))
    if "int8" in optimum:
        sessions["optimum:int8"] = open_session(Path(optimum["int8"]))
        verdicts["optimum:int8"] = judge(sessions["optimum:int8"], cases, wanted)
    p50 = time_interleaved(sessions, args.rounds, args.runs)
    peer = p50.get("optimum:int8")
    rows = {name: {**verdicts[name], "p50_ms": p50[name],
                   "vs_optimum_int8": round(p50[name] / peer, 3) if peer else None} for name in sessions}
    for name, row in rows.items():
        print(f"{name:22s} min cos {row['min_cosine']:.5f} ({'clear' if row['clear_of_margin'] else 'short'}) "
              f"flips {row['argmax_flips']:>9s}  p50 {row['p50_ms']:6.2f} ms  x Optimum {row['vs_optimum_int8']}")
    result = {"cpu_class": this_cpu_class(), "threads": THREADS, "batch": [1, 128], "rounds": args.rounds,
              "runs": args.runs, "margin_cosine": MARGIN_COSINE, "cases": len(cases),
              "optimum": {k: v for k, v in optimum.items() if k in ("commands", "flag", "skipped")}, "rows": rows}
    out = args.out or ROOT / "results" / f"onnx_int8_levers.{result['cpu_class']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
