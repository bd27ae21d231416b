"""The registry: one line per target, naming the function of each stage.

A target is `format:precision`. Adding a format means one exporter module, one runner
module and lines here; nothing else changes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from distilforge.quantize.ladder import Rung
from distilforge.validate.runners import Runner
from distilforge.validate.runners import executorch as executorch_runner
from distilforge.validate.runners import onnx as onnx_runner
from distilforge.validate.runners import openvino as openvino_runner
from distilforge.validate.runners import tflite as tflite_runner
from distilforge.validate.runners import torchscript as torchscript_runner

Exporter = Callable[[LoadedCheckpoint, Path, BuildOptions], ExportedArtifact]
Ladder = Callable[[BuildOptions], tuple[Rung, ...]]
RunnerFactory = Callable[[Path, ExportedArtifact, int], Runner]
OptionCheck = Callable[[CheckpointInfo, BuildOptions], None]


@dataclass(frozen=True)
class Target:
    name: str
    export: Exporter
    open_runner: RunnerFactory
    extra: str  # the pip extra that installs its backend
    modules: tuple[str, ...]  # importable modules the backend needs
    runtime: str  # what runs it, for the README and the report
    check: OptionCheck | None = None  # rejects options this checkpoint cannot be built with, before any work
    calibrated: bool = False  # needs calibration text (static INT8)
    # why two builds from the same inputs cannot give the same bytes; "" = they do (tests/test_determinism.py)
    not_reproducible: str = ""
    # a condition on "the same bytes" that a build system should know about ("" = none)
    reproducible_caveat: str = ""
    # INT8: the recipes to try, fastest first (quantize/ladder.py); None: one recipe, nothing to climb
    ladder: Ladder | None = None

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

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


_ONNX = ("onnx", "onnxruntime", "onnxscript")
_ORT = "ONNX Runtime (CPU)"
_OPENVINO = ("openvino",)
_OV = "OpenVINO (CPU plugin, f32 hint)"
_TFLITE = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
_LITERT = "LiteRT Interpreter (XNNPACK)"
_EXECUTORCH = ("executorch", "torchao")
_ET = "ExecuTorch runtime (XNNPACK delegate)"


def _rungs(rungs: tuple[Rung, ...]) -> Ladder:
    return lambda _options: rungs


_ONNX_PATHS = ("same bytes only from the same install path: torch.onnx writes the file paths of the traced "
               "Python code (torch, transformers in the venv) into node metadata")
_TS_PATHS = ("same bytes only from the same install path: torch.jit.save keeps debug info with the file paths "
             "of the traced Python code")

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx:fp32", onnx_export.export_fp32, onnx_runner.open_runner, "onnx", _ONNX, _ORT,
           reproducible_caveat=_ONNX_PATHS),
    Target("onnx:fp32-optimized", onnx_export.export_optimized, onnx_runner.open_runner, "onnx", _ONNX, _ORT),
    Target("onnx:fp16", onnx_quantize.export_fp16, onnx_runner.open_runner, "onnx", _ONNX, _ORT,
           reproducible_caveat=_ONNX_PATHS),
    Target("onnx:int8-dynamic", onnx_quantize.export_int8_dynamic, onnx_runner.open_runner, "onnx", _ONNX, _ORT,
           ladder=onnx_quantize.dynamic_ladder),
    Target("onnx:int8-static", onnx_quantize.export_int8_static, onnx_runner.open_runner, "onnx", _ONNX, _ORT,
           calibrated=True, ladder=onnx_quantize.static_ladder),
    Target("torchscript:fp32", torchscript_export.export_fp32, torchscript_runner.open_runner, "core", ("torch",),
           "torch.jit.load (libtorch)", reproducible_caveat=_TS_PATHS),
    Target("torchscript:int8-dynamic", torchscript_quantize.export_int8_dynamic, torchscript_runner.open_runner,
           "core", ("torch",), "torch.jit.load (libtorch)", reproducible_caveat=_TS_PATHS,
           ladder=_rungs(torchscript_quantize.RUNGS)),
    Target("openvino:fp32", openvino_export.export_fp32, openvino_runner.open_runner, "openvino", _OPENVINO, _OV),
    Target("openvino:fp16", openvino_export.export_fp16, openvino_runner.open_runner, "openvino", _OPENVINO, _OV),
    Target("openvino:int8-weights", openvino_quantize.export_int8_weights, openvino_runner.open_runner, "openvino",
           _OPENVINO, _OV, ladder=_rungs(openvino_quantize.WEIGHTS_RUNGS)),
    Target("openvino:int8-static", openvino_quantize.export_int8_static, openvino_runner.open_runner, "openvino",
           _OPENVINO, _OV, calibrated=True, ladder=_rungs(openvino_quantize.STATIC_RUNGS)),
    Target("tflite:fp32", tflite_export.export_fp32, tflite_runner.open_runner, "tflite", _TFLITE, _LITERT,
           tflite_export.check_options),
    Target("tflite:fp16", tflite_quantize.export_fp16, tflite_runner.open_runner, "tflite", _TFLITE, _LITERT,
           tflite_export.check_options),
    Target("tflite:int8-dynamic", tflite_quantize.export_int8_dynamic, tflite_runner.open_runner, "tflite", _TFLITE,
           _LITERT, tflite_export.check_options, ladder=_rungs(tflite_quantize.DYNAMIC_RUNGS)),
    Target("tflite:int8-static", tflite_quantize.export_int8_static, tflite_runner.open_runner, "tflite", _TFLITE,
           _LITERT, tflite_export.check_options, calibrated=True, ladder=_rungs(tflite_quantize.STATIC_RUNGS)),
    Target("executorch:fp32", executorch_export.export_fp32, executorch_runner.open_runner, "executorch",
           _EXECUTORCH, _ET, executorch_export.check_options),
    Target("executorch:int8-dynamic", executorch_quantize.export_int8_dynamic, executorch_runner.open_runner,
           "executorch", _EXECUTORCH, _ET, executorch_export.check_options,
           ladder=_rungs(executorch_quantize.DYNAMIC_RUNGS)),
    Target("executorch:int8-static", executorch_quantize.export_int8_static, executorch_runner.open_runner,
           "executorch", _EXECUTORCH, _ET, executorch_export.check_options, calibrated=True,
           ladder=_rungs(executorch_quantize.STATIC_RUNGS)),
)}


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
