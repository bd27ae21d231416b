"""INT8 OpenVINO IR with NNCF, applied to the IR `exporters.openvino.convert` makes (same tensor names).

- int8-weights: `nncf.compress_weights`, INT8_SYM per output channel, embedding tables included;
  activations are float in the IR (f32 hint), but the CPU plugin quantizes the inputs of int8-weight
  MatMuls on the fly, per group of 32 values (DYNAMIC_QUANTIZATION_GROUP_SIZE, default 32 on CPUs
  with VNNI). That is where the speed comes from: with it off (rt_info runtime_options) the default
  model ran 1.15x *slower* than fp32 on a VNNI Xeon, for cosine 0.9989 instead of 0.9983 on random 3x512.
  Without VNNI the plugin does not apply it and computes in fp32: on an AVX2 EPYC 0.97-1.15x openvino:fp32's
  p50 (bench flags it when slower).
- int8-static: `nncf.quantize` (ModelType.TRANSFORMER: SmoothQuant 0.95, the transformer ignore
  patterns; PERFORMANCE preset) calibrated on real text, except for two groups of MatMuls that keep
  float activations and get int8 weights only (`WEIGHT_ONLY`).

Why those two groups, measured on the built-in default model (128 calibration texts; INT8 rule:
cosine >= 0.99 on every case, agreement >= 98%, task within 1 point). NNCF's defaults (MIXED) gave min
cosine 0.976 (random 3x512), 0.989 (random 1x8), 0.984 (last labelled batch), task -0.8:
- the feed-forward output MatMul (ffn.lin2): its input carries the outlier features, which one
  per-tensor int8 scale cannot cover; keeping it float alone took the random cases to >= 0.995;
- the classification head (pre_classifier, classifier): per-tensor int8 on the pooled [CLS]
  vector cost the labelled batches most (0.984 -> 0.9995 when kept float).
Their weights are compressed *before* quantize: SmoothQuant ignores the ignored scope and would
rescale lin2's input channels, which ruined per-channel int8 weights compressed afterwards (min
cosine 0.979); compressed first, lin2 is left alone. Measured and rejected: SmoothQuant alpha 0.5
or off, fast_bias_correction off (also task -1.6), ffn.lin1 float instead of lin2. MIXED passes
too with the same scope (min cosine 0.9945 vs 0.9963). `STATIC.why` (in the manifest) has the numbers.

Portable builds (quantize/ladder.py) use OverflowFix.ENABLE (`overflow_fix`): 7-bit weights in every layer, as
OpenVINO's u8 x s8 kernel saturates without VNNI. Both targets climb a ladder (WEIGHTS_RUNGS, STATIC_RUNGS);
after the first rung, the measured rungs (quantize/ladder.py) keep the layer groups its sensitivity table ranks
costliest fully float (`weights_scheme`, `static_scheme`): their MatMuls, found by the torch module path in their
names (`layer_groups_in_model`), are left out of compress_weights and nncf.quantize.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.cpu import SATURATING
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import quiet
from distilforge.exporters.openvino import convert, no_telemetry, record, save
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet
from distilforge.quantize.ladder import Int8Cpu, QuantizeRun, Rung, int8_cpu, pick
from distilforge.quantize.sensitivity import Scheme, group_of, placed_names

# MatMuls that keep float activations in the static recipe (regexes over OpenVINO op names, e.g.
# "__module.model.distilbert.transformer.layer.0.ffn.lin2/aten::linear/MatMul").
WEIGHT_ONLY = (r".*\.ffn\.lin2/.*", r".*\.(pre_)?classifier/.*")

DYNAMIC_ACTIVATIONS = ("float in the IR; on a VNNI CPU the CPU plugin quantizes int8-weight MatMul inputs on the fly "
                       "per group of 32 (DYNAMIC_QUANTIZATION_GROUP_SIZE default); on AVX2 without VNNI it computes "
                       "them in fp32")


# The ladders, fastest first (quantize/ladder.py). Static: each rung adds MatMuls to the weight-only scope.
WEIGHTS_RUNGS = (Rung("int8-sym", "INT8_SYM weights per output channel"),
                 Rung("int8-asym", "INT8_ASYM weights per output channel (a zero point per channel)"))
STATIC_RUNGS = (
    Rung("ffn-out-weight-only", "int8 activations everywhere but the feed-forward output and the task head"),
    Rung("attention-out-weight-only", "the attention output projection keeps float activations too"),
    Rung("qkv-only", "only the query, key and value projections take int8 activations; the other MatMuls "
                     "int8 weights only"),
)
RUNG_WEIGHT_ONLY = {"ffn-out-weight-only": (), "attention-out-weight-only": (r".*\.attention\.out_lin/.*",),
                    "qkv-only": (r".*\.attention\.out_lin/.*", r".*\.ffn\.lin1/.*")}
# The roles the first static rung gives float activations (WEIGHT_ONLY): not measured, the measured rungs keep
# float the most costly of the others. An all-int8 first rung was measured and rejected (`STATIC.why`).
STATIC_WEIGHT_ONLY_ROLES = ("ffn_out", "head")
# A Linear's MatMul as ov.convert_model names it from the traced module path; a Linear whose result is a model
# output is named after its bias Add: "__module.model.classifier/aten::linear/Add".
LINEAR_OP = re.compile(r"^__module\.([^/]+)/aten::linear/")


@dataclass(frozen=True)
class WeightsRecipe:
    mode: str = "INT8_SYM"  # an nncf.CompressWeightsMode name
    why: str = ""


@dataclass(frozen=True)
class StaticRecipe:
    preset: str = "PERFORMANCE"  # an nncf.QuantizationPreset name
    weight_only: tuple[str, ...] = WEIGHT_ONLY  # int8 weights, float activations
    smooth_quant_alpha: float | None = None  # None: NNCF's transformer default (0.95); -1 turns it off
    fast_bias_correction: bool = True
    overflow_fix: str | None = None  # an nncf OverflowFix name; None: chosen for the CPUs (`overflow_fix`)
    why: dict[str, str] = field(default_factory=dict)


WEIGHTS = WeightsRecipe(why="INT8_SYM vs NNCF's default INT8_ASYM on the default model: min cosine 0.9988 vs "
                            "0.9982, agreement 100% and task delta 0 for both, 0.5% smaller")
STATIC = StaticRecipe(why={
    "nncf defaults (TRANSFORMER, MIXED, SmoothQuant 0.95)": "fail: min cosine 0.976 (random 3x512), "
    "0.989 (random 1x8), 0.984 (labelled texts 113-125); task -0.8",
    "weight_only ffn.lin2": "outlier input features: alone, random cases 0.976 -> >= 0.995",
    "weight_only pre_classifier, classifier": "per-tensor int8 on the pooled vector: alone, labelled "
    "batches 0.984 -> >= 0.999",
    "weights compressed before quantize": "SmoothQuant ignores the ignored scope and rescales lin2's input "
    "channels: compressing lin2 after quantize gave min cosine 0.979; before, 0.9945 and the same size",
    "preset PERFORMANCE": "symmetric activations, NNCF's transformer default is MIXED (asymmetric); with the "
    "weight-only scope above, min cosine 0.9963 vs 0.9945, agreement 100% and task delta 0 for both",
    "calibration samples": "256 instead of 128 (MIXED, same scope): min cosine 0.9945 -> 0.9963",
    "rejected": "SmoothQuant alpha 0.5 (min cosine 0.984) or off (0.976); fast_bias_correction=False "
    "(task -1.6); ffn.lin1 float instead of lin2 (0.981)",
    "first rung": "all-int8 (no weight-only scope, PERFORMANCE, 7-bit) fails: min cosine 0.9853 (labelled texts "
    "113-125), task -0.8; with the 1/2/4/8 groups the eager table ranks costliest fully float 0.9855/0.9859/"
    "0.9867/0.9868 (it ranks the head last); with the head float 0.9910, with the head and every ffn.lin2 float "
    "0.9942; ffn-out-weight-only gives 0.9949 with int8 weights there, and five fewer tries",
})


def weights_scheme(options: BuildOptions) -> Scheme:
    """How the first weights rung computes a MatMul, for the sensitivity table: 8-bit symmetric weights per
    channel, float activations (the on-the-fly input quantization of VNNI CPUs is not imitated)."""
    return Scheme(weight_bits=8, per_channel=True, activations="none")


def static_scheme(options: BuildOptions) -> Scheme:
    """How the first static rung computes a MatMul, for the sensitivity table: 7-bit weights when
    OverflowFix.ENABLE halves every layer's weight range, calibrated per-tensor activations; the weight-only
    roles are not measured. Not imitated: SmoothQuant's rescaling, NNCF's symmetric (PERFORMANCE) ranges."""
    fix, _ = overflow_fix(int8_cpu(options.int8_cpu))
    return Scheme(weight_bits=7 if fix == "ENABLE" else 8, per_channel=True, activations="static",
                  float_roles=STATIC_WEIGHT_ONLY_ROLES)


def export_int8_weights(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, run: QuantizeRun,
                        recipe: WeightsRecipe = WEIGHTS) -> ExportedArtifact:
    """int8 weights (per output channel), float activations: NNCF's data-free weight compression."""
    target = "openvino:int8-weights"
    rung = pick(WEIGHTS_RUNGS, run.rung)
    mode = "INT8_ASYM" if rung.name == "int8-asym" else recipe.mode
    nncf = _nncf()
    with quiet() as captured:
        model = convert(ckpt, target)
        floats = group_ops(model, run.float_layers, target)
        scope = {"ignored_scope": nncf.IgnoredScope(names=floats, validate=False)} if floats else {}
        model = _call(target, "nncf.compress_weights", nncf.compress_weights, model,
                      mode=getattr(nncf.CompressWeightsMode, mode), **scope)
        save(model, folder, compress_to_fp16=False)
    cpu = int8_cpu(options.int8_cpu)
    details = {"weights": "int8 per output channel, embedding tables included", "activations": DYNAMIC_ACTIVATIONS,
               "inference_precision_hint": "f32", "quantizer": f"nncf {nncf.__version__}",
               "mode": mode, "why": recipe.why, "rung": rung.name, "recipe": rung.summary,
               "float_layers": list(run.float_layers), "int8_cpu": cpu.record(WEIGHTS_CPU_WHY)}
    return record(ckpt, folder, target, details, captured.warnings)


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, run: QuantizeRun,
                       recipe: StaticRecipe = STATIC) -> ExportedArtifact:
    """int8 weights and activations (NNCF post-training quantization on real text), except the
    `weight_only` MatMuls: int8 weights, float activations (see the module docstring)."""
    target = "openvino:int8-static"
    if run.calibration is None:
        raise ExportError(f"{target}: needs calibration data and none was given")
    rung = pick(STATIC_RUNGS, run.rung)
    cpu = int8_cpu(options.int8_cpu)
    fix, fix_why = overflow_fix(cpu) if recipe.overflow_fix is None else (recipe.overflow_fix, "given")
    recipe = replace(recipe, weight_only=recipe.weight_only + RUNG_WEIGHT_ONLY[rung.name], overflow_fix=fix)
    nncf = _nncf()
    with quiet() as captured:
        model = convert(ckpt, target)
        floats = group_ops(model, run.float_layers, target)
        kept = [name for name in matching_ops(model, recipe.weight_only) if name not in floats]
        if kept:
            model = _call(target, "nncf.compress_weights", nncf.compress_weights, model,
                          mode=nncf.CompressWeightsMode.INT8_SYM,
                          ignored_scope=nncf.IgnoredScope(names=weight_ops(model, exclude=kept), validate=False))
        model = _call(target, "nncf.quantize", nncf.quantize, model,
                      _dataset(nncf, run.calibration, ckpt.info.max_length),
                      **_quantize_options(nncf, recipe, kept + floats, len(run.calibration.samples)))
        save(model, folder, compress_to_fp16=False)
    details = {"weights": "int8", "activations": f"int8 (calibrated); ignored scope: {DYNAMIC_ACTIVATIONS}",
               "inference_precision_hint": "f32", "quantizer": f"nncf {nncf.__version__}",
               "mode": "nncf.quantize, model_type TRANSFORMER", "preset": recipe.preset,
               "smooth_quant_alpha": "nncf default (0.95)" if recipe.smooth_quant_alpha is None
               else recipe.smooth_quant_alpha,
               "fast_bias_correction": recipe.fast_bias_correction, "overflow_fix": recipe.overflow_fix,
               "rung": rung.name, "recipe": rung.summary, "int8_cpu": cpu.record(fix_why),
               "ignored_scope": {"patterns": list(recipe.weight_only), "matched": len(kept),
                                 "treatment": "int8 weights (INT8_SYM per channel), float activations"},
               "float_layers": list(run.float_layers), "float_matmuls": len(floats),
               "why": recipe.why, "calibration": run.calibration.record()}
    return record(ckpt, folder, target, details, captured.warnings)


def _nncf() -> Any:
    """NNCF, imported with its telemetry off (offline, each event waits ~3 s for a timeout)."""
    os.environ.setdefault("NNCF_CI", "1")
    with no_telemetry():  # NNCF's telemetry object is made at import
        import nncf

    return nncf


def _call(target: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        with no_telemetry():
            return fn(*args, **kwargs)
    except Exception as e:
        raise ExportError(f"{target}: {what} failed: {type(e).__name__}: {_message(e)}") from e


def _message(e: BaseException) -> str:
    """The first informative line: OpenVINO's errors open with 'Exception from src/...cpp:N:'."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from src/", "Check '"))]
    return useful[0][:300] if useful else first_line(e)


def _dataset(nncf: Any, calibration: CalibrationSet, max_length: int) -> Any:
    """A list (NNCF iterates it more than once) of input dicts keyed by the IR's input names, cut
    to the model's maximum length (calibration text is tokenized up to 128; a longer sequence than
    the position table makes OpenVINO fail inside NNCF's statistics collection)."""
    return nncf.Dataset([{k: v[..., :max_length] for k, v in s.items()} for s in calibration.samples])


def _quantize_options(nncf: Any, recipe: StaticRecipe, ignored: list[str], samples: int) -> dict[str, Any]:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    options: dict[str, Any] = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": samples,
                               "preset": getattr(nncf.QuantizationPreset, recipe.preset),
                               "fast_bias_correction": recipe.fast_bias_correction}
    if ignored:
        options["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    advanced: dict[str, Any] = {"overflow_fix": getattr(OverflowFix, recipe.overflow_fix or "FIRST_LAYER")}
    if recipe.smooth_quant_alpha is not None:
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=recipe.smooth_quant_alpha)
    options["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    return options


def overflow_fix(cpu: Int8Cpu) -> tuple[str, str]:
    """NNCF's OverflowFix for the CPUs the artifact must be right on, and why.

    Without VNNI, OpenVINO's u8 x s8 kernels add pairs of products into int16 (VPMADDUBSW), which can
    saturate; OverflowFix.ENABLE quantizes the weights of every layer to 7 bits (stored as 8) so they cannot.
    NNCF's default, FIRST_LAYER, fixes the first layer only: on an AVX2 EPYC the default model's int8-static
    then failed (min cosine 0.98504, accuracy 96.0 vs 97.6), where ENABLE passed (0.99534, 97.6)."""
    if cpu.saturating:
        classes = ", ".join(c for c in cpu.classes if c in SATURATING)
        return "ENABLE", (f"must be right on {classes}: u8 x s8 products add into int16 there (VPMADDUBSW) and "
                          "can saturate, so every layer's weights are 7-bit (OverflowFix.ENABLE)")
    return "FIRST_LAYER", (f"only for {', '.join(cpu.classes)}: int32 accumulation without saturation, so "
                           "NNCF's default (OverflowFix.FIRST_LAYER)")


WEIGHTS_CPU_WHY = ("weights only: the CPU plugin runs the MatMuls in float, or quantizes their inputs on the fly "
                   "with the kernels of the CPU it runs on, so no recipe choice depends on the build machine")


def weight_ops(model: Any, exclude: list[str]) -> list[str]:
    """Names of the ops NNCF compresses weights of (MatMul, Gather), minus `exclude`."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in ("MatMul", "Gather") and op.get_friendly_name() not in exclude]


def matching_ops(model: Any, patterns: tuple[str, ...]) -> list[str]:
    """Names of the MatMuls a pattern matches in full. Scopes go to NNCF as names: the weight
    compression step needs the complement, which IgnoredScope patterns cannot say reliably."""
    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() == "MatMul" and any(re.fullmatch(p, op.get_friendly_name()) for p in patterns)]


def layer_groups_in_model(model: Any) -> dict[str, list[str]]:
    """Each layer group (quantize/sensitivity.py) -> the names of its MatMuls, from the module path in the name."""
    found: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        match = LINEAR_OP.match(op.get_friendly_name())
        if op.get_type_name() == "MatMul" and match:
            found.setdefault(group_of(match.group(1)), []).append(op.get_friendly_name())
    return found


def group_ops(model: Any, groups: tuple[str, ...], target: str) -> list[str]:
    """The MatMul names of the layer groups a measured rung keeps fully float."""
    if not groups:
        return []
    return placed_names(layer_groups_in_model(model), groups, target, "MatMul in the OpenVINO model")
