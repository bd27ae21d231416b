"""fp16 and INT8 TFLite with ai-edge-quantizer, applied to the fp32 flatbuffer litert-torch wrote.

- fp16: weights stored as float16 (float casting), compute in fp32.
- int8-dynamic: int8 weights per channel (embedding table included), activations quantized at run time.
- int8-static: int8 weights and int8 activations calibrated on real text, with what DistilBERT
  needs kept in float: the attention-mask path (SELECT_V2, the mask ADD, SOFTMAX; the calibrator
  ignores HF's -3.4e38 mask value, so quantizing them lets padding tokens attend) and the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import quiet
from distilforge.exporters.tflite import MODEL_FILE, convert_fp32, declared_shapes, record, signature_name
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet, fit_to_shape

# Ops whose inputs or outputs must stay float in the static recipe (see the module docstring).
FLOAT_OPS = ("SELECT_V2", "SOFTMAX", "ADD")


def export_fp16(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    def recipe(q: Any, m: Any) -> None:
        q.add_weight_only_config(regex=".*", operation_name=m.qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=m.quantizer.AlgorithmName.FLOAT_CASTING)

    return _quantized(ckpt, folder, options, "tflite:fp16", recipe,
                      {"weights": "fp16 (fully connected and embedding weights; compute in fp32)",
                       "recipe": "FLOAT_CASTING, 16 bits, all supported ops"})


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    def recipe(q: Any, m: Any) -> None:
        q.load_quantization_recipe(m.recipe.dynamic_wi8_afp32())

    return _quantized(ckpt, folder, options, "tflite:int8-dynamic", recipe,
                      {"weights": "int8 per channel", "activations": "float, quantized at run time",
                       "recipe": "ai_edge_quantizer.recipe.dynamic_wi8_afp32"})


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    def recipe(q: Any, m: Any) -> None:
        ops, keep_float = m.qtyping.TFLOperationName, m.quantizer.AlgorithmName.NO_QUANTIZE
        q.load_quantization_recipe(m.recipe.static_wi8_ai8())
        q.add_weight_only_config(regex=".*", operation_name=ops.EMBEDDING_LOOKUP, num_bits=8)
        for op in (*FLOAT_OPS, "OUTPUT"):
            q.update_quantization_recipe(regex=".*", operation_name=getattr(ops, op), algorithm_key=keep_float)

    return _quantized(ckpt, folder, options, "tflite:int8-static", recipe,
                      {"weights": "int8 per channel (embedding table weight-only int8)",
                       "activations": "int8, calibrated", "kept_float": [*FLOAT_OPS, "model outputs"],
                       "recipe": "ai_edge_quantizer.recipe.static_wi8_ai8 + the float ops above"},
                      calibration=options.calibration)


def _quantized(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, target: str, recipe: Any,
               details: dict[str, Any], calibration: CalibrationSet | None = None) -> ExportedArtifact:
    """Convert to fp32, apply `recipe(quantizer, modules)`, calibrate when the recipe needs it, write."""
    import ai_edge_quantizer
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer import recipe as recipes

    modules = type("Modules", (), {"qtyping": qtyping, "quantizer": quantizer, "recipe": recipes})
    shapes = declared_shapes(ckpt.info, options)
    with quiet() as captured:
        q = quantizer.Quantizer(bytearray(convert_fp32(ckpt, shapes, target)))
        recipe(q, modules)
        try:
            statistics = None
            if q.need_calibration:
                if calibration is None:
                    raise ExportError(f"{target}: needs calibration data and none was given")
                statistics = q.calibrate(_calibration_feeds(calibration, shapes), num_threads=options.threads)
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


def _calibration_feeds(calibration: CalibrationSet, shapes: list[tuple[int, ...]]) -> dict[str, list[dict]]:
    """Every signature calibrated (the quantizer needs all of them), samples batched to its exact shape."""
    feeds = {}
    for shape in shapes:
        samples = [fit_to_shape(s, (1, *shape[1:])) for s in calibration.samples]
        batches = [samples[i:i + shape[0]] for i in range(0, len(samples) - shape[0] + 1, shape[0])]
        feeds[signature_name(shape)] = [
            {k: np.concatenate([b[k] for b in batch]).astype(np.int32) for k in batch[0]} for batch in batches]
    return feeds
