"""The registry: one line per target, naming the function of each stage.

A target is `format:precision`. Adding a format means one exporter module, one runner
module and lines here (its FormatSpec also holds its report colour, how it runs on the emulated
ARM64 CPU and its Triton backend); nothing else changes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.folder import Loader
from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import CheckpointInfo, LoadedCheckpoint
from distilforge.errors import MissingBackendError, UnsupportedTargetError
from distilforge.exporters import executorch as executorch_export
from distilforge.exporters import onnx as onnx_export
from distilforge.exporters import openvino as openvino_export
from distilforge.exporters import tflite as tflite_export
from distilforge.exporters import torchscript as torchscript_export
from distilforge.options import BuildOptions
from distilforge.quantize import executorch as executorch_quantize
from distilforge.quantize import onnx as onnx_quantize
from distilforge.quantize import openvino as openvino_quantize
from distilforge.quantize import tflite as tflite_quantize
from distilforge.quantize import torchscript as torchscript_quantize
from distilforge.quantize.ladder import QuantizeRun, Rung
from distilforge.quantize.sensitivity import Scheme
from distilforge.validate.arm64.support import Arm64
from distilforge.validate.runners import Runner
from distilforge.validate.runners import executorch as executorch_runner
from distilforge.validate.runners import onnx as onnx_runner
from distilforge.validate.runners import openvino as openvino_runner
from distilforge.validate.runners import tflite as tflite_runner
from distilforge.validate.runners import torchscript as torchscript_runner

Exporter = Callable[[LoadedCheckpoint, Path, BuildOptions], ExportedArtifact]
QuantizeExporter = Callable[[LoadedCheckpoint, Path, BuildOptions, QuantizeRun], ExportedArtifact]  # a laddered one
Ladder = Callable[[BuildOptions], tuple[Rung, ...]]
SchemeFor = Callable[[BuildOptions], Scheme | None]  # None: the user fixed the recipe, nothing to measure
RunnerFactory = Callable[[Path, ExportedArtifact, int], Runner]
OptionCheck = Callable[[CheckpointInfo, BuildOptions], None]


@dataclass(frozen=True)
class Backend:
    """How Triton runs one format: the line that names its backend, the file names that backend loads
    (package/triton.py)."""

    selector: str  # 'platform: "..."' or 'backend: "..."'
    model_suffix: str  # picks the model file among the artifact's files (when they carry no role)
    model_file: str  # its name in REPO/<name>/1/: the backend's default
    weights_suffixes: tuple[str, ...]  # picks the weights that go beside it
    weights_file: str | None  # renamed to this (OpenVINO); None keeps the name the model refers to (ONNX)
    batches: bool  # Triton batches requests for it (max_batch_size > 0)
    threads: tuple[str, ...]  # parameters set to the thread count the build validated with
    fixed: tuple[tuple[str, str], ...] = ()  # other parameters
    note: str = ""  # a comment in config.pbtxt


@dataclass(frozen=True)
class FormatSpec:
    """What every target of a format shares: what runs its artifacts, what installs it, which build options its
    exporters read. The pipeline, the CLI and predict ask this record instead of branching on a format's name."""

    name: str
    open_runner: RunnerFactory
    extra: str  # the pip extra that installs its backend
    modules: tuple[str, ...]  # importable modules the backend needs
    runtime: str  # what runs it, for the README and the report
    check: OptionCheck | None = None  # rejects options this checkpoint cannot be built with, before any work
    # the BuildOptions fields its exporters read: each goes into its targets' cache keys and the manifest's settings
    reads: tuple[str, ...] = ()
    # the BuildOptions field that bounds a fixed-shape artifact's input (predict names its flag on a long text)
    shape_option: str = ""
    runs_on_torch: bool = False  # its runner imports torch (predict lets transformers skip it otherwise)
    loader: Loader | None = None  # how its folder loads in the runtime its users run (each card's `loads_with`)
    color: str = "#7f7f7f"  # its points, bars and marks in report.html
    arm64: Arm64 = Arm64()  # its runtime on the emulated ARM64 CPU, or why there is none
    triton: Backend | None = None  # the Triton backend that serves it (package/triton.py)
    triton_why_not: str = ""  # with no backend: why
    # its INT8 ladders predict a measured rung in eager before exporting it (pipeline/ladder.py): worth it where a
    # recipe's conversion and validation take 10 s to minutes (ExecuTorch, OpenVINO); ONNX's, TorchScript's and
    # TFLite's (its conversion and calibration shared by the rungs) take 1-4 s, less than the prediction, so their
    # rungs are exported and judged as they come
    predicts_rungs: bool = False

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def settings(self, options: BuildOptions) -> dict[str, Any]:
        """The options it reads, as the manifest records them (a tuple as a list, an empty one as "default")."""
        return {name: _recorded(getattr(options, name)) for name in self.reads}


def _recorded(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_recorded(v) for v in value] or "default"
    return value


@dataclass(frozen=True)
class Target:
    name: str
    spec: FormatSpec
    export: Exporter | QuantizeExporter  # one with a ladder or calibration takes the QuantizeRun of each attempt
    calibrated: bool = False  # needs calibration text (static INT8)
    # why two builds from the same inputs cannot give the same bytes; "" = they do (tests/test_determinism.py)
    not_reproducible: str = ""
    # a condition on "the same bytes" that a build system should know about ("" = none)
    reproducible_caveat: str = ""
    # INT8: the recipes to try, fastest first (quantize/ladder.py); None: one recipe, nothing to climb
    ladder: Ladder | None = None
    # INT8: how its format quantizes a Linear, for the layer sensitivity table and the ladder's measured rungs
    scheme: SchemeFor | None = None
    # (what a target costs to build, per CPU class, for the schedule and the ETA: data/target_costs.json)

    @property
    def format(self) -> str:
        return self.name.split(":")[0]

    @property
    def precision(self) -> str:
        return self.name.split(":")[1]

    @property
    def folder(self) -> str:
        """The artifact's folder inside the output directory."""
        return self.name.replace(":", "-")

    @property
    def open_runner(self) -> RunnerFactory:
        return self.spec.open_runner

    @property
    def extra(self) -> str:
        return self.spec.extra

    @property
    def runtime(self) -> str:
        return self.spec.runtime

    @property
    def check(self) -> OptionCheck | None:
        return self.spec.check

    def installed(self) -> bool:
        return self.spec.installed()


def _rungs(rungs: tuple[Rung, ...]) -> Ladder:
    return lambda _options: rungs


# Triton backends. Sources: onnxruntime_backend, openvino_backend and pytorch_backend READMEs and sources; Triton's
# model_repository.md and model_configuration.md ("Special Conventions for PyTorch Backend"). See docs/triton.md.
_NO_TRITON = "none of Triton's own backends runs it"

ONNX = FormatSpec("onnx", onnx_runner.open_runner, extra="onnx", modules=("onnx", "onnxruntime", "onnxscript"),
                  runtime="ONNX Runtime (CPU)", reads=("onnx_opset",),
                  loader=Loader("optimum.onnxruntime.ORTModelFor{head}.from_pretrained(folder)"),
                  color="#1f77b4", arm64=Arm64(("onnxruntime",), "onnxruntime"),
                  # loaded by path, so ONNX Runtime finds the external data beside model.onnx under the name the
                  # model records
                  triton=Backend('platform: "onnxruntime_onnx"', ".onnx", "model.onnx", (".onnx_data", ".data"),
                                 None, True, ("intra_op_thread_count",)))
TORCHSCRIPT = FormatSpec("torchscript", torchscript_runner.open_runner, extra="core", modules=("torch",),
                         runtime="torch.jit.load (libtorch)", runs_on_torch=True,
                         loader=Loader("torch.jit.load(folder + '/model.pt')"),
                         color="#2ca02c",
                         # not run on the emulated ARM64 CPU (measured 2026-12-06; DESIGN.md "CPU classes")
                         arm64=Arm64(why_not="torch.jit.load needs torch, and PyPI's aarch64 torch is a CUDA build "
                                             "whose dependencies do not install here"),
                         # inputs named as forward()'s arguments; outputs, named without "__", are taken in config
                         # order: the tuple's
                         triton=Backend('platform: "pytorch_libtorch"', ".pt", "model.pt", (), None, True,
                                        ("INTRA_OP_THREAD_COUNT",)))
# optimum-intel compiles with no precision hint, and OpenVINO then runs an "fp32" model in bf16 on a CPU with
# AVX-512 BF16 or AMX (outputs 1.9e-4 off ours on a tiny model, on a Zen 4): the hint the artifact was validated
# with must be asked for (an IR's rt_info `runtime_options` cannot carry it: OpenVINO 2026.4 ignores it).
# optimum-intel has no multiple-choice class.
OPENVINO = FormatSpec("openvino", openvino_runner.open_runner, extra="openvino", modules=("openvino",),
                      runtime="OpenVINO (CPU plugin, f32 hint)",
                      loader=Loader("optimum.intel.OVModelFor{head}.from_pretrained(folder, ov_config="
                                    "{{'INFERENCE_PRECISION_HINT': '{hint}'}})",
                                    heads_without_class=("MultipleChoice",)),
                      color="#9467bd", arm64=Arm64(("openvino",), "openvino"),
                      # read_model(model.xml) looks for model.bin beside it. A batching config makes the backend fix
                      # the batch at max_batch_size and refuse smaller ones unless padded to it; the model's own
                      # dynamic batch axis serves any.
                      triton=Backend('backend: "openvino"', ".xml", "model.xml", (".bin",), "model.bin", False,
                                     ("INFERENCE_NUM_THREADS",),
                                     (("NUM_STREAMS", "1"), ("PERFORMANCE_HINT", "LATENCY")),
                                     "max_batch_size 0: the model's dynamic batch axis takes any batch "
                                     "(see docs/triton.md)"),
                      predicts_rungs=True)
TFLITE = FormatSpec("tflite", tflite_runner.open_runner, extra="tflite",
                    modules=("litert_torch", "ai_edge_litert", "ai_edge_quantizer"),
                    runtime="LiteRT Interpreter (XNNPACK)", check=tflite_export.check_options,
                    reads=("tflite_shapes",), shape_option="tflite_shapes",
                    loader=Loader("ai_edge_litert.interpreter.Interpreter(model_path=folder + '/model.tflite')"),
                    color="#e8710a", arm64=Arm64(("ai-edge-litert",), "ai_edge_litert.interpreter"),
                    triton_why_not=_NO_TRITON)
# the quantized kernels register themselves on import; without it an INT8 program fails to load
# ("Missing operator quantized_decomposed::embedding_byte")
EXECUTORCH = FormatSpec("executorch", executorch_runner.open_runner, extra="executorch",
                        modules=("executorch", "torchao"), runtime="ExecuTorch runtime (XNNPACK delegate)",
                        check=executorch_export.check_options, reads=("executorch_max_shape",),
                        shape_option="executorch_max_shape",
                        loader=Loader("import executorch.kernels.quantized, executorch.runtime; "
                                      "executorch.runtime.Runtime.get().load_program(folder + '/model.pte')"
                                      ".load_method('forward')"),
                        color="#17becf",
                        # not run on the emulated ARM64 CPU (measured 2026-12-06; DESIGN.md "CPU classes")
                        arm64=Arm64(why_not="ExecuTorch's Python runtime needs torch, and PyPI's aarch64 torch is a "
                                            "CUDA build whose dependencies do not install here; the torch-free "
                                            "executorch-numpy-runtime needs Python 3.12+"),
                        triton_why_not=_NO_TRITON, predicts_rungs=True)
FORMATS: dict[str, FormatSpec] = {f.name: f for f in (ONNX, TORCHSCRIPT, OPENVINO, TFLITE, EXECUTORCH)}

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx:fp32", ONNX, export=onnx_export.export_fp32),
    Target("onnx:fp32-optimized", ONNX, export=onnx_export.export_optimized),
    Target("onnx:fp16", ONNX, export=onnx_quantize.export_fp16),
    Target("onnx:int8-dynamic", ONNX, export=onnx_quantize.export_int8_dynamic, ladder=onnx_quantize.dynamic_ladder,
           scheme=onnx_quantize.dynamic_scheme),
    Target("onnx:int8-static", ONNX, export=onnx_quantize.export_int8_static, calibrated=True,
           ladder=onnx_quantize.static_ladder, scheme=onnx_quantize.static_scheme),
    Target("torchscript:fp32", TORCHSCRIPT, export=torchscript_export.export_fp32),
    Target("torchscript:int8-dynamic", TORCHSCRIPT, export=torchscript_quantize.export_int8_dynamic,
           ladder=_rungs(torchscript_quantize.RUNGS), scheme=torchscript_quantize.scheme),
    Target("openvino:fp32", OPENVINO, export=openvino_export.export_fp32),
    Target("openvino:fp16", OPENVINO, export=openvino_export.export_fp16),
    Target("openvino:int8-weights", OPENVINO, export=openvino_quantize.export_int8_weights,
           ladder=_rungs(openvino_quantize.WEIGHTS_RUNGS), scheme=openvino_quantize.weights_scheme),
    Target("openvino:int8-static", OPENVINO, export=openvino_quantize.export_int8_static, calibrated=True,
           ladder=_rungs(openvino_quantize.STATIC_RUNGS), scheme=openvino_quantize.static_scheme),
    Target("tflite:fp32", TFLITE, export=tflite_export.export_fp32),
    Target("tflite:fp16", TFLITE, export=tflite_quantize.export_fp16),
    Target("tflite:int8-dynamic", TFLITE, export=tflite_quantize.export_int8_dynamic,
           ladder=_rungs(tflite_quantize.DYNAMIC_RUNGS), scheme=tflite_quantize.dynamic_scheme),
    Target("tflite:int8-static", TFLITE, export=tflite_quantize.export_int8_static, calibrated=True,
           ladder=_rungs(tflite_quantize.STATIC_RUNGS), scheme=tflite_quantize.static_scheme),
    Target("executorch:fp32", EXECUTORCH, export=executorch_export.export_fp32),
    Target("executorch:int8-dynamic", EXECUTORCH, export=executorch_quantize.export_int8_dynamic,
           ladder=_rungs(executorch_quantize.DYNAMIC_RUNGS), scheme=executorch_quantize.dynamic_scheme),
    Target("executorch:int8-static", EXECUTORCH, export=executorch_quantize.export_int8_static, calibrated=True,
           ladder=_rungs(executorch_quantize.STATIC_RUNGS), scheme=executorch_quantize.static_scheme),
)}


def arm64_formats() -> dict[str, Arm64]:
    """The formats whose artifacts run on the emulated ARM64 CPU, in the registry's order, with what they need."""
    return {name: spec.arm64 for name, spec in FORMATS.items() if spec.arm64.runnable}


def format_settings(options: BuildOptions) -> dict[str, Any]:
    """Every format's options as the manifest's settings record them, in the registry's order."""
    return {name: value for spec in FORMATS.values() for name, value in spec.settings(options).items()}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise UnsupportedTargetError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
    return TARGETS[name]


def resolve_targets(names: list[str] | None) -> list[Target]:
    """The asked targets (all must be installed), or every installed one when none are asked."""
    if not names:
        return [t for t in TARGETS.values() if t.installed()]
    targets = [get_target(n.strip()) for n in dict.fromkeys(names) if n.strip()]
    for t in targets:
        if not t.installed():
            raise MissingBackendError(f"target {t.name} needs the '{t.extra}' extra: "
                                      f"pip install 'distilforge[{t.extra}]'")
    return targets
