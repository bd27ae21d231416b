"""Which FULLY_CONNECTED op of the fp32 flatbuffer computes which eager Linear, as ai-edge-quantizer addresses it.

The layer groups are quantize/sensitivity.py's (`layer.3.ffn_out`, `head.classifier`). They are found from the
graph, not from tensor names: litert-torch names a tensor after every module location it was merged from, so
the query projection's output may carry `v_lin` as well as `q_lin`, and the classifier's is the signature's
output name. In each signature's subgraph the FULLY_CONNECTED ops come in execution order, and a DistilBERT
encoder layer is: the query, key and value projections (consecutive ops reading one input), then one keeping
the width (attention output), one widening it (FFN lin1), one narrowing it (FFN lin2). The ops after the last
layer are the task head's Linears, in the eager model's module order.

ai-edge-quantizer picks an op's recipe entry by `re.search(regex, scope)`, the scope being the op's output tensor
names joined by ';' (`tfl_flatbuffer_utils.get_op_scope`); the selectors here are those scopes, anchored and
escaped, so each matches its op (and the same op in the other signatures) only.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from distilforge.errors import ExportError
from distilforge.quantize.sensitivity import head_groups, placed_names

ENCODER_WIDTHS = ("same", "widening", "narrowing")  # attention output, FFN lin1, FFN lin2: after q, k, v


def fully_connected_ops(fp32: bytes) -> list[tuple[Any, list[Any]]]:
    """Each subgraph (one per signature) with its FULLY_CONNECTED ops, in execution order."""
    from ai_edge_quantizer.qtyping import TFLOperationName
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = tfl.read_model(fp32)
    return [(graph, [op for op in graph.operators if tfl.TFL_OP_CODE_TO_NAME.get(
        model.operatorCodes[op.opcodeIndex].builtinCode) == TFLOperationName.FULLY_CONNECTED])
            for graph in model.subgraphs]


def width(graph: Any, op: Any) -> str:
    """'widening', 'narrowing' or 'same': the FC's output features against its input features."""
    out_features, in_features = graph.tensors[op.inputs[1]].shape[:2]
    return "widening" if out_features > in_features else "narrowing" if out_features < in_features else "same"


def selector(graph: Any, op: Any) -> str:
    """The regex an ai-edge-quantizer recipe entry needs to match this op alone: its whole scope."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    return f"^{re.escape(tfl.get_op_scope(op, graph.tensors))}$"


def layer_groups_in_model(fp32: bytes, heads: Sequence[str]) -> dict[str, list[str]]:
    """Each layer group -> the selectors of its FULLY_CONNECTED ops over every signature (one per distinct scope).
    `heads`: the eager head groups in module order; they are placed only when the ops after the last encoder layer
    are as many."""
    found: dict[str, list[str]] = {}
    for graph, fcs in fully_connected_ops(fp32):
        for group, ops in _groups_in_graph(graph, fcs, heads).items():
            selectors = found.setdefault(group, [])
            selectors.extend(s for s in (selector(graph, op) for op in ops) if s not in selectors)
    return found


def _groups_in_graph(graph: Any, fcs: list[Any], heads: Sequence[str]) -> dict[str, list[Any]]:
    readers = Counter(op.inputs[0] for op in fcs)
    found: dict[str, list[Any]] = {}
    start, layer = 0, 0
    while start < len(fcs) and readers[fcs[start].inputs[0]] >= 3:
        shared = fcs[start].inputs[0]
        qkv = list(itertools.takewhile(lambda op, shared=shared: op.inputs[0] == shared, fcs[start:]))
        rest = fcs[start + len(qkv):start + len(qkv) + len(ENCODER_WIDTHS)]
        if tuple(width(graph, op) for op in rest) != ENCODER_WIDTHS:
            break
        found[f"layer.{layer}.qkv"] = qkv
        for role, op in zip(("attention_out", "ffn_in", "ffn_out"), rest, strict=True):
            found[f"layer.{layer}.{role}"] = [op]
        start, layer = start + len(qkv) + len(rest), layer + 1
    head = fcs[start:]
    if layer and len(head) == len(heads):
        found.update({group: [op] for group, op in zip(heads, head, strict=True)})
    return found


def group_selectors(fp32: bytes, model: Any, groups: Sequence[str], target: str) -> list[str]:
    """The selectors of the FULLY_CONNECTED ops of `groups` (the layer groups a measured rung keeps float)."""
    if not groups:
        return []
    placed = layer_groups_in_model(fp32, head_groups(model))
    names = placed_names(placed, groups, target, "fully connected op in the TFLite model")
    for group in groups:
        shared = [other for other, selectors in placed.items()
                  if other not in groups and set(selectors) & set(placed[group])]
        if shared:
            raise ExportError(f"{target}: layer group {group}'s fully connected op has the same name as "
                              f"{shared[0]}'s, so ai-edge-quantizer cannot keep it float alone")
    return names
