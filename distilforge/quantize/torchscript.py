"""TorchScript INT8: every Linear as int8 weights (symmetric, per output channel) times int8
activations quantized per token at run time (asymmetric: min/max of each row), then traced like the
fp32 target; embeddings int8 weight-only.

Why not `torch.ao.quantization.quantize_dynamic` alone: its x86 Linear quantizes the whole input
with one 7-bit scale. The default model's feed-forward inputs carry outlier features, and that
recipe took the logits' cosine to 0.91 (0.97 per channel, 97.8 % agreement with the FFN kept
fp32): under DESIGN.md's INT8 rule. One scale per token is what made ONNX Runtime and TFLite pass;
here symmetric per token gave cosine 0.9946 and agreement 98.6 % (the FFN's second Linear, fed by
GELU's mostly positive output, wastes half the range), asymmetric 0.9975 and 100 %.
torchao's `Int8DynamicActivationInt8WeightConfig` is that recipe, but `torch.jit.trace` of it fails
inside torchao (torch 2.13: `iter->isIntList() INTERNAL ASSERT FAILED`). So the Linear below is
written with plain aten ops (`torch._int_mm` is the int8 x int8 -> int32 GEMM), which trace and
save; the weights are quantized by torch.ao's own per-channel observer.
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


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    import torch
    from torch.ao.quantization import float_qparams_weight_only_qconfig, quantize_dynamic

    target = "torchscript:int8-dynamic"
    module = head_module(ckpt)
    with quiet() as captured:
        try:  # quantize_dynamic copies: the reference model stays fp32
            quantized = quantize_dynamic(module, {torch.nn.Embedding: float_qparams_weight_only_qconfig})
            replaced = replace_linears(quantized)
        except Exception as e:
            raise ExportError(f"{target}: quantizing the Linear layers failed: {type(e).__name__}: "
                              f"{first_line(e)}") from e
    artifact = trace(quantized, ckpt, folder, target,
                     {"quantization": "int8 weights per output channel (torch.ao PerChannelMinMaxObserver, "
                                      "symmetric) x int8 activations per token (dynamic, asymmetric min/max), "
                                      "torch._int_mm; embeddings int8 weight-only (torch.ao quantize_dynamic)",
                      "int8_linears": replaced})
    artifact.warnings = list(dict.fromkeys(captured.warnings + artifact.warnings))
    return artifact


def replace_linears(module: Any) -> int:
    """Swap every nn.Linear under `module` for a PerTokenInt8Linear, in place; return how many."""
    import torch

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, _per_token_linear(child))
            count += 1
        else:
            count += replace_linears(child)
    return count


def _per_token_linear(linear: Any) -> Any:
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    weight = linear.weight.detach()
    observer(weight)
    scale, _ = observer.calculate_qparams()
    qweight = torch.quantize_per_channel(weight, scale.float(), torch.zeros_like(scale, dtype=torch.long),
                                         0, torch.qint8).int_repr()
    bias = linear.bias.detach() if linear.bias is not None else None
    return _module_class()(qweight.t().contiguous(), scale.float(), bias)


_CLASS: Any = None


def _module_class() -> Any:
    """The module class, defined on first use so importing this file does not import torch."""
    global _CLASS
    if _CLASS is None:
        import torch

        class PerTokenInt8Linear(torch.nn.Module):
            def __init__(self, weight_t: Any, weight_scale: Any, bias: Any) -> None:
                super().__init__()
                self.register_buffer("weight_t", weight_t)  # int8, (in, out)
                self.register_buffer("weight_scale", weight_scale)  # fp32, (out,)
                self.register_buffer("weight_sum", weight_t.to(torch.int32).sum(dim=0))  # for the zero points
                self.register_buffer("bias", bias)

            def forward(self, x: Any) -> Any:
                rows = x.reshape(-1, x.shape[-1])
                low = rows.amin(dim=1, keepdim=True).clamp(max=0.0)
                high = rows.amax(dim=1, keepdim=True).clamp(min=0.0)
                scale = ((high - low) / 255.0).clamp(min=1e-8)
                zero = (-128.0 - torch.round(low / scale)).clamp(-128, 127)
                q = (torch.round(rows / scale) + zero).clamp(-128, 127).to(torch.int8)
                acc = torch._int_mm(q, self.weight_t) - zero.to(torch.int32) * self.weight_sum
                y = acc.to(torch.float32) * scale * self.weight_scale
                if self.bias is not None:
                    y = y + self.bias
                return y.reshape(x.shape[:-1] + (y.shape[-1],))

        _CLASS = PerTokenInt8Linear
    return _CLASS
