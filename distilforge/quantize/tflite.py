"""fp16 and INT8 TFLite with ai-edge-quantizer, applied to the fp32 flatbuffer litert-torch wrote.

- fp16: weights stored as float16 (float casting), compute in fp32.
- int8-dynamic: int8 weights per channel (embedding table included), activations quantized at run time.
- int8-static: static INT8 for the fully connected layers, the rest of the graph in float. Measured on the
  default model (docs/investigations/tflite.md), the usual full recipe (static_wi8_ai8, even with the
  attention-mask path kept float) gives logit cosine 0.37 and runs slower than fp32 on x86 (1.3-2x):
  int8 LayerNorm pieces, GELU and attention are both lossy and slow. So:
  - every FULLY_CONNECTED op gets int8 per-channel weights and int8 calibrated input and output,
    except the width-narrowing ones (out < in: the FFN's second linear, whose post-GELU input has
    outlier channels, and the task head's classifier) and any that writes a model output (its
    calibrated range clips unseen inputs). Those run dynamic int8: int8 weights, activations
    quantized at run time (default model, worst validation cosine: all FCs static 0.89, these
    dynamic 0.990, and with the ranges below 0.994);
  - attention (BATCH_MATMUL, SOFTMAX, the mask's SELECT_V2/ADD), LayerNorm, GELU and residual ADDs
    stay float: nothing on the mask path is quantized, so padding cannot leak into real tokens (the
    calibrator drops HF's -3.4e38 mask value, which quantizing that path would lose);
  - the embedding table is weight-only int8;
  - the ladder narrows what is static (STATIC_RUNGS): last, only the query, key and value projections, the
    three layers that read one input (default model, recipe 4: 0.99331, the other rungs 0.99288 and 0.99066;
    int16 activations gave 0.99860 but ran 20x slower than fp32, so they are not a rung);
  - activation ranges are the min/max over all calibration samples. ai-edge-quantizer's default
    keeps a moving average (0.95) of each sample's range, which the later samples dominate, and it
    clipped inputs unlike them (worst cosine over 12 more random-id inputs: 0.951 against 0.988). The ranges
    are measured once per build and shared by the rungs (`_ranges`): the same bytes, a calibration less each.

Measured rungs (quantize/ladder.py): both INT8 targets describe their first recipe as a `Scheme` for the layer
sensitivity table, and keep the layer groups a rung names fully float (float weights, no quantization) with a
NO_QUANTIZE entry per FULLY_CONNECTED op, added after every other entry: ai-edge-quantizer applies the last
matching entry (quantize/tflite_layers.py finds the ops).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import quiet, shared_conversion
from distilforge.exporters.tflite import MODEL_FILE, convert_fp32, declared_shapes, record, signature_name
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet, fit_to_shape
from distilforge.quantize.ladder import QuantizeRun, Rung, int8_cpu, pick
from distilforge.quantize.sensitivity import Scheme
from distilforge.quantize.tflite_layers import fully_connected_ops, group_selectors, width

# The ladders, fastest first (quantize/ladder.py).
DYNAMIC_RUNGS = (
    Rung("all-int8", "every fully connected layer int8 weights with activations quantized at run time"),
    Rung("narrowing-weight-only", "the layers that narrow the width (feed-forward output, classifier) int8 "
                                  "weights only, computed in float"),
)
STATIC_RUNGS = (
    Rung("static-widening", "calibrated int8 activations into the layers that widen or keep the width; the "
                            "narrowing ones and those writing an output dynamic"),
    Rung("static-same-width", "calibrated int8 activations only into the layers that keep the width (attention "
                              "projections, pre-classifier); the feed-forward layers dynamic"),
    Rung("static-qkv", "calibrated int8 activations only into the attention's query, key and value projections "
                       "(the layers that read the same input); every other layer dynamic"),
)
# Which FULLY_CONNECTED layers each static rung runs dynamic (besides the narrowing ones and those writing an output)
STATIC_RUNG_DYNAMIC = {"static-widening": (), "static-same-width": ("widening",),
                       "static-qkv": ("widening", "same-width-not-qkv")}
CPU_WHY = ("XNNPACK's int8 kernels widen products to 16 or 32 bits before adding them on every x86 class "
           "(docs/cpu-classes.md), so no recipe choice depends on the build machine")

# What int8-static leaves in float (see the module docstring).
STATIC_FLOAT = ("attention (BATCH_MATMUL, SOFTMAX, mask SELECT_V2/ADD)", "LayerNorm", "GELU", "residual ADDs",
                "model outputs")


def dynamic_scheme(options: BuildOptions) -> Scheme:
    """How `all-int8` computes a Linear, for the sensitivity table: int8 symmetric weights per output channel,
    the input quantized per row (token) at run time (LiteRT's dynamic-range FULLY_CONNECTED and XNNPACK's QD8
    kernels quantize each batch row of the flattened input with its own range)."""
    return Scheme(weight_bits=8, per_channel=True, activations="token")


def static_scheme(options: BuildOptions) -> Scheme:
    """How `static-widening` computes a Linear: calibrated per-tensor int8 inputs (asymmetric: ai-edge-quantizer's
    int8 activations are) into the layers that widen or keep the width; the FFN's narrowing lin2 and the head
    (the classifier narrows and writes the output) quantized per row at run time. The head's same-width
    pre_classifier is static in the recipe but measured per row here: a Scheme says it per role."""
    return Scheme(weight_bits=8, per_channel=True, activations="static", dynamic_roles=("ffn_out", "head"))


def export_fp16(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    def recipe(q: Any, fp32: bytes) -> None:
        from ai_edge_quantizer.qtyping import TFLOperationName
        from ai_edge_quantizer.quantizer import AlgorithmName

        q.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)

    return _quantized(ckpt, folder, options, "tflite:fp16", recipe,
                      {"weights": "fp16 (fully connected and embedding weights; compute in fp32)",
                       "recipe": "FLOAT_CASTING, 16 bits, all supported ops"})


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                        run: QuantizeRun) -> ExportedArtifact:
    rung = pick(DYNAMIC_RUNGS, run.rung)
    target = "tflite:int8-dynamic"
    narrowing = rung.name == "narrowing-weight-only"
    details: dict[str, Any] = {
        "weights": "int8 per channel", "activations": "float, quantized at run time",
        "recipe": "ai_edge_quantizer.recipe.dynamic_wi8_afp32" + (
            " + add_weight_only_config(narrowing FULLY_CONNECTED, 8)" if narrowing else "") + _float_recipe(run),
        **_rung_details(rung, run, options)}

    def recipe(q: Any, fp32: bytes) -> None:
        from ai_edge_quantizer import recipe as recipes
        from ai_edge_quantizer.qtyping import TFLOperationName as ops

        q.load_quantization_recipe(recipes.dynamic_wi8_afp32())
        if narrowing:
            for scope in _fc_scopes(fp32, narrowing_only=True)[1]:
                q.add_weight_only_config(regex=f"^{re.escape(scope)}$", operation_name=ops.FULLY_CONNECTED,
                                         num_bits=8)
        details["float_ops"] = _keep_float(q, fp32, ckpt, run, target)

    return _quantized(ckpt, folder, options, target, recipe, details)


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                       run: QuantizeRun) -> ExportedArtifact:
    rung = pick(STATIC_RUNGS, run.rung)
    target = "tflite:int8-static"
    details: dict[str, Any] = _rung_details(rung, run, options)

    def recipe(q: Any, fp32: bytes) -> None:
        from ai_edge_quantizer.qtyping import TFLOperationName as ops

        q.add_static_config(regex=".*", operation_name=ops.FULLY_CONNECTED, activation_num_bits=8, weight_num_bits=8)
        kinds = STATIC_RUNG_DYNAMIC[rung.name]
        total, dynamic = _fc_scopes(fp32, narrowing_only=False, widening="widening" in kinds,
                                    same_width_but_qkv="same-width-not-qkv" in kinds)
        for scope in dynamic:
            q.add_dynamic_config(regex=f"^{re.escape(scope)}$", operation_name=ops.FULLY_CONNECTED, num_bits=8)
        q.add_weight_only_config(regex=".*", operation_name=ops.EMBEDDING_LOOKUP, num_bits=8)
        details.update(_static_details(total, len(dynamic), kinds=kinds))
        details["recipe"] += _float_recipe(run)
        details["float_ops"] = _keep_float(q, fp32, ckpt, run, target)

    return _quantized(ckpt, folder, options, target, recipe, details, calibration=run.calibration,
                      float_layers=run.float_layers)


def _keep_float(q: Any, fp32: bytes, ckpt: LoadedCheckpoint, run: QuantizeRun, target: str) -> int:
    """A NO_QUANTIZE entry for each FULLY_CONNECTED op of the run's float layer groups (how many: the return).
    Call it last: of the entries whose regex matches an op's scope, ai-edge-quantizer applies the last added
    (an entry with a regex already in the recipe replaces that one where it stands)."""
    from ai_edge_quantizer.qtyping import TFLOperationName as ops
    from ai_edge_quantizer.quantizer import AlgorithmName

    regexes = group_selectors(fp32, ckpt.model, run.float_layers, target)
    for regex in regexes:
        q.update_quantization_recipe(regex=regex, operation_name=ops.FULLY_CONNECTED,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)
    return len(regexes)


def _float_recipe(run: QuantizeRun) -> str:
    return " + NO_QUANTIZE(the float layers' FULLY_CONNECTED ops)" if run.float_layers else ""


def _rung_details(rung: Rung, run: QuantizeRun, options: BuildOptions) -> dict[str, Any]:
    return {"rung": rung.name, "rung_summary": rung.summary, "float_layers": list(run.float_layers),
            "int8_cpu": int8_cpu(options.int8_cpu).record(CPU_WHY)}


def _fc_scopes(fp32: bytes, *, narrowing_only: bool, widening: bool = False,
               same_width_but_qkv: bool = False) -> tuple[int, list[str]]:
    """(number of FULLY_CONNECTED ops, the op scopes of those picked): those narrowing the width (FFN output
    projection, classifier), unless `narrowing_only` also those writing a model output, with `widening` those
    widening it (the FFN's first layer), and with `same_width_but_qkv` those keeping it (attention output,
    pre-classifier) but the query, key and value projections: three or more layers reading one input.

    Chosen from the graph, not from tensor names (those change with the attention implementation
    and the head). The scope is what ai-edge-quantizer matches a recipe's regex against: the op's output
    tensor names joined by ';', plus a trailing ';'."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    total, scopes = 0, []
    for graph, fcs in fully_connected_ops(fp32):
        readers = Counter(op.inputs[0] for op in fcs)
        for op in fcs:
            total += 1
            kind = width(graph, op)
            writes_output = bool(set(op.outputs) & set(graph.outputs)) and not narrowing_only
            qkv = readers[op.inputs[0]] >= 3
            if kind == "narrowing" or writes_output or (widening and kind == "widening") or (
                    same_width_but_qkv and kind == "same" and not qkv):
                scopes.append(tfl.get_op_scope(op, graph.tensors))
    return total, list(dict.fromkeys(scopes))


def _static_details(total: int, dynamic: int, *, kinds: tuple[str, ...]) -> dict[str, Any]:
    which = {(): "narrowing the width (FFN lin2", ("widening",): "narrowing or widening the width (FFN lin1 and lin2",
             ("widening", "same-width-not-qkv"): "other than the query, key and value projections (attention output, "
                                                 "pre-classifier, FFN lin1 and lin2"}[kinds]
    return {
        "weights": "int8 per channel (embedding table weight-only int8)",
        "activations": f"int8, calibrated, into and out of {total - dynamic} of {total} FULLY_CONNECTED ops",
        "dynamic_int8": f"{dynamic} FULLY_CONNECTED ops {which}, whose post-GELU input has "
                        "outliers; the classifier) or writing a model output: int8 weights, activations "
                        "quantized at run time, as static int8 ranges lose too much there",
        "kept_float": list(STATIC_FLOAT),
        "kept_float_why": "int8 there is lossy and slow on CPU, and a quantized mask path lets padding leak "
                          "into real tokens",
        "activation_ranges": "min/max over all calibration samples (not ai-edge-quantizer's moving average)",
        "recipe": "add_static_config(FULLY_CONNECTED, a8, w8) + add_dynamic_config(the ops above, 8) "
                  "+ add_weight_only_config(EMBEDDING_LOOKUP, 8)",
    }


def _quantized(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, target: str, recipe: Any,
               details: dict[str, Any], calibration: CalibrationSet | None = None,
               float_layers: tuple[str, ...] = ()) -> ExportedArtifact:
    """Convert to fp32, apply `recipe(quantizer, fp32 flatbuffer)`, calibrate when the recipe needs it, write."""
    import ai_edge_quantizer
    from ai_edge_quantizer import quantizer

    shapes = declared_shapes(ckpt.info, options)
    with quiet() as captured:
        fp32 = convert_fp32(ckpt, shapes, target)
        q = quantizer.Quantizer(bytearray(fp32))
        recipe(q, fp32)
        try:
            statistics = None
            if q.need_calibration:
                if calibration is None:
                    raise ExportError(f"{target}: needs calibration data and none was given")
                statistics = _ranges(ckpt, q, fp32, calibration, shapes, options.threads, float_layers)
                details["calibration"] = calibration.record()
            model = q.quantize(statistics, enable_progress_report=False).quantized_model
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{target}: ai-edge-quantizer failed: {type(e).__name__}: {first_line(e)}") from e
        (folder / MODEL_FILE).write_bytes(bytes(model))
    details["quantizer"] = f"ai-edge-quantizer {ai_edge_quantizer.__version__}" if hasattr(
        ai_edge_quantizer, "__version__") else "ai-edge-quantizer"
    return record(ckpt, folder, target, shapes, details, captured.warnings)


def _ranges(ckpt: LoadedCheckpoint, q: Any, fp32: bytes, calibration: CalibrationSet, shapes: list[tuple[int, ...]],
            threads: int, float_layers: tuple[str, ...]) -> dict[str, Any]:
    """The calibrated ranges a static recipe quantizes with, measured once per build where they can be.

    ai-edge-quantizer calibrates every tensor of every op the recipe quantizes (statically or not) with the
    same min/max, whatever the op's config; the static recipes differ only in which ops they leave float (their
    float layer groups). So a recipe takes the ranges of an earlier one whose float groups are a subset of its
    own: those cover every tensor it quantizes, with the same values. Default model: each calibration is most
    of a static recipe's export (~10 s alone); the ladder's later rungs no longer repeat it."""
    measured = shared_conversion(ckpt, ("tflite:ranges", tuple(shapes), calibration.sha256,
                                        len(calibration.samples)), dict)
    for floats, ranges in measured.items():
        if floats <= frozenset(float_layers):
            return copy.deepcopy(ranges)
    ranges = _calibrate(q, fp32, _calibration_feeds(calibration, shapes), threads)
    measured[frozenset(float_layers)] = copy.deepcopy(ranges)
    return ranges


def _calibrate(q: Any, fp32: bytes, feeds: dict[str, list[dict]], threads: int) -> dict[str, Any]:
    """Quantizer.calibrate, but each tensor's range is the min/max over all samples (see the module docstring)."""
    from ai_edge_quantizer import calibrator, recipe_manager

    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(q.get_quantization_recipe())
    calib = calibrator.Calibrator(fp32, num_threads=threads, qsv_update_func=_widest)
    calib.calibrate(feeds, recipes)
    return calib.get_model_qsvs()


def _widest(seen: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {"min": np.minimum(seen["min"], new["min"]), "max": np.maximum(seen["max"], new["max"])}


def _calibration_feeds(calibration: CalibrationSet, shapes: list[tuple[int, ...]]) -> dict[str, list[dict]]:
    """Every signature calibrated (the quantizer needs all of them), samples batched to its exact shape."""
    feeds = {}
    for shape in shapes:
        samples = [fit_to_shape(s, (1, *shape[1:])) for s in calibration.samples]
        batches = [samples[i:i + shape[0]] for i in range(0, len(samples) - shape[0] + 1, shape[0])]
        feeds[signature_name(shape)] = [
            {k: np.concatenate([b[k] for b in batch]).astype(np.int32) for k in batch[0]} for batch in batches]
    return feeds
