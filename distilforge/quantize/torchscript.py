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
written with plain aten ops, which trace and save; the weights are quantized by torch.ao's own
per-channel observer.

Two integer kernels, chosen for the CPUs the artifact must run on (`kernel_for`):
- `fbgemm` (portable): each row is shifted and scaled to span [-1, 1], so the per-tensor uint8
  quantization of `torch.ops.quantized.linear_dynamic` (FBGEMM, which picks its AVX2 or AVX-512 VNNI
  code on the CPU it runs on) is a per-token one; the shift and scale are undone after the GEMM.
  Weights are 7-bit: FBGEMM's AVX2 kernel adds pairs of u8 x s8 products in int16 (VPMADDUBSW),
  which 255 x 64 x 2 fits and 255 x 127 x 2 does not.
- `int_mm` (native, VNNI CPUs only): `torch._int_mm`, int8 x int8 -> int32, 8-bit weights. On a VNNI
  Xeon it ran 0.66-0.85x torchscript:fp32's p50; on an AVX2 EPYC, with no fast kernel, 1003 ms
  against 28.9 ms (27x slower than eager).

Speed: in self-attention the query, key and value projections read one tensor, so they are one
Linear three times as wide: its input is quantized once and it is one int8 GEMM.
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
from distilforge.quantize.ladder import Int8Cpu, QuantizeRun, Rung, int8_cpu, pick
from distilforge.quantize.sensitivity import Scheme, group_of

ATTENTION_PROJECTIONS = ("q_lin", "k_lin", "v_lin")  # DistilBERT's MultiHeadSelfAttention
FFN_LINEARS = {"lin1": "ffn_in", "lin2": "ffn_out"}  # DistilBERT's FFN
RUNGS = (
    Rung("all-int8", "every Linear int8"),
    Rung("ffn-out-float", "the feed-forward output Linear (lin2) float: its post-GELU input has outlier features"),
    Rung("ffn-float", "both feed-forward Linears float; attention int8"),
)
RUNG_FLOAT = {"all-int8": (), "ffn-out-float": ("ffn_out",), "ffn-float": ("ffn_in", "ffn_out")}
# int8 weight range per kernel: 7 bits for FBGEMM (|w| <= 63, so 255 x 63 x 2 fits the int16 pair sums of its
# AVX2 kernel); the full range for torch._int_mm (int32 accumulation everywhere)
WEIGHT_RANGE = {"fbgemm": (-63, 63), "int_mm": (-128, 127)}
KERNELS = {
    "fbgemm": "torch.ops.quantized.linear_dynamic (FBGEMM) on rows scaled to [-1, 1]: per-token asymmetric uint8 "
              "activations x 7-bit int8 weights per output channel",
    "int_mm": "torch._int_mm: per-token asymmetric int8 activations x 8-bit int8 weights per output channel",
}


def scheme(options: BuildOptions) -> Scheme:
    """How the kernel computes a Linear (per-token activations, 7- or 8-bit weights), for the sensitivity table."""
    kernel, _ = kernel_for(int8_cpu(options.int8_cpu))
    return Scheme(weight_bits=8 if WEIGHT_RANGE[kernel][1] == 127 else 7, activations="token")


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                        run: QuantizeRun) -> ExportedArtifact:
    import torch
    from torch.ao.quantization import float_qparams_weight_only_qconfig, quantize_dynamic

    target = "torchscript:int8-dynamic"
    rung = pick(RUNGS, run.rung)
    cpu = int8_cpu(options.int8_cpu)
    kernel, why = kernel_for(cpu)
    module = head_module(ckpt)
    with quiet() as captured:
        try:  # quantize_dynamic copies: the reference model stays fp32
            quantized = quantize_dynamic(module, {torch.nn.Embedding: float_qparams_weight_only_qconfig})
            fused = fuse_attention_projections(quantized, kernel, float_groups=run.float_layers)
            replaced = replace_linears(quantized, kernel, keep_float=RUNG_FLOAT[rung.name],
                                       float_groups=run.float_layers)
        except Exception as e:
            raise ExportError(f"{target}: quantizing the Linear layers failed: {type(e).__name__}: "
                              f"{first_line(e)}") from e
    artifact = trace(quantized, ckpt, folder, target,
                     {"quantization": f"{KERNELS[kernel]}; embeddings int8 weight-only (torch.ao quantize_dynamic)",
                      "kernel": kernel, "int8_cpu": cpu.record(why), "rung": rung.name, "recipe": rung.summary,
                      "float_layers": list(run.float_layers),
                      "int8_linears": replaced + len(ATTENTION_PROJECTIONS) * fused,
                      "fused_qkv_projections": fused})
    artifact.warnings = list(dict.fromkeys(captured.warnings + artifact.warnings))
    return artifact


def kernel_for(cpu: Int8Cpu) -> tuple[str, str]:
    """The integer kernel for the CPUs the artifact must run on, and why (module docstring)."""
    if set(cpu.classes) == {"x86-vnni"}:
        return "int_mm", ("only for x86-vnni: torch._int_mm is fast there (0.66-0.85x torchscript:fp32 on a Xeon) "
                          "and exact with 8-bit weights")
    return "fbgemm", (f"must run on {', '.join(cpu.classes)}: torch._int_mm has no fast kernel without VNNI "
                      "(27x slower than eager on an AVX2 EPYC); FBGEMM picks its kernel on the CPU it runs on, "
                      "and 7-bit weights keep its AVX2 int16 pair sums (VPMADDUBSW) from saturating")


def replace_linears(module: Any, kernel: str, *, keep_float: tuple[str, ...] = (),
                    float_groups: tuple[str, ...] = ()) -> int:
    """Swap every nn.Linear under `module` for an int8 Linear of `kernel`, in place, except the FFN Linears
    whose role ('ffn_in', 'ffn_out') is in `keep_float` and those of the layer groups in `float_groups`
    (quantize/sensitivity.py); return how many were swapped."""
    import torch

    count = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, torch.nn.Linear) or group_of(name) in float_groups:
            continue
        if FFN_LINEARS.get(name.rsplit(".", 1)[-1]) in keep_float:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, attr,
                int8_linear(kernel, child.weight.detach(), child.bias))
        count += 1
    return count


def fuse_attention_projections(module: Any, kernel: str, *, float_groups: tuple[str, ...] = ()) -> int:
    """Quantize each attention block's q/k/v Linears as one, in place; return how many blocks.

    The fused Linear is registered on the attention module as `qkv_int8`; `q_lin`, `k_lin` and
    `v_lin` become slices of its output. When all three are called with the same tensor (self-
    attention), the product is computed once and the trace records one GEMM; with different tensors
    each call computes it again, which is slower but still right.
    """
    import torch

    count = 0
    for block_name, block in list(module.named_modules()):
        if group_of(f"{block_name}.{ATTENTION_PROJECTIONS[0]}") in float_groups:
            continue
        linears = [getattr(block, name, None) for name in ATTENTION_PROJECTIONS]
        if not all(isinstance(linear, torch.nn.Linear) for linear in linears):
            continue
        if any(linear.bias is None for linear in linears) or len({linear.in_features for linear in linears}) != 1:
            continue
        weight = torch.cat([linear.weight.detach() for linear in linears])
        bias = torch.cat([linear.bias.detach() for linear in linears])
        block.qkv_int8 = int8_linear(kernel, weight, bias)
        start = 0
        for name, linear in zip(ATTENTION_PROJECTIONS, linears, strict=True):
            setattr(block, name, _classes().slice(block.qkv_int8, start, start + linear.out_features))
            start += linear.out_features
        count += 1
    return count


def int8_linear(kernel: str, weight: Any, bias: Any) -> Any:
    """An int8 Linear of `kernel` for an fp32 (out, in) weight, quantized symmetric per output channel."""
    import torch

    qweight = quantize_weight(weight, *WEIGHT_RANGE[kernel])
    bias = bias.detach() if bias is not None else torch.zeros(weight.shape[0])
    if kernel == "fbgemm":
        return _classes().fbgemm(qweight, bias)
    return _classes().int_mm(qweight.int_repr().t().contiguous(), qweight.q_per_channel_scales().float(), bias)


def quantize_weight(weight: Any, low: int, high: int) -> Any:
    """A per-channel symmetric qint8 tensor with values in [low, high] (torch.ao's observer picks the scales)."""
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                        quant_min=low, quant_max=high)
    observer(weight)
    scale, _ = observer.calculate_qparams()
    zeros = torch.zeros_like(scale, dtype=torch.long)
    values = torch.quantize_per_channel(weight, scale.float(), zeros, 0, torch.qint8).int_repr().clamp(low, high)
    return torch._make_per_channel_quantized_tensor(values, scale.double(), zeros, 0)


@cache
def _classes() -> Any:
    """The module classes (FbgemmLinear, IntMmLinear, OutputSlice), defined on first use so that importing this
    file does not import torch."""
    import types

    import torch
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams

    class SharedInput(torch.nn.Module):
        """forward(x) computed once for consecutive calls with the same tensor (the fused q/k/v Linear)."""

        memo: tuple[Any, Any] | None = None

        def shared(self, x: Any) -> Any:
            if self.memo is None or self.memo[0] is not x:
                self.memo = (x, self(x))
            return self.memo[1]

    class FbgemmLinear(SharedInput):
        def __init__(self, qweight: Any, bias: Any) -> None:
            super().__init__()
            self.packed = LinearPackedParams(dtype=torch.qint8)
            self.packed.set_weight_bias(qweight, None)
            self.register_buffer("weight_sum", qweight.dequantize().sum(dim=1))  # fp32, (out,)
            self.register_buffer("bias", bias)  # fp32, (out,)

        def forward(self, x: Any) -> Any:
            rows = x.reshape(-1, x.shape[-1])
            low = rows.amin(dim=1, keepdim=True)
            high = rows.amax(dim=1, keepdim=True)
            center = (high + low) * 0.5
            radius = ((high - low) * 0.5).clamp_(min=1e-8)
            # every row spans [-1, 1]: FBGEMM's one uint8 scale for the tensor is one per token
            unit = (rows - center).div_(radius)
            y = torch.ops.quantized.linear_dynamic(unit, self.packed._packed_params, False)
            # rows = radius * unit + center, so rows @ W.T = radius * (unit @ W.T) + center x sum_k W[:, k]
            y = torch.addcmul(self.bias, y, radius).addr_(center.squeeze(1), self.weight_sum)
            return y.reshape(x.shape[:-1] + (y.shape[-1],))

    class IntMmLinear(SharedInput):
        def __init__(self, weight_t: Any, weight_scale: Any, bias: Any) -> None:
            super().__init__()
            self.register_buffer("weight_t", weight_t)  # int8, (in, out)
            self.register_buffer("weight_scale", weight_scale)  # fp32, (out,)
            self.register_buffer("weight_sum", weight_t.to(torch.int32).sum(dim=0).to(torch.float32))
            self.register_buffer("bias", bias)  # fp32, (out,)

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

    class OutputSlice(torch.nn.Module):
        """Columns [start, stop) of a shared int8 Linear's output."""

        def __init__(self, source: Any, start: int, stop: int) -> None:
            super().__init__()
            self.sources = [source]  # a list, so the weights are not registered twice
            self.start, self.stop = start, stop

        def forward(self, x: Any) -> Any:
            return self.sources[0].shared(x)[..., self.start:self.stop]

    return types.SimpleNamespace(fbgemm=FbgemmLinear, int_mm=IntMmLinear, slice=OutputSlice)
