"""onnx:int8-dynamic keeps the task head's small GEMMs float ("head" role), Gemm nodes under both names."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from distilforge.quantize.onnx_layers import head_nodes, kept_float_nodes  # noqa: E402


def _graph(tail: list) -> object:
    from onnx import TensorProto, helper, numpy_helper

    w = {"w_in": (8, 16), "w_out": (16, 8), "w_pre": (8, 8), "w_cls": (3, 8), "w_vocab": (8, 50)}
    inits = [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in w.items()]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln"),
             helper.make_node("MatMul", ["ln", "w_in"], ["h"], name="ffn_in"),
             helper.make_node("Gelu", ["h"], ["a"], name="gelu"),
             helper.make_node("MatMul", ["a", "w_out"], ["y"], name="ffn_out"), *tail]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph)


def test_classification_head_is_kept_float_under_the_quantizers_gemm_names():
    from onnx import helper

    model = _graph([helper.make_node("Gather", ["y", "zero"], ["cls"], name="select", axis=1),
                    helper.make_node("Gemm", ["cls", "w_pre"], ["p"], name="pre_classifier", transB=1),
                    helper.make_node("Relu", ["p"], ["r"], name="relu"),
                    helper.make_node("Gemm", ["r", "w_cls"], ["logits"], name="classifier", transB=1)])
    assert head_nodes(model) == {"pre_classifier", "classifier"}
    kept = kept_float_nodes(model, ("head",))
    assert set(kept) == {"pre_classifier", "pre_classifier_MatMul", "classifier", "classifier_MatMul"}


def test_a_widening_head_gemm_stays_int8():
    from onnx import helper

    # MLM-like: the vocabulary projection is a large GEMM over every token, not worth keeping float
    model = _graph([helper.make_node("MatMul", ["y", "w_pre"], ["t"], name="vocab_transform"),
                    helper.make_node("MatMul", ["t", "w_vocab"], ["logits"], name="vocab_projector")])
    assert head_nodes(model) == {"vocab_transform"}
    assert "ffn_in" not in kept_float_nodes(model, ("head",))
