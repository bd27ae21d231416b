"""ONNX export through torch.onnx (the dynamo exporter in torch 2.13), dynamic batch and sequence axes.

`onnx:fp32` is the exporter's graph as is. `onnx:fp32-optimized` rewrites it for ORT's CPU provider
(onnx_graph.py), keeping the dynamic axes. Lower precisions of these graphs are in quantize/onnx.py.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters import onnx_graph
from distilforge.exporters.common import (
    example_inputs,
    file_records,
    head_module,
    input_specs,
    output_specs,
    quiet,
    shared_conversion,
)
from distilforge.options import BuildOptions
from distilforge.shapes import EXPORT_CHOICES

MODEL_FILE = "model.onnx"
# External weights: Optimum's, Transformers.js's and the Hub's name for them (earlier builds wrote model.onnx.data)
EXTERNAL_DATA = "model.onnx_data"
# ORT re-creates the slow SkipLayerNormalization from Add + LayerNormalization when a session loads; the
# optimized graph's residual Adds are Sums (onnx_graph.residual_adds_as_sum), so every loader is spared it. Still
# recorded for the fp32-optimized artifact, for a graph where that step was skipped.
SESSION_DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
# A rewrite must not move any output by more than this, relative to the output's largest magnitude.
# Sound rewrites measured <= 7e-7; dropping the attention mask moved a tiny random model by 1e-3.
REWRITE_TOLERANCE = 2e-5

Rewrite = Callable[[Any], tuple[Any, dict[str, int]]]


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    """Write `model.onnx` + `model.onnx_data` (its weights, as external data) into `folder`: the exporter's graph
    as it is; only the external data's file name is changed to the one ONNX consumers expect."""
    import onnx

    with quiet() as captured:
        model = exported_model(ckpt, options, "onnx:fp32")
        try:
            onnx.save_model(model, str(folder / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=EXTERNAL_DATA)
        except Exception as e:
            raise ExportError(f"onnx:fp32: saving {MODEL_FILE} failed: {type(e).__name__}: {first_line(e)}") from e
        _readable_external_data(folder)
    return ExportedArtifact(
        target="onnx:fp32", files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.onnx.export (dynamo)", "opset": options.onnx_opset, "external_data": True},
        warnings=captured.warnings,
    )


def export_optimized(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    """The fp32 graph with attention fused for ORT's CPU provider, quantizer-ready, as `model.onnx`."""
    target = "onnx:fp32-optimized"
    with quiet() as captured:
        model, graph_details = optimized_model(ckpt, options, target)
        external = save_model(model, folder / MODEL_FILE, target)
    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.onnx.export (dynamo)", "opset": onnx_graph.opset(model),
                 "external_data": external, **graph_details},
        warnings=captured.warnings,
    )


def optimized_model(ckpt: LoadedCheckpoint, options: BuildOptions, target: str) -> tuple[Any, dict[str, Any]]:
    """The in-memory fp32-optimized graph and what was done to it (steps, fused operators, session settings).

    Shared by `onnx:fp32-optimized` and the INT8 targets (quantize/onnx.py), which quantize this graph: made
    once per build, each caller gets its own copy. The caller captures library noise."""
    model, details = shared_conversion(ckpt, ("onnx:optimized", options.onnx_opset),
                                       lambda: _optimize(ckpt, options, target), _copy_with_details)
    return model, details


def _optimize(ckpt: LoadedCheckpoint, options: BuildOptions, target: str) -> tuple[Any, dict[str, Any]]:
    model = exported_model(ckpt, options, target)
    heads, hidden = int(ckpt.info.config["n_heads"]), int(ckpt.info.config["dim"])
    steps: list[tuple[str, Rewrite]] = [
        ("onnxscript attention fusion", onnx_graph.fuse_attention),
        ("attention mask as mask_index", onnx_graph.attention_mask_index),
        ("onnxruntime.transformers optimize_model",
         partial(onnx_graph.ort_transformer_optimize, num_heads=heads, hidden_size=hidden)),
        ("Gelu to the ONNX domain", onnx_graph.gelu_to_onnx),
        ("residual Add as Sum (no SkipLayerNormalization at load)", onnx_graph.residual_adds_as_sum),
    ]
    model, applied = _rewrite(ckpt, model, steps, target)
    fused = _fused_counts(model, heads, hidden, target)
    return model, {"steps": applied, "fused_operators": fused,
                   "fusion_options": {"skip_layer_norm": False, "bias_skip_layer_norm": False, "bias_gelu": False},
                   "session_disabled_optimizers": list(SESSION_DISABLED_OPTIMIZERS),
                   "rewrite_tolerance": REWRITE_TOLERANCE, "tools": tool_versions()}


def _torch_export(ckpt: LoadedCheckpoint, path: Path, options: BuildOptions, target: str) -> None:
    import torch

    head = ckpt.head
    inputs = {k: torch.from_numpy(v) for k, v in example_inputs(ckpt).items()}
    axes = _dynamic_shapes(head.input_axes, ckpt.info.max_length)
    try:
        torch.onnx.export(head_module(ckpt), (inputs["input_ids"], inputs["attention_mask"]), str(path),
                          input_names=list(head.input_names), output_names=list(head.output_names),
                          opset_version=options.onnx_opset, dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                          external_data=True, verbose=False)
    except Exception as e:
        raise ExportError(f"{target}: torch.onnx.export failed: {type(e).__name__}: {first_line(e)}") from e


def exported_model(ckpt: LoadedCheckpoint, options: BuildOptions, target: str) -> Any:
    """The onnx:fp32 graph, in memory with its weights (the fp16 converter fails on external data); exported
    once per build, each caller gets its own copy."""
    return shared_conversion(ckpt, ("onnx:exported", options.onnx_opset),
                             lambda: _load_export(ckpt, options, target), _copy_model)


def _load_export(ckpt: LoadedCheckpoint, options: BuildOptions, target: str) -> Any:
    import onnx

    with tempfile.TemporaryDirectory(prefix="distilforge-onnx-") as tmp:
        path = Path(tmp) / MODEL_FILE
        _torch_export(ckpt, path, options, target)
        return strip_source_paths(onnx.load(str(path)))


SOURCE_PATH_KEYS = ("pkg.torch.onnx.stack_trace",)  # the traced Python frames, with absolute file paths


def strip_source_paths(model: Any) -> Any:
    """Drop the node metadata torch.onnx writes unconditionally (no export option turns it off) with the absolute
    paths and line numbers of the traced Python code (torch's, transformers', ours): with it, the same model from
    another install path or checkout gave other bytes, in every ONNX target (the optimizer and the quantizers
    keep node metadata). Nothing reads it; the other keys (`namespace`, `fx_node`, ...) hold no paths."""

    def strip(graph: Any) -> None:
        for node in graph.node:
            kept = [p for p in node.metadata_props if p.key not in SOURCE_PATH_KEYS]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    strip(sub)

    strip(model.graph)
    for function in model.functions:
        strip(function)
    return model


def _copy_model(model: Any) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _copy_with_details(value: tuple[Any, dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    return _copy_model(value[0]), copy.deepcopy(value[1])


def _rewrite(ckpt: LoadedCheckpoint, model: Any, steps: list[tuple[str, Rewrite]],
             target: str) -> tuple[Any, list[dict[str, Any]]]:
    """Apply each step whose result still matches the exported graph; record each one either way.

    A step that raises, or changes an output beyond REWRITE_TOLERANCE on padded inputs of two shapes,
    is skipped: the artifact then has fewer fused operators, never a wrong graph."""
    inputs = _check_inputs(ckpt)
    try:
        expected = _run(model, inputs)
    except Exception as e:
        raise ExportError(f"{target}: ONNX Runtime cannot run the exported graph: {first_line(e)}") from e
    applied = []
    for name, step in steps:
        try:
            candidate, counts = step(model)
            diff = _worst_diff(_run(candidate, inputs), expected)
        except Exception as e:
            applied.append({"step": name, "applied": False, "reason": f"{type(e).__name__}: {first_line(e)}"})
            continue
        if not diff <= REWRITE_TOLERANCE:  # NaN fails too
            applied.append({"step": name, "applied": False, "counts": counts,
                            "reason": f"outputs moved by {diff:.2e} (relative), over {REWRITE_TOLERANCE:g}"})
            continue
        model = candidate
        applied.append({"step": name, "applied": True, "counts": counts, "max_rel_diff": diff})
    return model, applied


def _check_inputs(ckpt: LoadedCheckpoint) -> list[dict[str, np.ndarray]]:
    """The export example and a larger padded batch of a shape it never saw."""
    shape = (3, EXPORT_CHOICES + 1, 24) if ckpt.head.multiple_choice else (3, 24)
    return [example_inputs(ckpt), example_inputs(ckpt, shape)]


def _run(model: Any, inputs: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=SESSION_DISABLED_OPTIMIZERS)
    return [session.run(None, feed) for feed in inputs]


def _worst_diff(got: list[list[np.ndarray]], expected: list[list[np.ndarray]]) -> float:
    """Largest difference over every output, relative to that output's largest magnitude."""
    worst = 0.0
    for outs, refs in zip(got, expected, strict=True):
        for out, ref in zip(outs, refs, strict=True):
            if out.shape != ref.shape:
                return float("inf")
            worst = max(worst, float(np.abs(out - ref).max()) / max(float(np.abs(ref).max()), 1e-12))
    return worst


def _fused_counts(model: Any, heads: int, hidden: int, target: str) -> dict[str, int]:
    try:
        return onnx_graph.fused_operator_counts(model, heads, hidden)
    except Exception as e:
        raise ExportError(f"{target}: counting fused operators failed: {type(e).__name__}: {first_line(e)}") from e


def save_model(model: Any, path: Path, target: str) -> bool:
    """One file (protobuf's 2 GB limit is far off for DistilBERT), external data past the limit.
    Returns whether external data was used."""
    import onnx

    external = onnx_graph.weight_bytes(model) > onnx_graph.SINGLE_FILE_LIMIT
    try:
        onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA)
    except Exception as e:
        raise ExportError(f"{target}: saving {path.name} failed: {type(e).__name__}: {first_line(e)}") from e
    if external:
        _readable_external_data(path.parent)
    return external


def _readable_external_data(folder: Path) -> None:
    """onnx writes the external data file with mode 0600; give it the mode every other file of the folder has."""
    from distilforge.artifacts.layout import file_mode

    os.chmod(folder / EXTERNAL_DATA, file_mode())


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "onnx", "onnxruntime", "onnxscript", "onnx-ir")}


def _dynamic_shapes(axes: tuple[str, ...], max_length: int) -> dict[int, object]:
    import torch

    limits = {"batch": 4096, "choices": 64, "sequence": max_length}
    return {i: torch.export.Dim(name, min=1, max=limits[name]) for i, name in enumerate(axes)}
