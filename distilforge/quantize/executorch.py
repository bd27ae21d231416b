"""ExecuTorch INT8 with PT2E: torchao's `prepare_pt2e`/`convert_pt2e` and ExecuTorch's own `XNNPACKQuantizer`, then
lowered to XNNPACK like the fp32 program (exporters/executorch.py).

- int8-dynamic: every Linear int8 weights per output channel, activations quantized per row at run time
  (XNNPACK's QD8 kernels); the word and position embedding tables weight-only int8 per row
  (`quantize_embeddings`, run as `quantized_decomposed::embedding_byte`). The tables are half of a small
  DistilBERT's bytes, so without them the file shrinks by under 2x.
- int8-static: Linears get int8 activations, calibrated on the same text as the other static targets (per
  tensor, min/max; samples of similar length batched 16 at a time), and int8 weights per channel; embeddings as
  above. Only Linears are annotated: the XNNPACK quantizer's global config would also quantize every add and
  mul, the residual stream and the attention mask among them, so LayerNorm, softmax, GELU, the residual adds and
  the mask path stay float. Static activations go only into the Linears that keep the width (attention
  projections, pre-classifier); the feed-forward Linears (the second's post-GELU input has outlier features)
  and those writing a model output run dynamic. On the default model (AVX2 EPYC): every Linear static, min
  cosine 0.879 (the rule is 0.99); the widening Linears static too, 0.9924 and 98.55 % agreement, inside the
  ladder's margin; the same-width ones alone 0.9957 and 99.3 %.
- Each climbs a ladder (quantize/ladder.py), fastest first: dynamic `all-int8` -> `narrowing-float`; static
  `static-same-width` alone, then the measured rungs (its most costly layer groups float). XNNPACK runs a static
  Linear as quantize, int8 GEMM, dequantize, no faster than its dynamic one; default model, batch 1 x 128, VNNI
  (benchmarks/executorch_recipes.py): `all-int8` 8.99 ms, min cosine 0.99606; `static-same-width` 9.55 ms,
  0.99467; the widening Linears static too 9.94 ms, 0.98914 (fails: it was the first rung, and cost two lowerings,
  80 s of the demo's build, before the kept one); only the query, key and value projections static 9.60 ms,
  0.98987 (fails: not the safer fallback it is for TFLite), so neither is a rung.
- Shared within a build: every recipe of both targets starts from the same model with int8 embedding tables and
  the same torch.export of it (made once: exporters/common.py `shared_conversion`), and a recipe whose observers
  watch edges an earlier recipe already calibrated copies those observers instead of running the calibration
  text again (`_calibrate`). The programs are the same bytes as without the sharing.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import quiet, shared_conversion
from distilforge.exporters.executorch import (
    MODEL_FILE,
    export_program,
    fewer_collections,
    lower,
    max_shape,
    program_facts,
    record,
    wrap,
)
from distilforge.options import BuildOptions
from distilforge.quantize.calibration import CalibrationSet
from distilforge.quantize.ladder import QuantizeRun, Rung, int8_cpu, pick
from distilforge.quantize.sensitivity import Scheme, group_of

DYNAMIC_RUNGS = (
    Rung("all-int8", "every Linear int8 weights, activations quantized at run time; embeddings int8 weight-only"),
    Rung("narrowing-float", "the Linears that narrow the width (feed-forward output, classifier) float"),
)
STATIC_RUNGS = (
    Rung("static-same-width", "calibrated int8 activations only into the Linears that keep the width (attention "
                              "projections, pre-classifier); the feed-forward ones and the head's output dynamic"),
)
HEAD_OUTPUTS = ("classifier", "qa_outputs", "vocab_projector")  # the Linears that write a model output
CPU_WHY = ("XNNPACK's int8 kernels widen products to 16 or 32 bits before adding them on every x86 class "
           "(docs/cpu-classes.md), so no recipe choice depends on the build machine")
KEPT_FLOAT = ("LayerNorm", "softmax and the attention matmuls", "GELU", "residual adds", "the attention mask path")


def dynamic_scheme(options: BuildOptions) -> Scheme:
    """XNNPACK's QD8 Linear: 8-bit weights per channel, activations quantized per row at run time."""
    return Scheme(activations="token")


def static_scheme(options: BuildOptions) -> Scheme:
    """The first static recipe (`static-same-width`): calibrated activations into the Linears that keep the width,
    the feed-forward ones and the head per row at run time (the head's pre-classifier is static in the recipe but
    measured per row here: a Scheme says it per role)."""
    return Scheme(activations="static", dynamic_roles=("ffn_in", "ffn_out", "head"))


def export_int8_dynamic(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                        run: QuantizeRun) -> ExportedArtifact:
    rung = pick(DYNAMIC_RUNGS, run.rung)
    details = {"weights": "int8 per output channel (Linears); embedding tables int8 per row, weight-only",
               "activations": "float, quantized per row at run time (XNNPACK QD8)",
               "kept_float": list(KEPT_FLOAT) + (["the narrowing Linears"] if rung.name == "narrowing-float" else [])}
    return _quantized(ckpt, folder, options, "executorch:int8-dynamic", rung, details, calibration=None,
                      float_groups=run.float_layers)


def export_int8_static(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions,
                       run: QuantizeRun) -> ExportedArtifact:
    rung = pick(STATIC_RUNGS, run.rung)
    details = {"weights": "int8 per output channel (Linears); embedding tables int8 per row, weight-only",
               "activations": "int8 per tensor, calibrated (min/max), into and out of the Linears that keep the "
                              "width; the others quantized at run time",
               "kept_float": list(KEPT_FLOAT)}
    return _quantized(ckpt, folder, options, "executorch:int8-static", rung, details,
                      calibration=run.calibration, float_groups=run.float_layers)


def _quantized(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions, target: str, rung: Rung,
               details: dict[str, Any], calibration: CalibrationSet | None,
               float_groups: tuple[str, ...] = ()) -> ExportedArtifact:
    import torch

    shape = max_shape(ckpt.info, options)
    static = target.endswith("static")
    if static and calibration is None:
        raise ExportError(f"{target}: needs calibration data and none was given")
    with quiet() as captured, torch.no_grad(), fewer_collections():
        _import_quantization()
        module, tables = shared_conversion(ckpt, ("executorch:int8-embeddings",), lambda: _with_int8_embeddings(ckpt))
        quantizer = _quantizer(module, rung, static, float_groups)
        # the same torch.export for every recipe (1.2-3 s): made once; prepare_pt2e changes the GraphModule that
        # .module() makes, not the program (checked: its tensors are unchanged after each recipe)
        program = shared_conversion(ckpt, ("executorch:int8-exported", shape),
                                    lambda: export_program(module, ckpt, shape, target))
        graph = program.module()
        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            prepared = prepare_pt2e(graph, quantizer)
            _calibrate(prepared, ckpt, calibration, shape)
            converted = convert_pt2e(prepared)
        except Exception as e:
            raise ExportError(f"{target}: PT2E quantization failed: {type(e).__name__}: {first_line(e)}") from e
        manager = lower(export_program(converted, ckpt, shape, target), target)
        (folder / MODEL_FILE).write_bytes(bytes(manager.buffer))
    details.update(embedding_tables_int8=tables, rung=rung.name, rung_summary=rung.summary,
                   float_layers=list(float_groups),
                   quantizer=_quantizer_record(static), int8_cpu=int8_cpu(options.int8_cpu).record(CPU_WHY))
    if calibration is not None:
        details["calibration"] = calibration.record()
    return record(ckpt, folder, target, shape, program_facts(manager), details, captured.warnings)


def _import_quantization() -> None:
    """Import what the shared steps use before they run: `shared_conversion` records every warning its step raises
    and raises it again for each caller, where `quiet` leaves out those raised while a module is imported (only a
    process's first importer sees them)."""
    import executorch.kernels.quantized  # noqa: F401
    import torchao.quantization  # noqa: F401
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401


def _with_int8_embeddings(ckpt: LoadedCheckpoint) -> tuple[Any, int]:
    """The wrapped model with int8 embedding tables, and how many tables were replaced."""
    module = wrap(ckpt)  # a copy: quantize_embeddings replaces modules, the checkpoint's model stays as is
    return module, quantize_embeddings(module)


# What calibration taught the observers so far: the (checkpoint, calibration set, bounds) it ran on, each observed
# edge's observer, and the warnings it raised. Holds the checkpoint and the set themselves (not their id(), which a
# later object may reuse); another source starts it afresh.
_observed: dict[str, Any] = {"source": None, "observers": {}, "warnings": []}


def _calibrate(prepared: Any, ckpt: LoadedCheckpoint, calibration: CalibrationSet | None,
               bounds: tuple[int, ...]) -> None:
    """Run the calibration batches through the observed graph, unless an earlier recipe of this build already
    observed every edge this one observes: then copy its observers.

    An observer passes its input through unchanged, so what it records depends only on the model, the batches and
    its own settings, not on which other Linears the recipe quantizes; a measured rung observes a subset of what
    `static-same-width` does. Calibration is 16-26 s (CPU) of a static recipe of the default
    model: the observed graph runs op by op, with a HistogramObserver on every activation it quantizes."""
    known = _observers_of(ckpt, calibration, bounds)
    edges = _observer_edges(prepared)
    if edges and all(edge in known["observers"] for edge in edges.values()):
        for name, edge in edges.items():
            setattr(prepared, name, copy.deepcopy(known["observers"][edge]))
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for sample in _samples(ckpt, calibration, bounds):
                prepared(*sample)
        known["observers"].update({edge: copy.deepcopy(prepared.get_submodule(name)) for name, edge in edges.items()})
        known["warnings"] = [(w.category, str(w.message)) for w in caught]
    for category, message in known["warnings"]:  # recorded alike whether this recipe calibrated or not
        warnings.warn(message, category, stacklevel=2)


def _observers_of(ckpt: LoadedCheckpoint, calibration: CalibrationSet | None, bounds: tuple[int, ...]) -> dict:
    source = _observed["source"]
    if source is None or source[0] is not ckpt or source[1] is not calibration or source[2] != bounds:
        _observed.update(source=(ckpt, calibration, bounds), observers={}, warnings=[])
    return _observed


def _observer_edges(prepared: Any) -> dict[str, tuple[Any, ...]]:
    """Each observer's module name -> what it observes: the node whose output it sees (looking through observers
    in front of it) and its class and settings, as prepare_pt2e made it (before it saw anything). Left out: the
    PlaceholderObservers of dynamic quantization, which record nothing (ranges are measured at run time)."""
    from torchao.quantization.pt2e.observer import ObserverBase, PlaceholderObserver

    def observer(node: Any) -> Any:
        module = prepared.get_submodule(node.target) if node.op == "call_module" else None
        return module if isinstance(module, ObserverBase) else None

    edges = {}
    for node in prepared.graph.nodes:
        module = observer(node)
        if module is None or isinstance(module, PlaceholderObserver):
            continue
        source = node.args[0]
        while observer(source) is not None:
            source = source.args[0]
        settings = tuple(sorted((k, repr(v)) for k, v in vars(module).items() if not k.startswith("_")))
        buffers = tuple((k, repr(v)) for k, v in module.state_dict().items())  # eps, and statistics not yet seen
        edges[node.target] = (source.name, type(module).__qualname__, settings, buffers)
    return edges


def _quantizer(module: Any, rung: Rung, static: bool, float_groups: tuple[str, ...] = ()) -> Any:
    """XNNPACKQuantizers for the Linears the rung quantizes: one per config, each picking its Linears with a filter.

    (One `set_module_name` per Linear would be simpler to read, but the quantizer traces its patterns again for
    every name: 4 minutes for the default model's 38 Linears, against a second.)"""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    plan = linear_plan(module, rung, float_groups)
    quantizers = []
    for kind, config in (("static", get_symmetric_quantization_config(is_per_channel=True)),
                         ("dynamic", get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))):
        names = [name for name, how in plan.items() if how == kind]
        if names:
            quantizers.append(XNNPACKQuantizer().set_operator_type(torch.ops.aten.linear.default, config)
                              .set_filter_function(_from_modules(names)))
    return ComposableQuantizer(quantizers)


def linear_plan(module: Any, rung: Rung, float_groups: tuple[str, ...] = ()) -> dict[str, str]:
    """Each Linear's name -> "static", "dynamic" or "float", as the rung says; the layer groups in `float_groups`
    (quantize/sensitivity.py) float."""
    import torch

    plan = {}
    for name, m in module.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        width = "narrowing" if m.out_features < m.in_features else \
            "widening" if m.out_features > m.in_features else "same"
        writes_output = name.rsplit(".", 1)[-1] in HEAD_OUTPUTS
        plan[name] = "float" if group_of(name) in float_groups else _how(rung.recipe, name, width, writes_output)
    return plan


def _how(recipe: str, name: str, width: str, writes_output: bool) -> str:
    if recipe == "all-int8":
        return "dynamic"
    if recipe == "narrowing-float":
        return "float" if width == "narrowing" else "dynamic"
    return "static" if width == "same" and not writes_output else "dynamic"  # static-same-width


def _from_modules(names: list[str]) -> Any:
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    filters = [get_module_name_filter(name) for name in names]
    return lambda node: any(f(node) for f in filters)


def quantize_embeddings(module: Any) -> int:
    """Every nn.Embedding as int8 weights with one scale per row (symmetric, torchao's `IntxWeightOnlyConfig`),
    looked up by `quantized_decomposed::embedding_byte`, the op ExecuTorch's runtime has a kernel for; as
    ExecuTorch's own `QuantizedGroupEmbedding` does, but in fp32. torchao's PT2E `EmbeddingQuantizer` is not used:
    its per-row float zero points gave some rows a scale of 1 (garbage rows) and NaN outputs for [PAD] tokens in
    the runtime (executorch 1.5.1, torchao 0.18). Returns how many tables were replaced."""
    import executorch.kernels.quantized  # noqa: F401  registers embedding_byte for export
    import torch
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis

    class Int8Embedding(torch.nn.Module):
        def __init__(self, weight: torch.Tensor, scales: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("weight", weight)
            self.register_buffer("scales", scales)

        def forward(self, indices: torch.Tensor) -> torch.Tensor:
            return torch.ops.quantized_decomposed.embedding_byte.dtype(
                self.weight, self.scales, None, -128, 127, indices, dtype=torch.float32)

    replaced = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, torch.nn.Embedding):
            continue
        table = torch.nn.Embedding(*child.weight.shape)
        table.weight = torch.nn.Parameter(child.weight.detach().clone(), requires_grad=False)
        quantize_(table, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
                  lambda m, fqn: isinstance(m, torch.nn.Embedding))
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, Int8Embedding(table.weight.qdata.to(torch.int8),
                                            table.weight.scale.reshape(-1).to(torch.float32)))
        replaced += 1
    return replaced


CALIBRATION_BATCH = 16


def _samples(ckpt: LoadedCheckpoint, calibration: CalibrationSet | None,
             bounds: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """Calibration batches: the samples cut to what the program takes, sorted by length and padded to the longest
    of each batch of 16 (at most the bound's batch). The observed graph runs op by op in Python: one sample at a
    time took a minute for the default model. Without calibration, one example batch: PT2E wants a forward pass
    before convert, though dynamic ranges are measured at run time."""
    import numpy as np
    import torch

    from distilforge.exporters.executorch import example_tensors
    from distilforge.quantize.calibration import fit_to_shape

    if calibration is None:
        return [example_tensors(ckpt, bounds)]
    longest, rows = bounds[-1], min(CALIBRATION_BATCH, bounds[0])
    samples = sorted(calibration.cut(longest), key=lambda s: s["input_ids"].shape[-1])
    batches = []
    for start in range(0, len(samples), rows):
        group = samples[start:start + rows]
        length = group[-1]["input_ids"].shape[-1]
        padded = [fit_to_shape(s, (*s["input_ids"].shape[:-1], length)) for s in group]
        batches.append(tuple(torch.from_numpy(np.concatenate([p[k] for p in padded]).astype("int64"))
                             for k in ("input_ids", "attention_mask")))
    return batches


def _quantizer_record(static: bool) -> str:
    from importlib.metadata import version

    kind = "static" if static else "dynamic"
    return (f"torchao {version('torchao')}: IntxWeightOnlyConfig(int8, PerAxis(0)) for the embedding tables "
            f"(embedding_byte); PT2E XNNPACKQuantizer per Linear (symmetric per-channel, {kind})")
