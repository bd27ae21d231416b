"""Lower-precision ONNX: INT8 with ONNX Runtime's own quantizer, applied to the fp32-optimized graph
(exporters/onnx.py), and fp16 with onnxruntime.transformers' float16 converter, applied to the exported graph.

- int8-dynamic: `quantize_dynamic` (QOperator): int8 weights per channel, uint8 activations quantized per
  tensor at run time; ORT runs DynamicQuantizeMatMul and QAttention. Weights are 7-bit (reduce_range) when
  the artifact must be right on an x86 CPU without VNNI, as ORT's documentation advises (`weight_recipe`).
  The embeddings stay float: QEmbedLayerNormalization quantizes the tables and the LayerNorm's gamma/beta
  with one uint8 scale each, which alone took the default model's
  min cosine from 0.9973 to 0.985 with everything else int8.
  The task head's small GEMMs (classifier, pre_classifier, qa_outputs: `head_nodes`) stay float too: they
  run on one row per sequence (or a few outputs per token), cost nothing, and dynamic quantization gives that
  row a single uint8 scale whose error lands directly in the outputs (default model min cosine 0.99255 ->
  0.99369; the benchmark model's relRMSE against eager 0.372 -> 0.258).
- int8-static: `quantize_static` (QDQ), calibrated on real text, int8 weights per channel, uint8
  activations per tensor. Fused Attention stays float (the QDQ quantizer has no Attention), and so do
  LayerNorm, Softmax, GELU, every Add (the residual stream) and the embeddings; in every rung also the FFN's
  second MatMul, whose GELU input has outlier features that a calibrated range clips on unseen inputs.
- Both climb a ladder (DYNAMIC_RUNGS, STATIC_RUNGS): the pipeline tries each rung, fastest first, and keeps
  the first that passes the INT8 rule with a margin.

Figures in the docstrings: the default model, ORT 1.32, a 2-core AVX-512 VNNI Xeon unless they say otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.cpu import SATURATING
from distilforge.errors import ExportError, first_line
from distilforge.exporters import onnx as onnx_export
from distilforge.exporters.common import Captured, file_records, input_specs, output_specs, quiet, shared_conversion
from distilforge.exporters.onnx_graph import residual_adds_as_sum
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet, fit_to_shape
from distilforge.quantize.ladder import Int8Cpu, QuantizeRun, Rung, int8_cpu, pick
from distilforge.quantize.onnx_layers import group_nodes, kept_float_nodes
from distilforge.quantize.sensitivity import Scheme

# What each target keeps in float: op types, MatMul roles (ROLES) or exact node names; each rung of a
# target's ladder adds to its list. BuildOptions.onnx_int8_keep_float replaces list and ladder.
# "head": the task head's small GEMMs after the last encoder layer (head_nodes): little work (one row per sequence
# for classification), and their quantization error goes straight into the outputs.
DYNAMIC_KEEP_FLOAT = ("EmbedLayerNormalization", "Gather", "head")
STATIC_KEEP_FLOAT = ("EmbedLayerNormalization", "Gather", "LayerNormalization", "SkipLayerNormalization", "Softmax",
                     "Gelu", "FastGelu", "BiasGelu", "Add")
STATIC_OP_TYPES = ("MatMul", "Gemm")  # what the static recipe quantizes (QDQ has no fused Attention)
# MinMax: histogram methods (Entropy, Percentile) measured worse here (min cosine 0.988 / 0.978 vs 0.9875
# with every MatMul int8) and need one padded shape. Any onnxruntime CalibrationMethod name works.
CALIBRATION_METHOD = "MinMax"
QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "QAttention", "QEmbedLayerNormalization", "QGemm",
                 "QuantizeLinear", "DequantizeLinear")

# The ladders, fastest first. Per-role error on the default model (AVX2, 7-bit weights; only that role int8):
# 1 - cosine 0.0026 QAttention, 0.0005 attention output, 0.0033 FFN in, 0.0051 FFN out (all four: 0.0089).
DYNAMIC_RUNGS = (
    Rung("all-int8", "every encoder MatMul int8 (QAttention, attention output, both feed-forward layers)"),
    Rung("ffn-out-float", "the feed-forward output MatMul float too (its post-GELU input has outlier features)"),
    Rung("attention-only", "only attention int8 (QAttention and its output MatMul); both feed-forward layers float"),
)
STATIC_RUNGS = (
    Rung("all-int8", "every encoder MatMul outside the fused attention int8 (QDQ has no Attention)"),
    Rung("ffn-out-float", "every encoder MatMul int8 but the feed-forward output (its calibrated range clips)"),
    Rung("ffn-float", "only the attention projections and attention output int8; both feed-forward layers float"),
)
RUNG_KEEP_FLOAT = {"all-int8": (), "ffn-out-float": ("ffn_out",), "attention-only": ("ffn_in", "ffn_out"),
                   "ffn-float": ("ffn_in", "ffn_out")}
USER_RUNG = Rung("keep-float", "the MatMuls, op types and node names kept float by onnx_int8_keep_float")


def dynamic_ladder(options: BuildOptions) -> tuple[Rung, ...]:
    return (USER_RUNG,) if options.onnx_int8_keep_float is not None else DYNAMIC_RUNGS


def static_ladder(options: BuildOptions) -> tuple[Rung, ...]:
    return (USER_RUNG,) if options.onnx_int8_keep_float is not None else STATIC_RUNGS


def dynamic_scheme(options: BuildOptions) -> Scheme | None:
    """How quantize_dynamic computes a MatMul (the head stays float), for the sensitivity table."""
    if options.onnx_int8_keep_float is not None:
        return None
    bits = 7 if weight_recipe(int8_cpu(options.int8_cpu)).reduce_range else 8
    return Scheme(weight_bits=bits, activations="tensor", float_roles=("head",))


def static_scheme(options: BuildOptions) -> Scheme | None:
    """How the QDQ recipe computes a MatMul (the fused attention stays float), for the sensitivity table."""
    if options.onnx_int8_keep_float is not None:
        return None
    bits = 7 if weight_recipe(int8_cpu(options.int8_cpu)).reduce_range else 8
    return Scheme(weight_bits=bits, activations="static", float_roles=("qkv",))


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                        run: QuantizeRun) -> ExportedArtifact:
    """quantize_dynamic on the fp32-optimized graph, per-channel weights, embeddings float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = "onnx:int8-dynamic"
    rung = pick(dynamic_ladder(options), run.rung)
    weights = weight_recipe(int8_cpu(options.int8_cpu))
    keep = _keep_float(options, DYNAMIC_KEEP_FLOAT, rung)
    with quiet() as captured:
        model, graph_details = onnx_export.optimized_model(ckpt, options, target)
        excluded = kept_float_nodes(model, keep) + group_nodes(model, ckpt, run.float_layers, target)
        with tempfile.TemporaryDirectory(prefix="distilforge-onnx8-") as tmp:
            src, dst = _stage(model, Path(tmp), target)
            with _root_log(captured):
                _call(target, "quantize_dynamic", quantize_dynamic, src, dst, per_channel=True,
                      reduce_range=weights.reduce_range, weight_type=QuantType.QInt8,
                      nodes_to_exclude=excluded, extra_options=_extra_options())
            quantized = _load(dst)
        external = onnx_export.save_model(quantized, folder / onnx_export.MODEL_FILE, target)
    details = {"quantizer": "onnxruntime.quantization.quantize_dynamic (QOperator)",
               "weights": weights.describe(), "activations": "uint8 per tensor, quantized at run time",
               "int8_cpu": weights.cpu.record(weights.why), "rung": rung.name, "recipe": rung.summary,
               "keep_float": list(keep), "float_layers": list(run.float_layers), "excluded_nodes": len(excluded)}
    return _artifact(ckpt, folder, target, quantized, external, graph_details, details, captured)


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                       run: QuantizeRun) -> ExportedArtifact:
    """QDQ quantize_static on the fp32-optimized graph, calibrated on run.calibration.

    The ladder's rungs calibrate alike: ORT's calibrator records every tensor of the op types it quantizes, and
    the rungs differ in the nodes they exclude, which it does not read. So the first rung of a build calibrates
    and later ones with the same op types take its ranges through quantize_static's own calibration cache."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    target = "onnx:int8-static"
    if run.calibration is None:
        raise ExportError(f"{target}: needs calibration data and none was given")
    rung = pick(static_ladder(options), run.rung)
    weights = weight_recipe(int8_cpu(options.int8_cpu))
    keep = _keep_float(options, STATIC_KEEP_FLOAT, rung)
    method = getattr(CalibrationMethod, CALIBRATION_METHOD)
    with quiet() as captured:
        model, graph_details = onnx_export.optimized_model(ckpt, options, target)
        excluded = kept_float_nodes(model, keep) + group_nodes(model, ckpt, run.float_layers, target)
        op_types = [t for t in STATIC_OP_TYPES if t not in keep]
        ranges = shared_conversion(ckpt, ("onnx:ranges", options.onnx_opset, tuple(op_types), CALIBRATION_METHOD,
                                          run.calibration.sha256, len(run.calibration.samples),
                                          ckpt.info.max_length), dict)
        with tempfile.TemporaryDirectory(prefix="distilforge-onnx8-") as tmp:
            src, dst = _stage(model, Path(tmp), target)
            cache = Path(tmp) / "ranges.json"
            if "json" in ranges:
                cache.write_text(ranges["json"], encoding="utf-8")
            with _root_log(captured):
                _call(target, "quantize_static", quantize_static, src, dst,
                      _reader(run.calibration, method, ckpt.info.max_length),
                      quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=weights.reduce_range,
                      activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                      nodes_to_exclude=excluded, calibrate_method=method, calibration_cache_path=cache,
                      extra_options=_extra_options(MatMulConstBOnly=True,
                                                   OpTypesToExcludeOutputQuantization=list(STATIC_OP_TYPES)))
            ranges.setdefault("json", cache.read_text(encoding="utf-8"))
            quantized = _load(dst)
        rewired = float_consumers_off_qdq(quantized, op_types)
        external = onnx_export.save_model(quantized, folder / onnx_export.MODEL_FILE, target)
    details = {"quantizer": "onnxruntime.quantization.quantize_static (QDQ)", "format": "QDQ",
               "weights": weights.describe(), "activations": "QUInt8 per tensor, calibrated",
               "int8_cpu": weights.cpu.record(weights.why), "rung": rung.name, "recipe": rung.summary,
               "quantized_op_types": op_types, "calibration_method": CALIBRATION_METHOD,
               "keep_float": list(keep), "float_layers": list(run.float_layers), "excluded_nodes": len(excluded),
               "float_inputs_restored": rewired, "calibration": run.calibration.record()}
    return _artifact(ckpt, folder, target, quantized, external, graph_details, details, captured)


def _keep_float(options: BuildOptions, base: tuple[str, ...], rung: Rung) -> tuple[str, ...]:
    if options.onnx_int8_keep_float is not None:
        return tuple(options.onnx_int8_keep_float)
    return base + RUNG_KEEP_FLOAT[rung.name]


@dataclass(frozen=True)
class WeightRecipe:
    cpu: Int8Cpu
    reduce_range: bool
    why: str

    def describe(self) -> str:
        return "QInt8 per channel" + (", 7-bit (reduce_range)" if self.reduce_range else "")


def weight_recipe(cpu: Int8Cpu) -> WeightRecipe:
    """7-bit weights (reduce_range) when the artifact must be right on an x86 CPU without VNNI, as ONNX Runtime's
    quantization docs advise: its u8 x s8 kernel there (VPMADDUBSW) adds pairs of products into int16, which
    saturates with full-range weights (255 x 127 x 2 > 32767; 255 x 64 x 2 fits). With VNNI (and on ARM) the
    products accumulate in int32: full 8 bits. On a VNNI Xeon 8-bit weights gave the default model min cosine
    0.99369 where 7-bit gave 0.9888, so a native build there keeps 8 bits. Weights are QInt8 everywhere: QUInt8
    takes ORT's u8u8 path, measured 2.2x slower on that Xeon, and no more accurate on an AVX2 EPYC."""
    if cpu.saturating:
        classes = ", ".join(c for c in cpu.classes if c in SATURATING)
        return WeightRecipe(cpu, True, f"must be right on {classes}: u8 x s8 products add into int16 there "
                                       "(VPMADDUBSW) and can saturate with 8-bit weights, so 7-bit weights")
    return WeightRecipe(cpu, False, f"only for {', '.join(cpu.classes)}: products accumulate in int32 without "
                                    "saturation, so full 8-bit weights")


def float_consumers_off_qdq(model: Any, quantized_types: list[str]) -> int:
    """Give every float consumer of a quantized activation (the residual Add, Attention) the float tensor back.

    The QDQ quantizer replaces a tensor by its Q->DQ copy for all consumers when only one of them is
    quantized, so the residual stream after each LayerNorm went through uint8 (min cosine 0.984 vs 0.9875).
    Returns how many inputs were restored."""
    producers = {out: n for n in model.graph.node for out in n.output}
    restored = 0
    for node in model.graph.node:
        if node.op_type in (*quantized_types, "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            original = _activation_before_qdq(name, producers)
            if original is not None:
                node.input[i] = original
                restored += 1
    return restored


def _activation_before_qdq(name: str, producers: dict[str, Any]) -> str | None:
    dq = producers.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = producers.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def _reader(calibration: CalibrationSet, method: Any, max_length: int) -> Any:
    """The samples one by one, cut to the model's maximum length (calibration text is tokenized to 128),
    unpadded for MinMax; histogram methods need one shape, so padded to the longest."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

    samples = calibration.cut(max_length)
    if method != CalibrationMethod.MinMax:
        longest = max(s["input_ids"].shape[-1] for s in samples)
        samples = [fit_to_shape(s, (*s["input_ids"].shape[:-1], longest)) for s in samples]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    return Reader()


def _extra_options(**more: Any) -> dict[str, Any]:
    """DefaultTensorType: shape inference cannot type the outputs of contrib ops (Attention), and
    without it the quantizer fails (dynamic) or silently skips the MatMul after them (static)."""
    from onnx import TensorProto

    return {"DefaultTensorType": TensorProto.FLOAT, **more}


def _stage(model: Any, tmp: Path, target: str) -> tuple[str, str]:
    src = tmp / "fp32.onnx"
    onnx_export.save_model(model, src, target)
    return str(src), str(tmp / "int8.onnx")


def _load(path: str) -> Any:
    import onnx

    return onnx.load(path)


def _call(target: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as e:
        raise ExportError(f"{target}: onnxruntime {name} failed: {type(e).__name__}: {first_line(e)}") from e


@contextlib.contextmanager
def _root_log(captured: Captured) -> Iterator[None]:
    """The quantizer logs with logging.warning() on the root logger: keep those messages as the artifact's
    warnings (a handler of our own also stops logging.basicConfig from binding to the captured stderr)."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.warnings.append(first_line(Exception(record.getMessage())))

    root, handler = logging.getLogger(), Keep(logging.WARNING)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _artifact(ckpt: LoadedCheckpoint, folder: Path, target: str, model: Any, external: bool,
              graph_details: dict[str, Any], details: dict[str, Any], captured: Captured) -> ExportedArtifact:
    from onnxruntime import __version__ as ort_version

    counts = Counter(n.op_type for n in model.graph.node)
    quantized = {k: v for k, v in sorted(counts.items()) if k in QUANTIZED_OPS}
    if not quantized:
        raise ExportError(f"{target}: the quantizer left no node quantized")
    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.onnx.export (dynamo)", "opset": _opset(model), "external_data": external,
                 **details, "quantized_operators": quantized, "onnxruntime": ort_version,
                 # none: validated and timed as every loader runs it (Optimum, Triton, Transformers.js). The
                 # residual Adds are Sums (exporters/onnx_graph.py), so no loader fuses SkipLayerNormalization.
                 "session_disabled_optimizers": [],
                 "fp32_graph": graph_details},
        warnings=list(dict.fromkeys(captured.warnings)),
    )


def _opset(model: Any) -> int:
    from distilforge.exporters import onnx_graph

    return onnx_graph.opset(model)


# ---------------------------------------------------------------------------------------------- fp16

# LayerNormalization stays fp32. Rounding its weights alone moves the default model's logits by
# 0.0125 (over the fp16 rule); on this CPU provider it is also the only op with an fp16 kernel.
FP16_KEEP_FP32 = ("LayerNormalization",)


def export_fp16(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    """fp16 weights and compute (LayerNormalization kept fp32), fp32 inputs and outputs, as `model.onnx`.

    Where ORT's CPU provider has no fp16 kernel (on x86: nearly every op), it inserts casts at load and
    computes in fp32: the file halves, the speed does not improve."""
    target = "onnx:fp16"
    with quiet() as captured:
        # residual Adds as Sum first, as in the optimized graph: no loader then fuses the slow SkipLayerNormalization
        model = _to_fp16(residual_adds_as_sum(onnx_export.exported_model(ckpt, options, target))[0], target)
        external = onnx_export.save_model(model, folder / onnx_export.MODEL_FILE, target)
    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.onnx.export (dynamo)", "opset": _opset(model),
                 "external_data": external, "converter": "onnxruntime.transformers.float16",
                 "weights": "fp16 (LayerNormalization fp32)", "keep_io_types": True,
                 "op_block_list_extra": list(FP16_KEEP_FP32),
                 "session_disabled_optimizers": list(onnx_export.SESSION_DISABLED_OPTIMIZERS),
                 "tools": onnx_export.tool_versions()},
        warnings=captured.warnings,
    )


def _to_fp16(model: Any, target: str) -> Any:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    try:
        return convert_float_to_float16(model, keep_io_types=True,
                                        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32])
    except Exception as e:
        raise ExportError(f"{target}: fp16 conversion failed: {type(e).__name__}: {first_line(e)}") from e
