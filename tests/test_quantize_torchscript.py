"""torchscript:int8-dynamic's Linear: the folded dequantization is the textbook formula, and fusing q/k/v
into one GEMM changes no output."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from distilforge.quantize.torchscript import (  # noqa: E402
    fuse_attention_projections,
    per_token_linear,
    replace_linears,
)


def _fake_quant_reference(x, module, bias):
    """Per-token asymmetric activations quantized step by step in fp32 like the module, dequantized with the
    module's int8 weights and their scales, and multiplied in fp64: what the int8 GEMM, the zero-point term
    and the folded scales must add up to."""
    low, high = x.amin(dim=1).clamp(max=0), x.amax(dim=1).clamp(min=0)
    scale = ((high - low) / 255).clamp(min=1e-8)
    zero = -128 - torch.round(low / scale)
    q = (torch.round(x / scale[:, None]) + zero[:, None]).clamp(-128, 127)
    x_hat = (q.double() - zero.double()[:, None]) * scale.double()[:, None]
    w_hat = module.weight_t.double() * module.weight_scale.double()  # (in, out)
    return x_hat @ w_hat + bias.double()


def test_the_folded_dequantization_equals_the_textbook_formula():
    torch.manual_seed(0)
    x = torch.randn(16, 48)
    x[:, 5] *= 40  # an outlier feature, as in the default model's FFN inputs
    x[3] = torch.rand(48)  # an all-positive row: zero point at the bottom of the range
    weight, bias = torch.randn(24, 48), torch.randn(24)
    module = per_token_linear(weight, bias)
    # the weights: symmetric per output channel, torch.ao's observer (scale = max |w| / 127.5)
    assert torch.allclose(module.weight_scale, weight.abs().amax(dim=1) / 127.5)
    assert (module.weight_t.double() * module.weight_scale - weight.T).abs().le(module.weight_scale / 2 + 1e-6).all()
    got = module(x).double()
    expected = _fake_quant_reference(x, module, bias)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    exact = x.double() @ weight.double().T + bias.double()
    assert torch.nn.functional.cosine_similarity(got.flatten(), exact.flatten(), dim=0) > 0.999


def _tiny_model():
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                           max_position_embeddings=64)
    return transformers.DistilBertForSequenceClassification(config).eval()


def _int_mm_count(module, inputs) -> int:
    with torch.inference_mode():
        traced = torch.jit.trace(module, inputs, strict=False, check_trace=False)
    return sum(node.kind() == "aten::_int_mm" for node in traced.inlined_graph.nodes())


def test_fused_qkv_gives_the_same_logits_with_one_gemm_per_attention_block():
    model = _tiny_model()
    separate, fused = copy.deepcopy(model), copy.deepcopy(model)
    assert replace_linears(separate) == 2 * 6 + 2  # 6 Linears a layer, pre-classifier and classifier
    assert fuse_attention_projections(fused) == 2 and replace_linears(fused) == 2 * 3 + 2
    inputs = (torch.randint(0, 100, (2, 12)), torch.ones(2, 12, dtype=torch.long))
    with torch.inference_mode():
        a, b = separate(*inputs).logits, fused(*inputs).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert _int_mm_count(separate, inputs) == 14 and _int_mm_count(fused, inputs) == 10


def test_fused_projections_still_answer_when_query_key_and_value_differ():
    model = _tiny_model()
    reference = copy.deepcopy(model)
    fuse_attention_projections(model)
    attention, original = model.distilbert.transformer.layer[0].attention, reference.distilbert.transformer.layer[0]
    x, y = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    with torch.inference_mode():
        q, k = attention.q_lin(x), attention.k_lin(y)  # a different tensor: computed again, not reused
        expected_q, expected_k = original.attention.q_lin(x), original.attention.k_lin(y)
    for got, expected in ((q, expected_q), (k, expected_k)):
        assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.999
