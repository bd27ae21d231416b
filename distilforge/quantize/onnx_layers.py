"""Where a layer lives in the optimized ONNX graph: a MatMul's role (from the op that feeds it), the task head's
GEMMs, and each layer group of quantize/sensitivity.py as node names, for the INT8 recipes' `nodes_to_exclude`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from distilforge.checkpoint import LoadedCheckpoint
from distilforge.quantize.sensitivity import head_groups, placed_names

# A MatMul's role, from the op that produces its activation input.
ROLES = {"ffn_out": ("Gelu", "FastGelu", "BiasGelu"), "attention_out": ("Attention", "MultiHeadAttention"),
         "ffn_in": ("LayerNormalization", "SkipLayerNormalization")}


def matmul_role(node: Any, producers: dict[str, Any]) -> str | None:
    """'ffn_out', 'attention_out' or 'ffn_in' for a MatMul/Gemm, from what produces its input."""
    if node.op_type not in ("MatMul", "Gemm") or not node.input:
        return None
    producer = producers.get(node.input[0])
    kind = producer.op_type if producer is not None else None
    return next((role for role, ops in ROLES.items() if kind in ops), None)


def head_nodes(model: Any) -> set[str]:
    """The task head's small GEMMs: MatMul/Gemm nodes after the last encoder FFN (the last MatMul fed by a GELU)
    whose output is at most as wide as their input (pre_classifier, classifier, qa_outputs, MLM vocab_transform;
    not MLM's vocab_projector, which is a large GEMM over every token). Needs a topologically sorted graph."""
    nodes = list(model.graph.node)
    producers = {out: n for n in nodes for out in n.output}
    last_ffn = max((i for i, n in enumerate(nodes) if matmul_role(n, producers) == "ffn_out"), default=None)
    if last_ffn is None:
        return set()
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    heads = set()
    for node in nodes[last_ffn + 1:]:
        shape = weights.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if shape is None or len(shape) != 2:
            continue
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
        k, n = shape[::-1] if trans_b else shape
        if n <= k:
            heads.add(node.name)
    return heads


def name_nodes(model: Any) -> None:
    """Give every unnamed node a name, in place: the quantizer excludes nodes by name."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}_distilforge"


def kept_float_nodes(model: Any, keep: tuple[str, ...]) -> list[str]:
    """Names of the nodes that match `keep` by op type, role ("head" or a MatMul role) or name (unnamed nodes
    get names). ORT's quantizer first rewrites a Gemm as `<name>_MatMul` + `<name>_Add`: a kept Gemm is
    listed under both names, or the exclusion would silently miss it."""
    producers = {out: n for n in model.graph.node for out in n.output}
    names = []
    name_nodes(model)
    heads = head_nodes(model) if "head" in keep else set()
    for node in model.graph.node:
        if (node.op_type in keep or node.name in keep or node.name in heads
                or matmul_role(node, producers) in keep):
            names.append(node.name)
            if node.op_type == "Gemm":
                names.append(f"{node.name}_MatMul")
    return names


def layer_groups_in_graph(model: Any, ckpt: LoadedCheckpoint) -> dict[str, list[str]]:
    """Each layer group (quantize/sensitivity.py) -> its node names in the optimized graph: the n-th fused
    Attention / attention-output / FFN-in / FFN-out MatMul is encoder layer n's; the GEMMs after the last FFN
    with constant weights are the head's Linears, in the eager model's order."""
    producers = {out: n for n in model.graph.node for out in n.output}
    found: dict[str, list[str]] = {}
    seen: Counter[str] = Counter()
    last_ffn = max((i for i, n in enumerate(model.graph.node) if matmul_role(n, producers) == "ffn_out"), default=-1)
    weights = {t.name for t in model.graph.initializer}
    head = [n for n in list(model.graph.node)[last_ffn + 1:]
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights]
    for node in list(model.graph.node)[:last_ffn + 1]:
        role = "qkv" if node.op_type in ROLES["attention_out"] else matmul_role(node, producers)
        if role is not None:
            found[f"layer.{seen[role]}.{role}"] = [node.name]
            seen[role] += 1
    eager_heads = head_groups(ckpt.model)
    if len(eager_heads) == len(head):
        found.update({group: [node.name] for group, node in zip(eager_heads, head, strict=True)})
    return found


def group_nodes(model: Any, ckpt: LoadedCheckpoint, groups: tuple[str, ...], target: str) -> list[str]:
    """The node names of the layer groups a measured rung keeps float (a Gemm under both of its names)."""
    if not groups:
        return []
    name_nodes(model)
    names = placed_names(layer_groups_in_graph(model, ckpt), groups, target, "node in the optimized graph")
    kinds = {n.name: n.op_type for n in model.graph.node}
    return names + [f"{name}_MatMul" for name in names if kinds[name] == "Gemm"]
