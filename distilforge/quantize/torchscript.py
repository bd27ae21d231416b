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

Speed: in self-attention the query, key and value projections read one tensor, so they are one
Linear three times as wide: its input is quantized once and it is one int8 GEMM. Around the GEMM,
ops work in place where they can, and the dequantization is one multiply-add with the outer product
of the scales. Measured on the default model at batch 1 x 128, 2 threads
(benchmarks/torchscript_int8_speed.py): 1.15-1.17x torchscript:fp32's p50 before, 0.66-0.85x after.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import head_module, quiet
from distilforge.exporters.torchscript import trace
from distilforge.options import BuildOptions

ATTENTION_PROJECTIONS = ("q_lin", "k_lin", "v_lin")  # DistilBERT's MultiHeadSelfAttention


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    import torch
    from torch.ao.quantization import float_qparams_weight_only_qconfig, quantize_dynamic

    target = "torchscript:int8-dynamic"
    module = head_module(ckpt)
    with quiet() as captured:
        try:  # quantize_dynamic copies: the reference model stays fp32
            quantized = quantize_dynamic(module, {torch.nn.Embedding: float_qparams_weight_only_qconfig})
            fused = fuse_attention_projections(quantized)
            replaced = replace_linears(quantized)
        except Exception as e:
            raise ExportError(f"{target}: quantizing the Linear layers failed: {type(e).__name__}: "
                              f"{first_line(e)}") from e
    artifact = trace(quantized, ckpt, folder, target,
                     {"quantization": "int8 weights per output channel (torch.ao PerChannelMinMaxObserver, "
                                      "symmetric) x int8 activations per token (dynamic, asymmetric min/max), "
                                      "torch._int_mm; embeddings int8 weight-only (torch.ao quantize_dynamic)",
                      "int8_linears": replaced + len(ATTENTION_PROJECTIONS) * fused,
                      "fused_qkv_projections": fused})
    artifact.warnings = list(dict.fromkeys(captured.warnings + artifact.warnings))
    return artifact


def replace_linears(module: Any) -> int:
    """Swap every nn.Linear under `module` for a PerTokenInt8Linear, in place; return how many."""
    import torch

    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, per_token_linear(child.weight.detach(), child.bias))
            count += 1
        else:
            count += replace_linears(child)
    return count


def fuse_attention_projections(module: Any) -> int:
    """Quantize each attention block's q/k/v Linears as one, in place; return how many blocks.

    The fused Linear is registered on the attention module as `qkv_int8`; `q_lin`, `k_lin` and
    `v_lin` become slices of its output. When all three are called with the same tensor (self-
    attention), the product is computed once and the trace records one GEMM; with different tensors
    each call computes it again, which is slower but still right.
    """
    import torch

    count = 0
    for block in list(module.modules()):
        linears = [getattr(block, name, None) for name in ATTENTION_PROJECTIONS]
        if not all(isinstance(linear, torch.nn.Linear) for linear in linears):
            continue
        if any(linear.bias is None for linear in linears) or len({linear.in_features for linear in linears}) != 1:
            continue
        weight = torch.cat([linear.weight.detach() for linear in linears])
        bias = torch.cat([linear.bias.detach() for linear in linears])
        block.qkv_int8 = per_token_linear(weight, bias)
        start = 0
        for name, linear in zip(ATTENTION_PROJECTIONS, linears, strict=True):
            setattr(block, name, _classes()[1](block.qkv_int8, start, start + linear.out_features))
            start += linear.out_features
        count += 1
    return count


def per_token_linear(weight: Any, bias: Any) -> Any:
    """A PerTokenInt8Linear for an fp32 (out, in) weight, quantized symmetric per output channel."""
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(weight)
    scale, _ = observer.calculate_qparams()
    qweight = torch.quantize_per_channel(weight, scale.float(), torch.zeros_like(scale, dtype=torch.long),
                                         0, torch.qint8).int_repr()
    bias = bias.detach() if bias is not None else torch.zeros(weight.shape[0])
    return _classes()[0](qweight.t().contiguous(), scale.float(), bias)


@cache
def _classes() -> tuple[Any, Any]:
    """(PerTokenInt8Linear, OutputSlice), defined on first use so importing this file does not import torch."""
    import torch

    class PerTokenInt8Linear(torch.nn.Module):
        def __init__(self, weight_t: Any, weight_scale: Any, bias: Any) -> None:
            super().__init__()
            self.register_buffer("weight_t", weight_t)  # int8, (in, out)
            self.register_buffer("weight_scale", weight_scale)  # fp32, (out,)
            self.register_buffer("weight_sum", weight_t.to(torch.int32).sum(dim=0).to(torch.float32))
            self.register_buffer("bias", bias)  # fp32, (out,)
            self.memo: tuple[Any, Any] | None = None

        def forward(self, x: Any) -> Any:
            rows = x.reshape(-1, x.shape[-1])
            low = rows.amin(dim=1).clamp(max=0.0)
            high = rows.amax(dim=1).clamp(min=0.0)
            scale = ((high - low) / 255.0).clamp(min=1e-8)
            zero = -128.0 - torch.round(low / scale)  # in [-128, 0]: low <= 0
            q = torch.div(rows, scale.unsqueeze(1)).round_().add_(zero.unsqueeze(1)).clamp_(-128, 127)
            acc = torch._int_mm(q.to(torch.int8), self.weight_t).to(torch.float32)
            # the zero points' term before scaling: integers below 2**24 here, so fp32 holds them exactly
            # (int32 addr has no fast kernel: 10x slower)
            acc = acc.addr_(zero, self.weight_sum, alpha=-1.0)
            y = torch.addcmul(self.bias, acc, torch.outer(scale, self.weight_scale))
            return y.reshape(x.shape[:-1] + (y.shape[-1],))

        def shared(self, x: Any) -> Any:
            """forward(x), computed once for consecutive calls with the same tensor."""
            if self.memo is None or self.memo[0] is not x:
                self.memo = (x, self(x))
            return self.memo[1]

    class OutputSlice(torch.nn.Module):
        """Columns [start, stop) of a shared PerTokenInt8Linear's output."""

        def __init__(self, source: Any, start: int, stop: int) -> None:
            super().__init__()
            self.sources = [source]  # a list, so the weights are not registered twice
            self.start, self.stop = start, stop

        def forward(self, x: Any) -> Any:
            return self.sources[0].shared(x)[..., self.start:self.stop]

    return PerTokenInt8Linear, OutputSlice
