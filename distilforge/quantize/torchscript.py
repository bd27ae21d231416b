"""TorchScript INT8: PyTorch's dynamic quantization (int8 weights, activations quantized per batch at
run time on the x86/fbgemm engine), then traced like the fp32 target.

What is quantized, and why not everything: the x86 engine quantizes a Linear's input per tensor
with 7 bits (reduce_range). On the default model, doing that to the feed-forward Linears (whose
inputs carry outlier features) took the logits' cosine to 0.97-0.99 on the validation grid, under
the INT8 rule of 0.99. So the attention projections and the head are int8 per channel, the word
and position embeddings int8 weight-only (most of the bytes), and the feed-forward Linears stay fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import head_module, quiet
from distilforge.exporters.torchscript import trace
from distilforge.options import BuildOptions

KEEP_FP32 = ("ffn.lin1", "ffn.lin2")


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    import torch
    from torch.ao.quantization import quantize_dynamic

    target = "torchscript:int8-dynamic"
    module = head_module(ckpt)
    with quiet() as captured:
        try:  # quantize_dynamic copies: the reference model stays fp32
            quantized = quantize_dynamic(module, quantization_plan(module), dtype=torch.qint8)
        except Exception as e:
            raise ExportError(f"{target}: torch.ao.quantization.quantize_dynamic failed: {type(e).__name__}: "
                              f"{first_line(e)}") from e
    artifact = trace(quantized, ckpt, folder, target,
                     {"quantization": "torch.ao.quantization.quantize_dynamic",
                      "int8": "attention and head Linears (per-channel weights, dynamic 7-bit activations); "
                              "embeddings (weight-only)",
                      "kept_fp32": [f"{n} (outlier activations)" for n in KEEP_FP32],
                      "quantized_engine": torch.backends.quantized.engine})
    artifact.warnings = list(dict.fromkeys(captured.warnings + artifact.warnings))
    return artifact


def quantization_plan(module: Any) -> dict[str, Any]:
    """Module name -> qconfig for everything to quantize (see the module docstring)."""
    import torch
    from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig

    plan: dict[str, Any] = {}
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Linear) and not name.endswith(KEEP_FP32):
            plan[name] = per_channel_dynamic_qconfig
        elif isinstance(child, torch.nn.Embedding):
            plan[name] = float_qparams_weight_only_qconfig
    return plan
