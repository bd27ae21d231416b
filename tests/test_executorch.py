"""ExecuTorch: bounds (the runner refuses what the program was not exported for), a smaller bound built and
validated inside it, the QA head's dynamic batch, the card an app reads, and INT8's smaller file.

Every head x target is built and validated in tests/test_targets.py (the session's `built` fixture)."""

from __future__ import annotations

import collections
import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import installed_targets

from distilforge.artifacts.records import ExportedArtifact

pytestmark = pytest.mark.skipif("executorch:fp32" not in installed_targets(), reason="executorch not installed")


def _entry(result, target):
    return next(e for e in result.manifest["artifacts"] if e["target"] == target)


def _runner(result, target):
    from distilforge.validate.runners.executorch import open_runner

    return open_runner(result.out, ExportedArtifact.from_dict(_entry(result, target)), 1)


def _inputs(shape, vocab=40):
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(5, vocab, size=shape, dtype=np.int64),
            "attention_mask": np.ones(shape, dtype=np.int64)}


@pytest.mark.parametrize("shape", [(5, 8), (2, 65), (2, 2, 8), (0, 8)])
def test_runner_refuses_shapes_outside_the_bounds(built, shape):
    from distilforge.validate.runners.executorch import InputOutOfBounds

    runner = _runner(built("seq-single"), "executorch:fp32")
    with pytest.raises(InputOutOfBounds, match=r"outside the bounds it was exported with \(batch 1-4, sequence "
                                               r"1-64\); rebuild with a larger --executorch-max-shape"):
        runner.run(_inputs(shape))


def test_qa_takes_every_batch_up_to_its_bound(built, tiny_checkpoints):
    """transformers' QA head splits its logits with `split`, which froze the batch to the example's; the
    exporter's `unbind` keeps it dynamic."""
    import torch

    from distilforge.checkpoint import load_checkpoint

    result = built("qa")
    runner = _runner(result, "executorch:fp32")
    model = load_checkpoint(tiny_checkpoints["qa"]).model
    for shape in [(1, 64), (4, 64), (4, 3), (3, 17)]:
        fed = _inputs(shape)
        out = runner.run(fed)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in fed.items()})
        assert out["start_logits"].shape == shape
        np.testing.assert_allclose(out["start_logits"], ref.start_logits.numpy(), atol=1e-4)
        np.testing.assert_allclose(out["end_logits"], ref.end_logits.numpy(), atol=1e-4)


def test_a_smaller_bound_is_built_validated_and_recorded(tiny_checkpoints, tmp_path, built):
    """A batch bound of 1 exports that axis static, and a sequence bound under the exporters' example length of 16
    cuts the example (and the INT8 recipes' examples) to it."""
    from conftest import TINY_TOLERANCES

    from distilforge.options import BuildOptions
    from distilforge.pipeline import build
    from distilforge.validate.tolerances import parse_overrides

    targets = ["executorch:fp32", "executorch:int8-dynamic"]
    result = build(tiny_checkpoints["multiple-choice"], tmp_path / "out", targets=targets,
                   options=BuildOptions(executorch_max_shape=(1, 2, 8), tolerances=parse_overrides(TINY_TOLERANCES)))
    assert result.manifest["settings"]["executorch_max_shape"] == [1, 2, 8]
    default = _entry(built("multiple-choice"), "executorch:fp32")["details"]["planned_memory_bytes"]
    for target in targets:
        entry = _entry(result, target)
        assert entry["validation"]["passed"], result.failures
        assert entry["details"]["bounds"] == {"batch": [1, 1], "choices": [1, 2], "sequence": [1, 8]}
        assert all(c["shape"][0] == 1 and c["shape"][1] <= 2 and c["shape"][2] <= 8
                   for c in entry["validation"]["cases"])
        assert entry["details"]["planned_memory_bytes"] < default / 4  # 1x2x8 against 4x4x64


def test_the_card_says_what_an_app_calls(built):
    result = built("multiple-choice")
    for target in ("executorch:fp32", "executorch:int8-dynamic", "executorch:int8-static"):
        folder = result.out / target.replace(":", "-")
        card = json.loads((folder / "distilforge.json").read_text())
        program = card["program"]
        assert program["method"] == "forward" and (folder / program["file"]).is_file()
        assert [i["name"] for i in program["inputs_in_order"]] == ["input_ids", "attention_mask"]
        assert {i["dtype"] for i in program["inputs_in_order"]} == {"int64"}
        assert program["outputs_in_order"] == ["logits"]
        assert program["bounds"] == {"batch": [1, 4], "choices": [1, 4], "sequence": [1, 64]}
        assert program["planned_memory_bytes"] > 0
        assert program["tokenizer_files"] and all((folder / f).is_file() for f in program["tokenizer_files"])
        # the card's line runs as written, in a fresh process (the quantized kernels are not registered there yet)
        assert card["loads_with"].startswith("import executorch.kernels.quantized, executorch.runtime; ")
        line = f"folder = {str(folder)!r}; {card['loads_with']}"
        run = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{target}: {card['loads_with']} failed: {run.stderr[-400:]}"


def test_the_plain_attention_gives_the_models_outputs_for_every_head(tiny_checkpoints):
    """The exporter's attention (matmul/softmax in place of transformers' scaled_dot_product_attention) gives each
    head's outputs on a padded batch, and leaves the checkpoint's model as it was."""
    import torch

    from distilforge.checkpoint import load_checkpoint
    from distilforge.exporters.common import head_module
    from distilforge.exporters.executorch import example_tensors, wrap

    for key, path in tiny_checkpoints.items():
        ckpt = load_checkpoint(path)
        ids, mask = example_tensors(ckpt, (4, 4, 64) if ckpt.head.multiple_choice else (4, 64))
        mask[..., -5:] = 0
        mask[0, ...] = 1
        with torch.no_grad():
            expected, got = head_module(ckpt)(ids, mask), wrap(ckpt)(ids, mask)
            again = head_module(ckpt)(ids, mask)
        for name, e, g, a in zip(ckpt.head.output_names, expected, got, again, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=f"{key} {name}")
            assert torch.equal(a, e), f"{key}: wrap() changed the checkpoint's model"


def _kernel_calls(path):
    """How many times the program at `path` calls each portable kernel, per its flatbuffer."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes())
    plan = getattr(program, "program", program).execution_plan[0]
    calls = collections.Counter()
    for instruction in (i for chain in plan.chains for i in chain.instructions):
        if type(instruction.instr_args).__name__ == "KernelCall":
            calls[plan.operators[instruction.instr_args.op_index].name] += 1
    return calls


@pytest.mark.parametrize("target", ["executorch:fp32", "executorch:int8-dynamic", "executorch:int8-static"])
def test_the_attention_runs_inside_xnnpack(built, target):
    """transformers' attention left its fully-masked-row guard (`any`, `logical_not`, `where` per layer) to the
    portable kernels between XNNPACK's pieces; the plain attention has none of them (the one `where` left builds
    the mask once, before the first layer). Its 4-D matmuls decompose into a portable `expand_copy` of each
    operand to its own shape (four per layer); XNNPACK's transform pass drops those, and the one left is the
    mask's."""
    result = built("seq-single")
    entry = _entry(result, target)
    ops = entry["details"]["portable_ops"]
    assert "aten::any" not in ops and "aten::logical_not" not in ops, ops
    program = next(result.out / f["path"] for f in entry["files"] if f["path"].endswith(".pte"))
    assert _kernel_calls(program)["aten::expand_copy"] == 1, _kernel_calls(program)


def test_int8_programs_are_smaller_and_quantize_the_embeddings(built):
    result = built("masked-lm")
    fp32 = _entry(result, "executorch:fp32")
    for target in ("executorch:int8-dynamic", "executorch:int8-static"):
        entry = _entry(result, target)
        # a tiny model's program is mostly fixed overhead (1.9x smaller here); the default model's is 3.9x
        assert entry["bytes"] < fp32["bytes"] / 1.5, (entry["bytes"], fp32["bytes"])
        assert entry["details"]["embedding_tables_int8"] == 2
        assert "quantized_decomposed::embedding_byte" in entry["details"]["portable_ops"]
        assert "aten::embedding" not in entry["details"]["portable_ops"]


def test_a_static_recipe_reuses_what_an_earlier_one_calibrated(tmp_path, monkeypatch):
    """A measured rung (a layer group float) observes a subset of the edges `static-same-width` does: after it, it
    copies those observers instead of running the calibration text again, and writes the same bytes as when it
    calibrates.
    On one layer: the sharing does not depend on the depth, and each of the three lowerings costs per layer."""
    from tiny import make_checkpoint

    from distilforge.checkpoint import load_checkpoint
    from distilforge.options import BuildOptions
    from distilforge.quantize import executorch as quantize
    from distilforge.quantize.calibration import load_calibration
    from distilforge.quantize.ladder import QuantizeRun

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "checkpoint", "seq-single", n_layers=1))
    calibration = load_calibration(None, ckpt.tokenizer, ckpt.head, samples=16)
    calibrated = []
    samples = quantize._samples
    monkeypatch.setattr(quantize, "_samples", lambda *args: calibrated.append(1) or samples(*args))

    def program(name, float_layers=()):
        folder = tmp_path / name
        folder.mkdir()
        run = QuantizeRun("static-same-width", calibration, float_layers)
        quantize.export_int8_static(ckpt, folder, BuildOptions(), run)
        return (folder / "model.pte").read_bytes()

    alone = program("alone", ("layer.0.qkv",))
    program("same-width")
    assert len(calibrated) == 2  # the whole recipe observes more: it calibrates
    assert program("after-same-width", ("layer.0.qkv",)) == alone
    assert len(calibrated) == 2


def test_lowering_the_short_way_writes_the_same_bytes(tmp_path, monkeypatch):
    """Every delegate piece of the fp32 program and of a static one (static and dynamic Linears, the head's ReLU,
    which fp32 fuses into its Linear) is lowered without the XNNPACK passes for ops our graphs lack and those for
    ops the piece lacks, the edge
    step keeps the partitioner's ops whole in one decomposition and leaves out the edge passes with nothing to
    rewrite, and functionalizes and decomposes each program in one re-trace where ExecuTorch makes two; each
    program is byte for byte the one ExecuTorch makes with every pass and its node-by-node check."""
    from tiny import make_checkpoint

    from distilforge.checkpoint import load_checkpoint
    from distilforge.exporters import executorch as exporter
    from distilforge.options import BuildOptions
    from distilforge.quantize import executorch as quantize
    from distilforge.quantize.calibration import load_calibration
    from distilforge.quantize.ladder import QuantizeRun

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "checkpoint", "seq-single", n_layers=1))
    run = QuantizeRun("static-same-width", load_calibration(None, ckpt.tokenizer, ckpt.head, samples=16), ())

    def programs(name):
        made = []
        for kind in ("fp32", "int8-static"):
            folder = tmp_path / name / kind
            folder.mkdir(parents=True)
            if kind == "fp32":
                exporter.export_fp32(ckpt, folder, BuildOptions())
            else:
                quantize.export_int8_static(ckpt, folder, BuildOptions(), run)
            made.append((folder / "model.pte").read_bytes())
        return made

    before, edge_before = dict(exporter.pieces_lowered), dict(exporter.edge_programs)
    executorch_before = collections.Counter(exporter.executorch_passes)
    passes_before = collections.Counter(exporter.edge_passes)
    fewer = programs("fewer")
    assert exporter.pieces_lowered["every pass"] == before["every pass"]
    assert exporter.pieces_lowered["fewer passes"] > before["fewer passes"]
    left_out = "passes with nothing to rewrite left out"
    assert exporter.pieces_lowered[left_out] > before[left_out]
    assert exporter.executorch_passes["LegalizePortableDimOrderPass", "skipped"] == 2 + executorch_before[
        "LegalizePortableDimOrderPass", "skipped"]
    assert exporter.edge_programs["checked per node"] == edge_before["checked per node"]
    assert exporter.edge_programs["one decomposition"] > edge_before["one decomposition"]
    once = exporter.edge_programs["traced once"] - edge_before["traced once"]
    assert once == 2  # both programs, each with both of ExecuTorch's re-traces left out
    assert exporter.edge_programs["re-traces left out"] - edge_before["re-traces left out"] == 2 * once
    skipped = {name for name, how in exporter.edge_passes - passes_before if how == "skipped"}
    assert skipped == set(exporter.EDGE_PASS_WORK)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    monkeypatch.setattr(exporter, "IDLE_XNNPACK_PASSES", frozenset())
    monkeypatch.setattr(exporter, "PIECE_PASS_OPS", {})
    monkeypatch.setattr(exporter, "dim_order_legalized_when_needed", contextlib.nullcontext)
    monkeypatch.setattr(exporter, "xnnpack_partitioner", XnnpackPartitioner)
    monkeypatch.setattr(exporter, "EDGE_PASS_WORK", {})
    edge_before = dict(exporter.edge_programs)
    assert programs("every") == fewer
    assert exporter.edge_programs["traced once"] == edge_before["traced once"]  # ExecuTorch's own path


def test_the_dim_order_legalization_runs_only_where_an_op_reads_another_dim_order():
    """`to_executorch` legalizes the dim order of a portable `mean.dim` reading a channels-last tensor, and has
    nothing to do for a contiguous one; either way the program is byte for byte ExecuTorch's own."""
    import torch
    from executorch.exir import EdgeCompileConfig, to_edge

    from distilforge.exporters import executorch as exporter

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1)

    def edge(layout):
        x = torch.ones(2, 3, 4, 5).to(memory_format=layout)
        return to_edge(torch.export.export(Mean(), (x,)), compile_config=EdgeCompileConfig(_check_ir_validity=False))

    for layout, how in ((torch.contiguous_format, "skipped"), (torch.channels_last, "run")):
        before = collections.Counter(exporter.executorch_passes)
        with exporter.dim_order_legalized_when_needed():
            ours = edge(layout).to_executorch().buffer
        assert exporter.executorch_passes - before == {("LegalizePortableDimOrderPass", how): 1}, layout
        assert ours == edge(layout).to_executorch().buffer, layout


def test_an_edge_pass_is_left_out_only_where_the_program_has_nothing_for_it():
    """Small programs with what each left-out edge pass rewrites (a Python number or a symbolic size given for a
    tensor, mixed dtypes): the pass runs there, and every program is byte for byte ExecuTorch's own."""
    import torch
    from executorch.exir import EdgeCompileConfig, to_edge

    from distilforge.exporters import executorch as exporter

    class One(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, a, b):
            return self.fn(a, b)

    x, i = torch.ones(4, 3), torch.ones(4, 3, dtype=torch.int64)
    batch = torch.export.Dim("batch", max=8)
    cases = {"nothing": (lambda a, b: torch.nn.functional.gelu(a * b + a), (x, x), None, set()),
             "a number": (lambda a, b: a + 1 + b, (x, x), None, {"ScalarToTensorPass", "RemoveMixedTypeOperators"}),
             "a size": (lambda a, b: a * a.shape[0] + b, (x, x), ({0: batch}, {0: batch}), {"SymToTensorPass"}),
             "mixed dtypes": (lambda a, b: a + b, (x, i), None, {"RemoveMixedTypeOperators"})}
    def program(fn, inputs, dynamic):
        exported = torch.export.export(One(fn), inputs, dynamic_shapes=dynamic)
        return to_edge(exported, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch().buffer

    for case, (fn, inputs, dynamic, needs) in cases.items():
        before = collections.Counter(exporter.edge_passes)
        with exporter.fewer_edge_passes():
            fewer = program(fn, inputs, dynamic)
        ran = {name for name, how in exporter.edge_passes - before if how == "run"}
        assert needs <= ran and (needs or not ran), (case, ran)
        assert fewer == program(fn, inputs, dynamic), case

    def nodes(op):  # the two passes whose ops ExecuTorch turns into copies before they run
        graph = torch.fx.Graph()
        graph.call_function(op, (graph.placeholder("x"),))
        return list(graph.nodes)[1:]

    assert exporter.EDGE_PASS_WORK["NormalizeTransposePass"](nodes(torch.ops.aten.t.default))
    assert exporter.EDGE_PASS_WORK["ReplaceBrokenOpsWithFunctionalOpsPass"](nodes(torch.ops.aten.alias.default))
    assert not exporter.EDGE_PASS_WORK["ReplaceBrokenOpsWithFunctionalOpsPass"](nodes(torch.ops.aten.gelu.default))


def test_a_piece_with_another_op_or_an_attention_source_gets_every_pass():
    import torch
    from executorch.exir.dialects._ops import ops

    from distilforge.exporters.executorch import _only_piece_ops

    def piece(op, source=None):
        graph = torch.fx.Graph()
        x = graph.placeholder("x")
        node = graph.call_function(op, (x, x))
        if source:
            node.meta["source_fn_stack"] = [("attention", source)]
        graph.output(node)
        return torch.fx.GraphModule(torch.nn.Module(), graph)

    class Program:
        def __init__(self, module):
            self.graph_module = module

    assert _only_piece_ops(Program(piece(ops.edge.aten.bmm.default)))
    assert not _only_piece_ops(Program(piece(ops.edge.aten.cat.default)))
    assert not _only_piece_ops(Program(piece(ops.edge.aten.bmm.default,
                                             torch.nn.functional.scaled_dot_product_attention)))
