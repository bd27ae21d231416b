"""torchscript:int8-dynamic's Linears: each kernel's folded dequantization is the textbook per-token formula
(so no int16 pair sum saturated on this CPU), fusing q/k/v into one GEMM changes no output, the ladder's rungs
keep the feed-forward Linears float, and the kernel is chosen for the CPUs the artifact must run on."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from distilforge.quantize.ladder import Int8Cpu  # noqa: E402
from distilforge.quantize.torchscript import (  # noqa: E402
    fuse_attention_projections,
    int8_linear,
    kernel_for,
    replace_linears,
)

KERNELS = ("fbgemm", "int_mm")


def _inputs_with_outliers():
    torch.manual_seed(0)
    x = torch.randn(16, 48)
    x[:, 5] *= 40  # an outlier feature, as in the default model's FFN inputs
    x[3] = torch.rand(48)  # an all-positive row: zero point at the bottom of the range
    return x, torch.randn(24, 48), torch.randn(24)


def _int_mm_reference(x, module, bias):
    """Per-token asymmetric int8 (zero point in [-128, 0]) in fp32 like the module, times its int8 weights and
    scales in fp64: what the int8 GEMM, the zero-point term and the folded scales must add up to."""
    low, high = x.amin(dim=1).clamp(max=0), x.amax(dim=1).clamp(min=0)
    scale = ((high - low) / 255).clamp(min=1e-8)
    zero = -128 - torch.round(low / scale)
    q = (torch.round(x / scale[:, None]) + zero[:, None]).clamp(-128, 127)
    x_hat = (q.double() - zero.double()[:, None]) * scale.double()[:, None]
    w_hat = module.weight_t.double() * module.weight_scale.double()  # (in, out)
    return x_hat @ w_hat + bias.double()


def _fbgemm_reference(x, module, bias):
    """Each row shifted and scaled to [-1, 1], quantized to uint8 with scale 2/255 and zero point 128 (FBGEMM's
    per-tensor parameters for a tensor spanning [-1, 1]), times the 7-bit weights, in fp64, shift and scale undone."""
    low, high = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    center, radius = (high + low) / 2, ((high - low) / 2).clamp(min=1e-8)
    unit = (x - center) / radius
    scale, zero = 2 / 255, 128
    unit_hat = ((torch.round(unit / scale) + zero).clamp(0, 255).double() - zero) * scale
    qweight = module.packed._weight_bias()[0]
    w_hat = qweight.dequantize().double().T  # (in, out)
    return radius.double() * (unit_hat @ w_hat) + center.double() * w_hat.sum(dim=0) + bias.double()


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_folded_dequantization_equals_the_textbook_formula(kernel):
    x, weight, bias = _inputs_with_outliers()
    module = int8_linear(kernel, weight, bias)
    got = module(x).double()
    expected = (_fbgemm_reference if kernel == "fbgemm" else _int_mm_reference)(x, module, bias)
    # a few rounding flips of one quantization step at most; a saturated int16 pair sum would be far off
    assert torch.allclose(got, expected, rtol=1e-4, atol=2e-3 * expected.abs().max().item())
    exact = x.double() @ weight.double().T + bias.double()
    assert torch.nn.functional.cosine_similarity(got.flatten(), exact.flatten(), dim=0) > 0.999


def test_fbgemm_weights_are_7_bit_and_int_mm_weights_8_bit():
    _, weight, bias = _inputs_with_outliers()
    fbgemm = int8_linear("fbgemm", weight, bias).packed._weight_bias()[0]
    assert fbgemm.int_repr().abs().max() == 63  # 255 x 63 x 2 fits an int16 pair sum (VPMADDUBSW)
    int_mm = int8_linear("int_mm", weight, bias)
    assert torch.allclose(int_mm.weight_scale, weight.abs().amax(dim=1) / 127.5)


def test_full_range_products_do_not_saturate():
    """The worst case for an AVX2 u8 x s8 kernel: activations at the top of their range times weights at the
    top of theirs, with the same sign in neighbouring positions. With 7-bit weights FBGEMM stays exact."""
    x = torch.ones(4, 64)
    x[:, 0] = -1.0  # every row spans [-1, 1]: its quantized values are 0 and 255
    weight = torch.ones(8, 64)
    weight[1::2] *= -1
    module = int8_linear("fbgemm", weight, torch.zeros(8))
    got, expected = module(x).double(), _fbgemm_reference(x, module, torch.zeros(8))
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(got, x.double() @ weight.double().T, rtol=1e-2)


def _tiny_model():
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=64)
    return transformers.DistilBertForSequenceClassification(config).eval()


GEMM_OPS = {"fbgemm": "quantized::linear_dynamic", "int_mm": "aten::_int_mm"}


def _gemm_count(module, inputs, kernel) -> int:
    with torch.inference_mode():
        traced = torch.jit.trace(module, inputs, strict=False, check_trace=False)
    return sum(node.kind() == GEMM_OPS[kernel] for node in traced.inlined_graph.nodes())


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_qkv_gives_the_same_logits_with_one_gemm_per_attention_block(kernel):
    model = _tiny_model()
    separate, fused = copy.deepcopy(model), copy.deepcopy(model)
    assert replace_linears(separate, kernel) == 2 * 6 + 2  # 6 Linears a layer, pre-classifier and classifier
    assert fuse_attention_projections(fused, kernel) == 2 and replace_linears(fused, kernel) == 2 * 3 + 2
    inputs = (torch.randint(0, 100, (2, 12)), torch.ones(2, 12, dtype=torch.long))
    with torch.inference_mode():
        a, b = separate(*inputs).logits, fused(*inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert _gemm_count(separate, inputs, kernel) == 14 and _gemm_count(fused, inputs, kernel) == 10


@pytest.mark.parametrize(("keep", "swapped"), [((), 14), (("ffn_out",), 12), (("ffn_in", "ffn_out"), 10)])
def test_the_ladder_keeps_feed_forward_linears_float(keep, swapped):
    model = _tiny_model()
    assert replace_linears(model, "fbgemm", keep_float=keep) == swapped
    ffn = model.distilbert.transformer.layer[0].ffn
    assert isinstance(ffn.lin2, torch.nn.Linear) == ("ffn_out" in keep)
    assert isinstance(ffn.lin1, torch.nn.Linear) == ("ffn_in" in keep)


def test_fused_projections_still_answer_when_query_key_and_value_differ():
    model = _tiny_model()
    reference = copy.deepcopy(model)
    fuse_attention_projections(model, "fbgemm")
    attention, original = model.distilbert.transformer.layer[0].attention, reference.distilbert.transformer.layer[0]
    x, y = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.inference_mode():
        q, k = attention.q_lin(x), attention.k_lin(y)  # a different tensor: computed again, not reused
        expected_q, expected_k = original.attention.q_lin(x), original.attention.k_lin(y)
    for got, expected in ((q, expected_q), (k, expected_k)):
        assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.999


@pytest.mark.parametrize(("mode", "build_class", "kernel"), [
    ("native", "x86-vnni", "int_mm"), ("native", "x86-avx2", "fbgemm"), ("native", "x86-avx512", "fbgemm"),
    ("portable", "x86-vnni", "fbgemm"), ("portable", "x86-avx2", "fbgemm"), ("native", "arm64", "fbgemm")])
def test_the_kernel_is_chosen_for_the_cpus_it_must_run_on(mode, build_class, kernel):
    assert kernel_for(Int8Cpu(mode, build_class))[0] == kernel
