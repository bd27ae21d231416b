"""OpenVINO IR converted straight from the PyTorch model (ov.convert_model).

`ov.save_model` compresses weights to fp16 unless told not to: the fp32 IR turns that off.
The fp16 IR compresses every float weight except the LayerNorm scales and shifts (see
`export_fp16`). Input and output names are set explicitly (convert_model may name the
mask input after a graph node), so runners bind by name.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
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

# + openvino_model.bin; optimum-intel only recognises IR files named openvino*.xml (earlier builds: model.xml)
MODEL_FILE = "openvino_model.xml"


@contextlib.contextmanager
def no_telemetry() -> Iterator[None]:
    """OpenVINO's converter and NNCF send telemetry from a forked process (about 3 s per event offline,
    and a fork in a process running JAX's threads can deadlock). Their only off switch is CI=true."""
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous


def convert(ckpt: LoadedCheckpoint, target: str) -> Any:
    """The head as an in-memory ov.Model with dynamic shapes and our tensor names: converted once per build,
    each caller gets its own clone."""
    return shared_conversion(ckpt, ("openvino:converted",), lambda: _convert(ckpt, target), lambda m: m.clone())


def _convert(ckpt: LoadedCheckpoint, target: str) -> Any:
    import openvino as ov
    import torch

    example = tuple(torch.from_numpy(v) for v in example_inputs(ckpt).values())
    try:
        with no_telemetry():
            model = ov.convert_model(head_module(ckpt), example_input=example)
    except Exception as e:
        raise ExportError(f"{target}: ov.convert_model failed: {type(e).__name__}: {first_line(e)}") from e
    for port, name in zip(model.inputs, ckpt.head.input_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(model.outputs, ckpt.head.output_names, strict=True):
        port.get_tensor().set_names({name})
    return normalize_names(model)


def save(model: Any, folder: Path, *, compress_to_fp16: bool) -> None:
    import openvino as ov

    ov.save_model(normalize_names(model), str(folder / MODEL_FILE), compress_to_fp16=compress_to_fp16)


def record(ckpt: LoadedCheckpoint, folder: Path, target: str, details: dict[str, Any],
           warnings: list[str]) -> ExportedArtifact:
    import openvino as ov

    return ExportedArtifact(target=target, files=file_records(folder), inputs=input_specs(ckpt.head),
                            outputs=output_specs(ckpt),
                            details={"converter": "openvino.convert_model", "openvino": ov.__version__, **details},
                            warnings=warnings)


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    with quiet() as captured:
        save(convert(ckpt, "openvino:fp32"), folder, compress_to_fp16=False)
    return record(ckpt, folder, "openvino:fp32", {"weights": "fp32", "inference_precision_hint": "f32"},
                  captured.warnings)


# Why the fp16 IR keeps the LayerNorm affine parameters in fp32 (recorded in the manifest).
LAYER_NORM_REASON = ("LayerNorm scale and shift: per-channel factors applied to every token, so their fp16 "
                     "rounding error (up to 2^-11 relative) is the same at every position and adds up over the "
                     "layers instead of averaging out like matmul-weight errors; on the built-in default model "
                     "they account for about half the fp16 logit error (max abs 1.05e-2 -> 5.7e-3)")


def export_fp16(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    """fp16 weights, except the LayerNorm parameters; run with the f32 hint (fp16 storage, f32 compute).

    The CPUs we target have no fp16 arithmetic, so an "f16" hint silently falls back to f32 anyway."""
    with quiet() as captured:
        model = convert(ckpt, "openvino:fp16")
        kept = layer_norm_inputs(model)
        compress_to_fp16(model, keep=kept, target="openvino:fp16")
        save(model, folder, compress_to_fp16=False)  # already compressed; keep what compress_to_fp16 left fp32
    sizes = weight_bytes(model)
    details = {"weights": "fp16", "inference_precision_hint": "f32",
               "fp32_weights": {"layer_norm_tensors": len(kept), "bytes": sizes["f32"],
                                "why": LAYER_NORM_REASON},
               "fp16_weight_fraction": round(sizes["f16"] / max(1, sizes["f16"] + sizes["f32"]), 4)}
    return record(ckpt, folder, "openvino:fp16", details, captured.warnings)


def layer_norm_inputs(model: Any) -> list[Any]:
    """The inputs fed by LayerNorm's scale and shift Constants: MVN -> Multiply(scale) -> Add(shift)."""
    found = []
    for mvn in model.get_ordered_ops():
        if mvn.get_type_name() != "MVN":
            continue
        for scale in _consumers(mvn, "Multiply"):
            found += _constant_inputs(scale)
            for shift in _consumers(scale, "Add"):
                found += _constant_inputs(shift)
    return found


def _consumers(node: Any, type_name: str) -> list[Any]:
    return [t.get_node() for t in node.output(0).get_target_inputs() if t.get_node().get_type_name() == type_name]


def _constant_inputs(node: Any) -> list[Any]:
    return [i for i in node.inputs() if i.get_source_output().get_node().get_type_name() == "Constant"]


def compress_to_fp16(model: Any, *, keep: list[Any], target: str) -> None:
    """Compress float Constants to fp16 + a decompression Convert, as `save_model(compress_to_fp16=True)`
    does, then reconnect the `keep` inputs to their original fp32 Constants.

    OpenVINO's own opt-out (rt_info "DisablePrecisionConversion" in 2026.x; "precise_0" and
    "disable_fp16_compression_0" before) is a typed C++ attribute: set from Python as a string it
    is ignored or makes save_model throw ("Bad as from string"), hence the reconnection. Without
    `keep` the result is byte-identical to save_model(compress_to_fp16=True)."""
    from openvino._offline_transformations import compress_model_transformation

    originals = [(port, port.get_source_output()) for port in keep]
    compress_model_transformation(model)
    for port, source in originals:
        port.replace_source_output(source)
    if not weight_bytes(model)["f16"]:
        raise ExportError(f"{target}: OpenVINO compressed no weight to fp16")


def weight_bytes(model: Any) -> dict[str, int]:
    """Bytes of float Constants in the model, by element type ('f16', 'f32')."""
    sizes = {"f16": 0, "f32": 0}
    for op in model.get_ordered_ops():
        kind = op.get_element_type().get_type_name() if op.get_type_name() == "Constant" else ""
        if kind in sizes:
            sizes[kind] += op.get_byte_size()
    return sizes


_AUTO_NAME = re.compile(r"^[A-Za-z0-9]+_\d+$")


def normalize_names(model: Any) -> Any:
    """Renumber auto-generated op names: they come from process-wide counters, so the same model
    converted twice in one process would otherwise write a different .xml."""
    model.set_friendly_name("model")
    for i, op in enumerate(model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{i}")
    return model
