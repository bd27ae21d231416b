"""Graph rewrites for ONNX Runtime's CPU provider, each on an in-memory ModelProto.

Every rewrite returns a new model and what it changed (counts); none of them checks numerics:
the caller compares each result with the exported graph and drops a step that changed the outputs.
Why this recipe (attention fused, SkipLayerNormalization and BiasGelu not, ONNX-domain Gelu):
docs/investigations/onnx.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

MS_DOMAIN = "com.microsoft"
MASK_INPUT = "attention_mask"
GELU_OPSET = 20  # the first opset with an ONNX Gelu
SINGLE_FILE_LIMIT = 1_500_000_000  # bytes; past it, weights go to external data (protobuf's limit is 2 GB)


def fuse_attention(model: Any) -> tuple[Any, dict[str, int]]:
    """onnxscript's attention fusions only (SDPA -> MultiHeadAttention -> Attention).

    ORT's own optimizer does not recognise the dynamo exporter's attention; onnxscript's
    `optimize_for_ort` would also create SkipLayerNormalization and BiasGelu, which are slower here."""
    import onnx_ir as ir
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions._core import _pre_optimize
    from onnxscript.rewriter.ort_fusions.attention import fuse_attention as fuse_packed
    from onnxscript.rewriter.ort_fusions.mha import fuse_mha1, fuse_mha2
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
    from onnxscript.rewriter.rules.common import _gemm_to_matmul_add

    m = ir.from_proto(model)
    rewrite(m, [_gemm_to_matmul_add.gemm_to_matmul_add_rule])
    m = _pre_optimize(m)
    counts = {"sdpa": fuse_sdpa(m, apply_shape_inference=True), "mha1": fuse_mha1(m), "mha2": fuse_mha2(m)}
    if counts["mha1"] or counts["mha2"]:  # as optimize_for_ort: the later rules build on MultiHeadAttention
        counts["mha_bias"] = fuse_mha_bias(m)
        counts["attention"] = fuse_packed(m)
    optimize(m)  # inlines any intermediate fusion function that no later rule consumed
    proto = ir.to_proto(m)
    strange = sorted({n.domain for n in proto.graph.node} - {"", "ai.onnx", MS_DOMAIN})
    if strange:
        raise ValueError(f"fusion left nodes of unknown domains {strange}")
    return proto, counts


def attention_mask_index(model: Any) -> tuple[Any, dict[str, int]]:
    """Make onnxscript's Attention nodes the form ORT's quantizer handles.

    They carry `qkv_hidden_sizes` (AttentionQuant skips any node with it) and take the mask as a 4-D
    additive `attention_bias` (QAttention has no such input). Equal sizes are dropped, and the 0/1
    mask, flattened to 2-D (multiple choice feeds batch x choices x sequence), goes in as `mask_index`."""
    from onnx import TensorProto, helper

    model = _copy(model)
    graph = model.graph
    if not any(i.name == MASK_INPUT for i in graph.input):
        raise ValueError(f"the graph has no input {MASK_INPUT!r}")
    fixed = 0
    mask = "attention_mask_2d_int32"
    for node in graph.node:
        if node.op_type != "Attention" or node.domain != MS_DOMAIN or not _bias_only_mask(node):
            continue
        _drop_equal_qkv_sizes(node)
        inputs = list(node.input) + [""] * (6 - len(node.input))
        inputs[3], inputs[5] = mask, ""
        while inputs and not inputs[-1]:
            inputs.pop()
        del node.input[:]
        node.input.extend(inputs)
        fixed += 1
    if fixed:
        graph.initializer.append(helper.make_tensor("attention_mask_rows", TensorProto.INT64, [1], [-1]))
        graph.node.insert(0, helper.make_node("Cast", ["attention_mask_2d"], [mask], to=TensorProto.INT32))
        graph.node.insert(0, helper.make_node("Reshape", [MASK_INPUT, "attention_mask_2d_shape"],
                                              ["attention_mask_2d"]))
        graph.node.insert(0, helper.make_node("Concat", ["attention_mask_rows", "attention_mask_seq"],
                                              ["attention_mask_2d_shape"], axis=0))
        graph.node.insert(0, helper.make_node("Shape", [MASK_INPUT], ["attention_mask_seq"], start=-1))
    return _pruned(model), {"attention_mask_index": fixed}


def _bias_only_mask(node: Any) -> bool:
    """An encoder Attention whose only mask is input 5 (no mask_index, no past state)."""
    inputs = list(node.input)
    return len(inputs) == 6 and not inputs[3] and not inputs[4] and bool(inputs[5])


def _drop_equal_qkv_sizes(node: Any) -> None:
    for attr in [a for a in node.attribute if a.name == "qkv_hidden_sizes"]:
        if len(set(attr.ints)) == 1:
            node.attribute.remove(attr)


def ort_transformer_optimize(model: Any, num_heads: int, hidden_size: int) -> tuple[Any, dict[str, int]]:
    """onnxruntime.transformers' BERT optimizer with SkipLayerNorm and BiasGelu fusion off
    (on this ORT CPU build both kernels are slower than the ops they replace)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    with tempfile.TemporaryDirectory(prefix="distilforge-ort-") as tmp:
        # From a file, not the ModelProto: for a proto, ORT's first pass moves every initializer out of the
        # graph, and then cannot infer shapes that need small constants (Squeeze axes in the QA head).
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=weight_bytes(model) > SINGLE_FILE_LIMIT)
        optimized = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    return _pruned(optimized.model), stats


def gelu_to_onnx(model: Any) -> tuple[Any, dict[str, int]]:
    """com.microsoft Gelu -> ONNX Gelu (opset 20, exact erf form): a faster CPU kernel (196 vs 330 us)."""
    model = _copy(model)
    moved = 0
    for node in model.graph.node:
        if node.op_type == "Gelu" and node.domain == MS_DOMAIN and not node.attribute:
            node.domain = ""
            moved += 1
    if moved:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, GELU_OPSET)
    return model, {"gelu_onnx_domain": moved}


def residual_adds_as_sum(model: Any) -> tuple[Any, dict[str, int]]:
    """Each residual Add that feeds only a LayerNormalization becomes a two-input Sum: the same float addition,
    but ORT's SkipLayerNormFusion, which every loader's session runs at load, matches Add only. Its
    SkipLayerNormalization kernel is slower than Add + LayerNormalization (ORT 1.32, default model, INT8:
    144 vs 48 us a call, 1.3 ms of a 6 ms run), and a session option against it reaches only our runner."""
    model = _copy(model)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    renamed = 0
    for node in model.graph.node:
        out = node.output[0] if node.output else ""
        users = consumers.get(out, [])
        feeds_layer_norm = len(users) == 1 and users[0].op_type == "LayerNormalization" and users[0].input[0] == out
        if node.op_type == "Add" and node.domain in ("", "ai.onnx") and out not in outputs and feeds_layer_norm:
            node.op_type = "Sum"
            renamed += 1
    return model, {"residual_sum": renamed}


def fused_operator_counts(model: Any, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ORT's own count of fused operators in the final graph (non-zero entries)."""
    from onnxruntime.transformers.onnx_model_bert import BertOnnxModel

    stats = BertOnnxModel(_copy(model), num_heads, hidden_size).get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def weight_bytes(model: Any) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def opset(model: Any) -> int:
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _copy(model: Any) -> Any:
    from onnx import ModelProto

    copy = ModelProto()
    copy.CopyFrom(model)
    return copy


def _pruned(model: Any) -> Any:
    from onnxruntime.transformers.onnx_model import OnnxModel

    wrapped = OnnxModel(model)
    wrapped.prune_graph()
    wrapped.topological_sort()
    return wrapped.model
