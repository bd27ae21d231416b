"""ExecuTorch INT8 with PT2E: torchao's `prepare_pt2e`/`convert_pt2e` and ExecuTorch's own `XNNPACKQuantizer`, then
lowered to XNNPACK like the fp32 program (exporters/executorch.py).

- int8-dynamic: every Linear int8 weights per output channel, activations quantized per row at run time
  (XNNPACK's QD8 kernels); the word and position embedding tables weight-only int8 per row
  (`quantize_embeddings`, run as `quantized_decomposed::embedding_byte`). The tables are half of a small
  DistilBERT's bytes, so without them the file shrinks by under 2x.
- int8-static: the Linears get int8 activations, calibrated on the same text as the other static targets
  (per tensor, min/max), and int8 weights per channel; embeddings as above. Only Linears are annotated
  (`set_module_name` per Linear): the XNNPACK quantizer's global config would also quantize every add and
  mul, the residual stream and the attention mask among them, so LayerNorm, softmax, GELU, the residual adds and
  the mask path stay float.
- Each climbs a ladder (quantize/ladder.py): the layers that narrow the width (the FFN's second Linear, whose
  post-GELU input has outlier features, and the classifier) go float, or dynamic in the static recipe, when the
  first recipe does not clear the INT8 rule with the margin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import quiet
from distilforge.exporters.executorch import MODEL_FILE, export_program, lower, max_shape, program_facts, record, wrap
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet
from distilforge.quantize.ladder import Rung, int8_cpu, pick

DYNAMIC_RUNGS = (
    Rung("all-int8", "every Linear int8 weights, activations quantized at run time; embeddings int8 weight-only"),
    Rung("narrowing-float", "the Linears that narrow the width (feed-forward output, classifier) float"),
)
STATIC_RUNGS = (
    Rung("static-linears", "every Linear calibrated int8 activations and int8 weights; embeddings int8 weight-only"),
    Rung("narrowing-dynamic", "the Linears that narrow the width (feed-forward output, classifier) dynamic int8: "
                              "a calibrated range clips their outlier inputs"),
)
CPU_WHY = ("XNNPACK's int8 kernels widen products to 16 or 32 bits before adding them on every x86 class "
           "(docs/cpu-classes.md), so no recipe choice depends on the build machine")
KEPT_FLOAT = ("LayerNorm", "softmax and the attention matmuls", "GELU", "residual adds", "the attention mask path")


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    rung = pick(DYNAMIC_RUNGS, options.rung)
    details = {"weights": "int8 per output channel (Linears); embedding tables int8 per row, weight-only",
               "activations": "float, quantized per row at run time (XNNPACK QD8)",
               "kept_float": list(KEPT_FLOAT) + (["the narrowing Linears"] if rung.name == "narrowing-float" else [])}
    return _quantized(ckpt, folder, options, "executorch:int8-dynamic", rung, details, calibration=None)


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    rung = pick(STATIC_RUNGS, options.rung)
    details = {"weights": "int8 per output channel (Linears); embedding tables int8 per row, weight-only",
               "activations": "int8 per tensor into and out of the Linears, calibrated (min/max)"
                              + ("; the narrowing Linears quantized at run time" if rung.name == "narrowing-dynamic"
                                 else ""),
               "kept_float": list(KEPT_FLOAT)}
    return _quantized(ckpt, folder, options, "executorch:int8-static", rung, details,
                      calibration=options.calibration)


def _quantized(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, target: str, rung: Rung,
               details: dict[str, Any], calibration: CalibrationSet | None) -> ExportedArtifact:
    import torch

    shape = max_shape(ckpt.info, options)
    static = target.endswith("static")
    if static and calibration is None:
        raise ExportError(f"{target}: needs calibration data and none was given")
    with quiet() as captured, torch.no_grad():
        module = wrap(ckpt)
        tables = quantize_embeddings(module)
        quantizer = _quantizer(module, rung, static)
        graph = export_program(module, ckpt, shape, target).module()
        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            prepared = prepare_pt2e(graph, quantizer)
            for sample in _samples(ckpt, calibration, shape[-1]):
                prepared(*sample)
            converted = convert_pt2e(prepared)
        except Exception as e:
            raise ExportError(f"{target}: PT2E quantization failed: {type(e).__name__}: {first_line(e)}") from e
        manager = lower(export_program(converted, ckpt, shape, target), target)
        (folder / MODEL_FILE).write_bytes(bytes(manager.buffer))
    details.update(embedding_tables_int8=tables, rung=rung.name, rung_summary=rung.summary,
                   quantizer=_quantizer_record(static), int8_cpu=int8_cpu(options.int8_cpu).record(CPU_WHY))
    if calibration is not None:
        details["calibration"] = calibration.record()
    return record(ckpt, folder, target, shape, program_facts(manager), details, captured.warnings)


def _quantizer(module: Any, rung: Rung, static: bool) -> Any:
    """An XNNPACKQuantizer that names each Linear with its config (the rung may keep or make some dynamic)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    dynamic = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    main = get_symmetric_quantization_config(is_per_channel=True) if static else dynamic
    narrowing = set(narrowing_linears(module))
    quantizer = XNNPACKQuantizer()
    for name, m in module.named_modules():
        if not isinstance(m, torch.nn.Linear) or (name in narrowing and rung.name == "narrowing-float"):
            continue
        quantizer.set_module_name(name, dynamic if name in narrowing and rung.name == "narrowing-dynamic" else main)
    return quantizer


def quantize_embeddings(module: Any) -> int:
    """Every nn.Embedding as int8 weights with one scale per row (symmetric, torchao's `IntxWeightOnlyConfig`),
    looked up by `quantized_decomposed::embedding_byte`, the op ExecuTorch's runtime has a kernel for; as
    ExecuTorch's own `QuantizedGroupEmbedding` does, but in fp32. torchao's PT2E `EmbeddingQuantizer` is not used:
    its per-row float zero points gave some rows a scale of 1 (garbage rows) and NaN outputs for [PAD] tokens in
    the runtime (executorch 1.5.1, torchao 0.18). Returns how many tables were replaced."""
    import executorch.kernels.quantized  # noqa: F401  registers embedding_byte for export
    import torch
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    class Int8Embedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor, scales: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("weight", weight)
            self.register_buffer("scales", scales)

        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized_decomposed.embedding_byte.dtype(
                self.weight, self.scales, None, -128, 127, indices, dtype=torch.float32)

    replaced = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, torch.nn.Embedding):
            continue
        table = torch.nn.Embedding(*child.weight.shape)
        table.weight = torch.nn.Parameter(child.weight.detach().clone(), requires_grad=False)
        quantize_(table, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
                  lambda m, fqn: isinstance(m, torch.nn.Embedding))
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Int8Embedding(table.weight.qdata.to(torch.int8),
                                            table.weight.scale.reshape(-1).to(torch.float32)))
        replaced += 1
    return replaced


def narrowing_linears(module: Any) -> list[str]:
    """Names of the Linears whose output is narrower than their input (the FFN's second Linear, the classifiers)."""
    import torch

    return [name for name, m in module.named_modules()
            if isinstance(m, torch.nn.Linear) and m.out_features < m.in_features]


def _samples(ckpt: LoadedCheckpoint, calibration: CalibrationSet | None, longest: int) -> list[tuple[Any, ...]]:
    """Calibration samples, each by itself at its own length, cut to what the program takes (static); one example
    batch otherwise (PT2E wants a forward pass before convert, though dynamic ranges are measured at run time)."""
    import torch

    from distilforge.exporters.executorch import example_tensors

    if calibration is None:
        return [example_tensors(ckpt)]
    return [tuple(torch.from_numpy(s[k][..., :longest].astype("int64")) for k in ("input_ids", "attention_mask"))
            for s in calibration.samples]


def _quantizer_record(static: bool) -> str:
    from importlib.metadata import version

    kind = "static" if static else "dynamic"
    return (f"torchao {version('torchao')}: IntxWeightOnlyConfig(int8, PerAxis(0)) for the embedding tables "
            f"(embedding_byte); PT2E XNNPACKQuantizer per Linear (symmetric per-channel, {kind})")
