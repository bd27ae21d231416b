"""ExecuTorch: torch.export with bounded dynamic batch and sequence, lowered to XNNPACK, saved as a `.pte` program.

ExecuTorch plans all activation memory ahead of time for the largest shape the program accepts, and its runtime
only checks an input's element count, so every artifact carries upper bounds (`--executorch-max-shape`, default
4 x the model's maximum positions; multiple choice 4 x 4 x it): they go into the manifest and the card, and the
runner refuses anything outside them. The planned memory grows with the bounds (the default model: 42 MB per row
of 512 tokens), which is why the default batch is small.

Traps, measured with executorch 1.5.1 and torch 2.13:
- the QA head's `logits.split(1, dim=-1)` makes memory planning freeze the batch size to the example's (a
  4 x 128 input then fails "Attempted to resize a bounded tensor"): the wrapper computes the QA tail itself
  with `unbind(-1)`, which keeps it dynamic and gives the same numbers;
- inputs must be int64 and contiguous;
- transformers' attention (`scaled_dot_product_attention`) decomposes with a guard for fully masked rows made of
  ops XNNPACK lacks (`any`, `logical_not`, `where`), which ran between the delegate pieces of every layer: the
  wrapper runs the same attention as plain matmul/softmax (`plain_attention`). Default model, batch 1 x 128, 2
  threads, VNNI (benchmarks/executorch_attention.py): fp32 24.3 -> 17.9 ms, INT8 (all-int8) 15.5 -> 8.6 ms,
  planned memory 168 -> 121 MB;
- the attention's 4-D `matmul` decomposes into a portable `expand_copy` of both operands (25 copies, 1.4 ms of the
  default model's 11.6 ms INT8 run, ETDump). They copy a tensor to its own shape, and since 2026-12-08 `lower`
  runs XNNPACK's `RemoveNoopExpandCopyPass` (its `get_transform_passes()`), which drops them: 56 -> 50 delegate
  pieces, outputs bit for bit the same (default model, batch 1 x 1 to 4 x 512), INT8 (all-int8) 9.60 -> 7.38 ms
  (0.77x) and fp32 19.4 -> 17.4 ms (0.89x) (batch 1 x 128, 2 threads, VNNI; benchmarks/executorch_attention.py,
  one run). Before that, the same attention as 3-D `bmm` over (batch x heads) was 0.77x the INT8 latency and
  0.88x fp32's (commit a32773c, benchmarks/executorch_attention.py there), but with it the tiny
  multiple-choice model's `executorch:int8-static` program gave garbage (cosine -0.5) on every input after one
  1 x 1 x 1 call, which the runner makes to warm up; without that call its outputs were right. fp32 and
  int8-dynamic programs were right either way, and so was the static one calibrated on 16 samples instead of the
  default. Not taken until that is understood (not narrowed down further: it looks like ExecuTorch 1.5.1 resizing
  a static-INT8 program's pieces after a smaller call, unproven);
- LayerNorm, the embedding lookups and the views that split the heads (XNNPACK reshapes one dynamic axis, these
  have two: batch and sequence) stay outside XNNPACK, so the graph still runs as 56 delegate pieces with portable
  ops between them. LayerNorm written as XNNPACK ops (the mean as a Linear of 1/dim weights, then sub, mul,
  rsqrt; measured with the bmm attention) cut that to 38 pieces but INT8 only from 7.96 to 7.65 ms, made the
  lowering 7 s slower, and moved INT8's largest difference from eager from 0.59 to 0.75: not taken.
INT8 (quantize/executorch.py) starts from the same wrapper and the same bounds.

Cost: lowering (`to_edge_transform_and_lower`) is most of an export; it re-traces the graph with symbolic shapes
many times (run_decompositions, the edge passes, then XNNPACK's passes on each of 56 delegate pieces). The
default model's int8-static program, measured by phase (2026-12-07, VNNI): its edge program 22 s, partitioning 3 s,
XNNPACK preprocessing 22 s (8 s without the passes for ops it lacks), `to_executorch` 4 s. `lower` skips the edge
dialect's IR verifier, collects garbage less often, leaves out those XNNPACK passes, lets the edge step
decompose once (`xnnpack_partitioner`) and leaves out the edge passes that have nothing to rewrite
(`fewer_edge_passes`): the edge program 15 s instead of 22 s (its passes 5.0 -> 2.8 s with the last change), the
whole lowering 29 s instead of 52 s. Since 2026-12-08 the program is functionalized and decomposed in one
re-trace instead of two (`traced_once`), each piece is lowered without the XNNPACK passes that have nothing in it
to rewrite (PIECE_PASS_OPS: the default model's all-int8 lowering about 1 s shorter), and `to_executorch` runs its
dim-order legalization only where a program needs it (`dim_order_legalized_when_needed`). None of it changes a
byte of the program (checked by sha256: the first two on every target and recipe of the default model, the others
on its three targets' programs, on the three programs of each tiny head, and by tests).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import gc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import CheckpointInfo, LoadedCheckpoint
from distilforge.errors import ExportError, UsageError, first_line
from distilforge.exporters.common import (
    example_inputs,
    example_shape,
    file_records,
    head_module,
    input_specs,
    output_specs,
    quiet,
)
from distilforge.options import BuildOptions

MODEL_FILE = "model.pte"
METHOD = "forward"
DEFAULT_MAX_BATCH = 4
DEFAULT_MAX_CHOICES = 4


def max_shape(info: CheckpointInfo, options: BuildOptions) -> tuple[int, ...]:
    """The largest (batch, [choices,] sequence) the program takes: --executorch-max-shape or the default."""
    multiple_choice = info.head.multiple_choice
    asked = options.executorch_max_shape
    if not asked:
        return ((DEFAULT_MAX_BATCH, DEFAULT_MAX_CHOICES, info.max_length) if multiple_choice
                else (DEFAULT_MAX_BATCH, info.max_length))
    if len(asked) != (3 if multiple_choice else 2):
        raise UsageError(f"--executorch-max-shape {_text(asked)}: {info.head.architecture} takes "
                         + ("BATCHxCHOICESxSEQUENCE" if multiple_choice else "BATCHxSEQUENCE"))
    if asked[-1] > info.max_length:
        raise UsageError(f"--executorch-max-shape {_text(asked)}: sequence {asked[-1]} is longer than the model's "
                         f"maximum of {info.max_length} positions")
    return tuple(asked)


def check_options(info: CheckpointInfo, options: BuildOptions) -> None:
    max_shape(info, options)


def bounds_record(info: CheckpointInfo, shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Each input axis's [min, max], as the manifest and the card give them."""
    return {axis: [1, size] for axis, size in zip(info.head.input_axes, shape, strict=True)}


def _text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def wrap(ckpt: LoadedCheckpoint) -> Any:
    """A copy of the model as `forward(input_ids, attention_mask) -> tuple of the head's outputs`, with the QA tail
    and the attention rewritten (see the module docstring); the checkpoint's model stays as it is."""
    import torch

    model = copy.deepcopy(ckpt.model)
    plain_attention(model)
    if ckpt.head.task != "question-answering":
        return head_module(replace(ckpt, model=model))

    class QuestionAnswering(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
            hidden = self.model.distilbert(input_ids=input_ids, attention_mask=attention_mask)[0]
            start, end = self.model.qa_outputs(self.model.dropout(hidden)).unbind(-1)
            return start.contiguous(), end.contiguous()

    return QuestionAnswering(model).eval()


def plain_attention(model: Any) -> int:
    """Every DistilBERT self-attention of `model` replaced, in place, by `PlainAttention` over the same Linears
    (same module names, so the INT8 recipes name the same layers). Returns how many were replaced."""
    from transformers.models.distilbert.modeling_distilbert import MultiHeadSelfAttention

    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, MultiHeadSelfAttention):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, _plain_attention(module))
            replaced += 1
    return replaced


def _plain_attention(original: Any) -> Any:
    """transformers' DistilBERT attention calls `scaled_dot_product_attention`, which torch.export decomposes with
    a guard for fully masked rows (`any`, `logical_not`, `where`): kernels XNNPACK does not have, so every layer's
    attention ran in three pieces with portable kernels between them. This is the same attention written with ops
    XNNPACK runs (matmul, scale, the additive mask, softmax); the outputs move by float rounding only (~1e-6 on the
    default model's logits). A row whose every key is masked gets the uniform weights the additive mask gives
    (sdpa's guard gave zeros there; such a row is padding)."""
    import torch

    class PlainAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n_heads, self.dim = original.n_heads, original.dim
            self.q_lin, self.k_lin, self.v_lin, self.out_lin = (original.q_lin, original.k_lin, original.v_lin,
                                                                original.out_lin)

        def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                    head_mask: Any = None, output_attentions: bool = False) -> tuple[torch.Tensor]:
            batch, per_head = query.shape[0], self.dim // self.n_heads

            def heads(x: torch.Tensor) -> torch.Tensor:
                return x.view(batch, -1, self.n_heads, per_head).transpose(1, 2)

            q = heads(self.q_lin(query)) * (per_head ** -0.5)
            scores = torch.matmul(q, heads(self.k_lin(key)).transpose(2, 3))
            if mask is not None:
                scores = scores + _additive(mask, scores.dtype)
            context = torch.matmul(torch.softmax(scores, dim=-1), heads(self.v_lin(value)))
            return (self.out_lin(context.transpose(1, 2).reshape(batch, -1, self.dim)),)

    return PlainAttention().eval()


def _additive(mask: Any, dtype: Any) -> Any:
    """The mask as a float to add to the scores: sdpa's (batch, 1, queries, keys) as it comes, the eager
    implementation's (batch, keys) of 1 and 0 made so."""
    import torch

    if mask.dim() == 4:
        return mask
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def example_tensors(ckpt: LoadedCheckpoint, bounds: tuple[int, ...]) -> tuple[Any, ...]:
    """The exporters' example batch, each axis cut to the bounds (an axis bounded to 1 is exported static)."""
    import torch

    shape = tuple(min(size, bound) for size, bound in zip(example_shape(ckpt.head), bounds, strict=True))
    return tuple(torch.from_numpy(v) for v in example_inputs(ckpt, shape).values())


def dynamic_shapes(ckpt: LoadedCheckpoint, shape: tuple[int, ...]) -> dict[str, dict[int, Any]]:
    """One Dim per input axis, shared by both inputs; an axis bounded to 1 is static."""
    from torch.export import Dim

    axes = {}
    for i, (axis, size) in enumerate(zip(ckpt.head.input_axes, shape, strict=True)):
        if size > 1:
            axes[i] = Dim(axis, min=1, max=size)
    return {"input_ids": axes, "attention_mask": axes}


def export_program(module: Any, ckpt: LoadedCheckpoint, shape: tuple[int, ...], target: str) -> Any:
    """torch.export.export of `module` with the bounded dynamic axes."""
    import torch

    inputs = example_tensors(ckpt, shape)
    try:
        return torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes(ckpt, shape), strict=False)
    except Exception as e:
        raise ExportError(f"{target}: torch.export failed: {type(e).__name__}: {first_line(e)}") from e


def lower(program: Any, target: str) -> Any:
    """XNNPACK-delegated `.pte` program (an ExecutorchProgramManager). `do_quant_fusion_and_const_prop` folds the
    INT8 recipes' weight dequantization into constants, as ExecuTorch's own LLM export does; XNNPACK's transform
    passes (`get_transform_passes`, as ExecuTorch's XNNPACK example compiler gives them) drop the attention's
    no-op `expand_copy`s (see the module docstring).

    `_check_ir_validity=False` skips the edge dialect verifier, which re-runs the whole graph on fake tensors to
    check every op's dtypes each time an edge program is built: 9 of 126 s (profiled) of the fp32 lowering, 37 of
    319 s of int8-static's. It only checks, the program is the same; ExecuTorch's own XNNPACK lowering and model
    exports turn it off, and every artifact is run and compared with the reference afterwards."""
    from executorch.backends.xnnpack.utils.configs import get_transform_passes
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    try:
        partitioner = xnnpack_partitioner()
        with fewer_xnnpack_passes(), fewer_edge_passes(), traced_once(program, partitioner) as program:
            edge = to_edge_transform_and_lower(program, transform_passes=get_transform_passes(),
                                               partitioner=[partitioner],
                                               compile_config=EdgeCompileConfig(_check_ir_validity=False))
        with dim_order_legalized_when_needed():
            return edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True))
    except Exception as e:
        raise ExportError(f"{target}: ExecuTorch lowering failed: {type(e).__name__}: {first_line(e)}") from e


# since the process started; read by the tests
edge_programs = {"one decomposition": 0, "checked per node": 0, "traced once": 0, "re-traces left out": 0}


def xnnpack_partitioner() -> Any:
    """ExecuTorch's XnnpackPartitioner, telling the edge step it need not check its preserved ops node by node when
    every one of them in the program already passes that check.

    The partitioner keeps some aten ops whole (linear, ...) if each node passes a constraint check. Given such a
    check, ExecuTorch's edge step decomposes the program twice around swapping the nodes that pass it for
    placeholder ops (its EDGE_DO_NOT_DECOMP path); without one, it keeps those ops whole in one decomposition.
    When every node passes, both give the same program: the same sha256 on the default model's three programs
    (tests/test_executorch.py checks tiny ones), and the edge step of its int8-static program took 14.7 s instead
    of 21.8 s."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Partitioner(XnnpackPartitioner):  # type: ignore[misc, valid-type]
        def ops_to_not_decompose(self, ep: Any) -> tuple[list[Any], Any]:
            ops, check = super().ops_to_not_decompose(ep)
            if check is not None and all(check(node) for node in ep.graph.nodes
                                         if node.op == "call_function" and node.target in ops):
                edge_programs["one decomposition"] += 1
                return ops, None
            edge_programs["checked per node"] += 1
            return ops, check

    return Partitioner()


@contextlib.contextmanager
def traced_once(program: Any, partitioner: Any) -> Iterator[Any]:
    """`program` functionalized and decomposed in one re-trace, with ExecuTorch's edge step given it back as it is
    when it asks for either again.

    With a partitioner that has no node check (`xnnpack_partitioner`), the edge step re-traces the whole program
    twice: `run_decompositions({})` to functionalize it, then `run_decompositions` with ExecuTorch's table less
    the partitioner's ops. The second always runs: `sym_size`, in the table and never decomposed, is in every
    program with a dynamic axis. One call with that table does both. A partitioner with a node check takes
    ExecuTorch's own path. Same bytes (sha256: the default model's fp32 and int8-dynamic programs, two recipes;
    tests/test_executorch.py: tiny fp32 and static ones); the default model's lowerings took 1.2-3.7 s less of
    12-20 s (fp32 0.89x, INT8 0.81-0.84x, benchmarks/executorch_lowering.py)."""
    from executorch.exir.tracer import _default_decomposition_table
    from torch.export import ExportedProgram

    ops, check = partitioner.ops_to_not_decompose(program)
    if check is not None:
        yield program
        return
    table = _default_decomposition_table()
    for op in ops:
        table.pop(op, None)
    done = program.run_decompositions(table)
    every = ExportedProgram.run_decompositions

    def run_decompositions(self: Any, decomp_table: Any = None, *args: Any, **kwargs: Any) -> Any:
        if self is done and not args and not kwargs and decomp_table is not None and (
                not decomp_table or set(decomp_table.keys()) == set(table.keys())):
            edge_programs["re-traces left out"] += 1
            return self  # functional already, and nothing of that table is left in it
        return every(self, decomp_table, *args, **kwargs)

    ExportedProgram.run_decompositions = run_decompositions
    edge_programs["traced once"] += 1
    try:
        yield done
    finally:
        ExportedProgram.run_decompositions = every


# XNNPACK's delegate passes (executorch/backends/xnnpack/_passes) that act only on ops our graphs do not have:
# convolutions, batch norm, concatenation, padding, PReLU, upsampling, scaled_dot_product_attention, max pooling
# and max.dim (RemoveGetItemPass), and the channels-last layout that convolutions ask for (with the copies it
# inserts). Each pass re-traces its piece.
IDLE_XNNPACK_PASSES = frozenset({
    "ConvertToUpsampleBilinear2d", "ConvertToSDPAPass", "FuseBatchNormPass", "DecomposeBatchNorm",
    "DecomposeConcatenate", "InsertPadQDQPass", "Conv1dUnsqueezePass", "PReLUReshapePass",
    "ChannelsLastTaggedReshapePass", "RemoveRedundantCopyPass", "RemoveGetItemPass"})
# every op in the delegate pieces of the six heads' fp32, int8-dynamic and int8-static programs
PIECE_OPS = frozenset({
    "aten._softmax.default", "aten.add.Tensor", "aten.bmm.default", "aten.gelu.default", "aten.linear.default",
    "aten.mul.Tensor", "aten.permute_copy.default", "aten.relu.default", "aten.sub.Tensor",
    "dim_order_ops._clone_dim_order.default", "quantized_decomposed.choose_qparams.tensor",
    "quantized_decomposed.dequantize_per_channel.default", "quantized_decomposed.dequantize_per_tensor.default",
    "quantized_decomposed.dequantize_per_tensor.tensor", "quantized_decomposed.quantize_per_tensor.default",
    "quantized_decomposed.quantize_per_tensor.tensor", "getitem"})
# XNNPACK's delegate passes that rewrite only these of PIECE_OPS (and ops PIECE_OPS lacks: hardtanh, mm, addmm,
# aten.clone, _to_dim_order_copy): a piece with none of them is lowered without the pass. Each pass re-traces its
# piece, as the idle ones did.
PIECE_PASS_OPS = {
    "FuseActivationPass": frozenset({"aten.relu.default"}),  # an activation folded into the op before it
    "ConvertToLinearPass": frozenset({"aten.bmm.default"}),  # [add]mm/bmm traced from a Linear -> linear
    "XNNPACKRemoveCloneOpsTransform": frozenset({"dim_order_ops._clone_dim_order.default"}),
    "DimOrderOpsRevertPass": frozenset({"dim_order_ops._clone_dim_order.default"}),
}
# since the process started; read by the tests
pieces_lowered = {"fewer passes": 0, "every pass": 0, "passes with nothing to rewrite left out": 0}


@contextlib.contextmanager
def fewer_xnnpack_passes() -> Iterator[None]:
    """Lower each delegate piece whose ops are all in PIECE_OPS without IDLE_XNNPACK_PASSES, and without each pass
    of PIECE_PASS_OPS none of whose ops it has; any other piece gets every pass. The bytes are the same (checked by
    sha256 on the default model's three programs, and by tests/test_executorch.py on a tiny model); the XNNPACK
    preprocessing of the default model's int8-static program took 21.6 s with every pass and 7.8 s without the idle
    ones, fp32's 9.1 and 4.0 s. ExecuTorch chooses the passes inside XnnpackBackend.preprocess and takes no list
    from its caller, so its pass manager is swapped for the call."""
    from executorch.backends.xnnpack import xnnpack_preprocess

    every = xnnpack_preprocess.XNNPACKPassManager

    class FewerPasses(every):  # type: ignore[misc, valid-type]
        def __init__(self, exported_program: Any, passes: Any = None) -> None:
            super().__init__(exported_program, passes)
            if passes is None and _only_piece_ops(exported_program):
                ops = {_op_name(n) for n in exported_program.graph_module.graph.nodes if n.op == "call_function"}
                working = [p for p in self.passes
                           if p.__name__ not in PIECE_PASS_OPS or ops & PIECE_PASS_OPS[p.__name__]]
                pieces_lowered["passes with nothing to rewrite left out"] += len(self.passes) - len(working)
                self.passes = [p for p in working if p.__name__ not in IDLE_XNNPACK_PASSES]
                pieces_lowered["fewer passes"] += 1
            else:
                pieces_lowered["every pass"] += 1

    xnnpack_preprocess.XNNPACKPassManager = FewerPasses
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = every


def _op_name(node: Any) -> str:
    return getattr(node.target, "__name__", str(node.target))


def _only_piece_ops(program: Any) -> bool:
    """Every call is to an op in PIECE_OPS, and none was traced from attention or upsampling that the SDPA and
    upsampling passes would recognise by its source function."""
    nodes = [n for n in program.graph_module.graph.nodes if n.op == "call_function"]
    sources = {str(fn).lower() for n in nodes for _, fn in (n.meta.get("source_fn_stack") or [])}
    return (all(_op_name(n) in PIECE_OPS for n in nodes)
            and not any(word in source for source in sources for word in ("scaled_dot_product", "upsample",
                                                                          "interpolate")))


# ExecuTorch's edge passes (executorch/exir/passes) that re-trace the whole program and rewrite only the nodes below;
# on a program without such nodes each costs a trace (0.3-0.7 s on the default model) and changes nothing.
def _has_transpose(nodes: list[Any]) -> bool:  # NormalizeTransposePass: aten.t -> t_copy
    import torch

    return any(n.target == torch.ops.aten.t.default for n in nodes)


def _has_view(nodes: list[Any]) -> bool:  # ReplaceBrokenOpsWithFunctionalOpsPass: a view op -> its _copy
    import torch

    return any(isinstance(n.target, torch._ops.OpOverload) and n.target.is_view for n in nodes)


def _tensor_arguments(node: Any) -> list[Any]:
    """What `node` passes to its op's Tensor parameters, paired by ExecuTorch's own map_args, as the passes do."""
    import torch
    from executorch.exir.pass_base import map_args

    found: list[Any] = []

    def keep(value: Any, parameter: Any) -> Any:
        if isinstance(parameter.type, torch.TensorType):
            found.append(value)
        return value

    map_args(node.target, keep, tuple(node.args), dict(node.kwargs))
    return found


def _ops(nodes: list[Any]) -> list[Any]:
    import torch

    return [n for n in nodes if isinstance(n.target, torch._ops.OpOverload)]


def _has_scalar_for_tensor(nodes: list[Any]) -> bool:  # ScalarToTensorPass: a Python number given for a Tensor
    return any(isinstance(value, (bool, int, float)) for n in _ops(nodes) for value in _tensor_arguments(n))


def _has_symbol_for_tensor(nodes: list[Any]) -> bool:  # SymToTensorPass: a SymInt/SymFloat/SymBool for a Tensor
    import torch

    return any(hasattr(value, "meta") and isinstance(value.meta.get("val"), (torch.SymInt, torch.SymFloat,
                                                                             torch.SymBool))
               for n in _ops(nodes) for value in _tensor_arguments(n))


def _has_mixed_types(nodes: list[Any]) -> bool:
    """RemoveMixedTypeOperators: an add/sub/mul/div/minimum whose operands are not all tensors of one floating
    dtype (anything else is left to the pass)."""
    import torch

    aten = torch.ops.aten
    promoting = {aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor, aten.div.Tensor, aten.div.Tensor_mode,
                 aten.minimum.default}
    for n in nodes:
        if n.target not in promoting or len(n.args) <= 1:
            continue
        values = [a.meta.get("val") if hasattr(a, "meta") else a for a in n.args]
        if not all(isinstance(v, torch.Tensor) for v in values) or any(hasattr(v, "meta") for v in n.kwargs.values()):
            return True
        if len({v.dtype for v in values}) > 1 or not values[0].dtype.is_floating_point:
            return True
    return False


def _plain(nodes: list[Any]) -> bool:
    """Only ops and Python's own functions (getitem): a control-flow operator's branches, which the passes also
    rewrite, are not looked into, so a program with one gets every pass."""
    import torch

    return all(isinstance(n.target, torch._ops.OpOverload) or getattr(n.target, "__module__", None) in
               ("_operator", "operator", "builtins", "math") for n in nodes)


EDGE_PASS_WORK = {"NormalizeTransposePass": _has_transpose, "ReplaceBrokenOpsWithFunctionalOpsPass": _has_view,
                  "ScalarToTensorPass": _has_scalar_for_tensor, "SymToTensorPass": _has_symbol_for_tensor,
                  "RemoveMixedTypeOperators": _has_mixed_types}
edge_passes: collections.Counter[tuple[str, str]] = collections.Counter()  # (pass, "run"/"skipped"); for the tests


@contextlib.contextmanager
def fewer_edge_passes() -> Iterator[None]:
    """Each edge pass in EDGE_PASS_WORK runs only on a program that has what it rewrites, checked when its turn
    comes (so after the passes before it). Same bytes: the default model's three programs (sha256) and
    tests/test_executorch.py. ExecuTorch builds the pass list inside `_generate_edge_program`, so the function
    that makes it is swapped for the call."""
    from executorch.exir.program import _program
    from torch.fx.passes.infra.pass_base import PassResult

    every = _program._get_aten_to_edge_passes

    def when_needed(edge_pass: Any) -> Any:
        name = type(getattr(edge_pass, "__wrapped__", edge_pass)).__name__
        has_work = EDGE_PASS_WORK.get(name)
        if has_work is None:
            return edge_pass

        def run(graph_module: Any) -> Any:
            nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
            if not _plain(nodes) or has_work(nodes):
                edge_passes[name, "run"] += 1
                return edge_pass(graph_module)
            edge_passes[name, "skipped"] += 1
            return PassResult(graph_module, False)

        return run

    def fewer(config: Any) -> Any:
        before, after = every(config)
        return [when_needed(p) for p in before], after

    _program._get_aten_to_edge_passes = fewer
    try:
        yield
    finally:
        _program._get_aten_to_edge_passes = every


executorch_passes = collections.Counter()  # (pass, "run" | "skipped") since the process started; read by the tests


@contextlib.contextmanager
def dim_order_legalized_when_needed() -> Iterator[None]:
    """`to_executorch`'s LegalizePortableDimOrderPass runs only on a program where one of the ops it legalizes
    (pooling, `expand_copy`, `mean.dim`, `sum.dim_IntList`) reads a tensor in a dim order other than the default:
    it inserts a contiguous copy before such an op and changes nothing else, but re-traces the whole program to
    find out (about 1.3 s of the default model's lowering). Same bytes (tests/test_executorch.py). ExecuTorch builds
    the pass list inside `edge_to_executorch_passes`, so the class it names is swapped for the call."""
    from executorch.exir.program import _program
    from torch.fx.passes.infra.pass_base import PassResult

    every = _program.LegalizePortableDimOrderPass

    class WhenNeeded(every):  # type: ignore[misc, valid-type]
        def call(self, graph_module: Any) -> Any:
            if _all_default_dim_order(graph_module, self._target_ops):
                executorch_passes["LegalizePortableDimOrderPass", "skipped"] += 1
                return PassResult(graph_module, False)
            executorch_passes["LegalizePortableDimOrderPass", "run"] += 1
            return super().call(graph_module)

    _program.LegalizePortableDimOrderPass = WhenNeeded
    try:
        yield
    finally:
        _program.LegalizePortableDimOrderPass = every


def _all_default_dim_order(graph_module: Any, ops: Any) -> bool:
    """Every call to one of `ops` in the graph (which has no subgraphs) reads a tensor in the default dim order."""
    import torch

    if any(isinstance(m, torch.fx.GraphModule) for m in graph_module.children()):
        return False
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in ops:
            continue
        first = node.args[0] if node.args else None
        value = first.meta.get("val") if isinstance(first, torch.fx.Node) else None
        if not isinstance(value, torch.Tensor) or tuple(value.dim_order()) != tuple(range(value.dim())):
            return False
    return True


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector runs every 700 net allocations; tracing and lowering allocate millions of
    short-lived objects (fx nodes, sympy expressions, fake tensors), so it ran ~2,700 times in the fp32 export,
    3.6-6.6 s of it. Every 100,000 it runs 17 times (1.5 s) and the peak memory stays the same (1.50 GB; with the
    collector off it grew to 1.68 GB)."""
    before = gc.get_threshold()
    gc.set_threshold(100_000, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def program_facts(manager: Any) -> dict[str, Any]:
    """What the lowered program says of itself: planned activation memory and how much XNNPACK runs."""
    plan = manager.executorch_program.execution_plan[0]
    return {"planned_memory_bytes": int(sum(plan.non_const_buffer_sizes)),
            "xnnpack_delegates": len(plan.delegates),
            "portable_ops": sorted({op.name for op in plan.operators})}


def record(ckpt: LoadedCheckpoint, folder: Path, target: str, shape: tuple[int, ...], facts: dict[str, Any],
           details: dict[str, Any], warnings: list[str]) -> ExportedArtifact:
    from importlib.metadata import version

    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.export + executorch.exir.to_edge_transform_and_lower (XnnpackPartitioner)",
                 "executorch": version("executorch"), "method": METHOD, "max_shape": list(shape),
                 "bounds": bounds_record(ckpt.info, shape), **facts, **details},
        warnings=warnings)


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    target = "executorch:fp32"
    shape = max_shape(ckpt.info, options)
    import torch

    with quiet() as captured, torch.no_grad(), fewer_collections():
        manager = lower(export_program(wrap(ckpt), ckpt, shape, target), target)
        (folder / MODEL_FILE).write_bytes(bytes(manager.buffer))
    return record(ckpt, folder, target, shape, program_facts(manager), {"weights": "fp32"}, captured.warnings)
