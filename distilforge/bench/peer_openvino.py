"""The OpenVINO peer: optimum-intel's export and quantization on the same checkpoint, as bench rows.

`build_openvino_peer` runs, on the checkpoint the manifest was built from (refused if any of its files changed):

    optimum-cli export openvino --model CHECKPOINT --task TASK DIR/peer-openvino/optimum-intel-fp32
    optimum-cli export openvino --model CHECKPOINT --task TASK --weight-format int8 .../optimum-intel-int8-weights
    OVQuantizer(OVModelFor<head>.from_pretrained(.../optimum-intel-fp32)).quantize(calibration_dataset=
        nncf.Dataset(<samples>), ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=N)),
        save_directory=.../optimum-intel-int8-static)

The last is optimum-intel's Python API, run in a child process (openvino_static.py): its CLI's static mode
(`--quant-mode int8 --dataset NAME`) downloads a Hugging Face dataset, and collects calibration data only for
feature-extraction and fill-mask models. The samples are the calibration texts our static targets use (the
manifest's `settings.calibration`, else the shipped text), tokenized and written to calibration.npz beside the
models. Static INT8 runs where optimum-intel has a model class for the head and the checkpoint a tokenizer; the
note says when it did not. The models are validated by our validator with the manifest's tolerances and timed
through our OpenVINO runner (f32 hint, as our openvino targets), like Optimum's (peer.py, whose machinery this
reuses); bench.json has them under `peer_openvino`.
"""

from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilforge.artifacts.layout import exclusive
from distilforge.artifacts.records import ExportedArtifact, TensorSpec
from distilforge.bench.openvino_static import MODEL_CLASSES
from distilforge.bench.peer import (
    PeerBuild,
    PeerError,
    PeerHeadStart,
    PeerModel,
    PeerRun,
    PeerTool,
    Progress,
    export_peer,
    optimum_cli,
    peer_files,
    peer_options,
    peer_source,
    run_command,
    validate_peer,
)
from distilforge.errors import DistilforgeError

if TYPE_CHECKING:
    from distilforge.pipeline.source import Source
    from distilforge.quantize.calibration import CalibrationSet

FP32, INT8_WEIGHTS, INT8_STATIC = "optimum-intel:fp32", "optimum-intel:int8-weights", "optimum-intel:int8-static"
MODULES = ("optimum.intel", "optimum.exporters.openvino", "openvino", "nncf")
OPTIMUM_INTEL = PeerTool("optimum-intel", ("optimum-intel", "optimum", "openvino", "nncf", "transformers", "torch"),
                         "peer-openvino", "openvino", "distilforge.validate.runners.openvino",
                         "OpenVINO (CPU plugin, f32 hint), through distilforge's OpenVINO runner", MODULES,
                         "optimum-intel", "optimum-intel rows skipped")
NOT_INSTALLED = ("optimum-intel rows skipped: optimum-intel is not installed (pip install 'distilforge[peer]')")
STEPS = ("optimum-cli export openvino", "optimum-cli export openvino --weight-format int8",
         "optimum-intel OVQuantizer static INT8")
CALIBRATION_FILE = "calibration.npz"
# our openvino target of each peer row's precision: each is compared with the row of the same precision
OURS_VS_PEER: tuple[tuple[str, str, str | None, str], ...] = (
    ("openvino", "fp32", "fp32", FP32), ("openvino", "int8", "int8-weights", INT8_WEIGHTS),
    ("openvino", "int8", "int8-static", INT8_STATIC))


def openvino_peer_installed() -> bool:
    """optimum-intel (with OpenVINO and NNCF) imports here and optimum-cli is on hand."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in MODULES) and optimum_cli() is not None
    except (ImportError, ValueError):
        return False


def build_openvino_peer(out: Path, manifest: dict[str, Any], *, threads: int, say: Progress,
                        head_start: PeerHeadStart | None = None, shared: dict[str, Any] | None = None) -> PeerBuild:
    """Export and quantize the manifest's checkpoint with optimum-intel into DIR/peer-openvino, then validate the
    models with our validator. Never raises for a missing package or a failed step: the note says why. `shared`:
    the checkpoint and eager reference the Optimum peer step loaded (peer.build_peer)."""
    if not openvino_peer_installed():
        return PeerBuild.skipped(NOT_INSTALLED, OPTIMUM_INTEL)
    source = peer_source(manifest, OPTIMUM_INTEL, shared)
    if isinstance(source, PeerBuild):
        return source
    path, task = source.ckpt.info.path, source.ckpt.head.task
    calibration = static_calibration(source, (manifest.get("settings") or {}).get("calibration"))
    peer = PeerBuild(tool=OPTIMUM_INTEL, checkpoint=str(path), task=task,
                     extra={"calibration": calibration.record() if calibration else None})
    key = openvino_key(path, task, calibration)
    try:
        with exclusive(out):
            peer.models = export_peer(out, OPTIMUM_INTEL, key, openvino_run(source, calibration), say, head_start)
            peer.beside_build = head_start is not None and head_start.matches(key)
    except PeerError as e:
        return PeerBuild(note=f"{OPTIMUM_INTEL.skipped}: {e}", tool=OPTIMUM_INTEL, checkpoint=str(path), task=task)
    if calibration is None:
        peer.note = f"{INT8_STATIC} skipped: {why_no_static(source)}"
    validate_peer(out, peer.models, source, peer_options(manifest, threads), say, shared)
    return peer


def why_no_static(source: Source) -> str | None:
    """Why optimum-intel's static INT8 cannot run on this checkpoint (None: it can)."""
    if source.ckpt.head.task not in MODEL_CLASSES:
        return f"optimum-intel has no model class for {source.ckpt.head.task} to calibrate"
    if source.ckpt.tokenizer is None:
        return "calibration text needs a tokenizer, and the checkpoint has none"
    return None


def static_calibration(source: Source, recorded: dict[str, Any] | None) -> CalibrationSet | None:
    """The calibration samples our static targets use: the build's (`source.calibration`, or what the manifest
    records), else the shipped text; None where static INT8 cannot run (`why_no_static`)."""
    from distilforge.quantize.calibration import DEFAULT_SAMPLES, load_calibration

    if why_no_static(source):
        return None
    if source.calibration is not None:
        return source.calibration
    shipped = not recorded or str(recorded.get("source", "")).endswith("(shipped)")
    calibration = load_calibration(None if shipped else recorded["source"], source.ckpt.tokenizer, source.ckpt.head,
                                   samples=int(recorded["samples"]) if recorded else DEFAULT_SAMPLES)
    if recorded and calibration.sha256 != recorded.get("sha256"):
        raise PeerError(f"{recorded['source']}: the calibration text changed since the build")
    return calibration


def openvino_key(checkpoint: Path, task: str, calibration: CalibrationSet | None) -> tuple[Any, ...]:
    """What optimum-intel's commands depend on: a head start made for another key is not adopted."""
    return OPTIMUM_INTEL.name, Path(checkpoint).resolve(), task, calibration.sha256 if calibration else None


def openvino_run(source: Source, calibration: CalibrationSet | None) -> PeerRun:
    samples = calibration.cut(source.ckpt.info.max_length) if calibration else None
    checkpoint, task = source.ckpt.info.path, source.ckpt.head.task
    return lambda folder, say, started: run_openvino_commands(folder, checkpoint, task, samples, say, started,
                                                              calibration.source if calibration else "")


def start_openvino_head_start(source: Source, after: PeerHeadStart | None = None) -> PeerHeadStart | None:
    """optimum-intel's commands for `build --bench`, started once the build has loaded its checkpoint (after
    Optimum's, `after`); None where optimum-intel is not installed."""
    if not openvino_peer_installed():
        return None
    try:
        calibration = static_calibration(source, None)
    except DistilforgeError:
        return None  # the bench's own peer step says why
    path, task = source.ckpt.info.path, source.ckpt.head.task
    return PeerHeadStart(openvino_key(path, task, calibration), openvino_run(source, calibration), after=after)


def openvino_commands(cli: str, checkpoint: Path, task: str, folder: Path) -> list[list[str]]:
    """fp32 export, INT8 weight-only export, and the child process that runs the static INT8 Python call."""
    fp32, weights, static = (folder / model_folder(t) for t in (FP32, INT8_WEIGHTS, INT8_STATIC))
    export = [cli, "export", "openvino", "--model", str(checkpoint), "--task", task]
    return [[*export, str(fp32)], [*export, "--weight-format", "int8", str(weights)],
            [sys.executable, "-m", "distilforge.bench.openvino_static", str(fp32), task,
             str(folder / CALIBRATION_FILE), str(static)]]


def static_call(task: str, fp32: Path, out: Path, samples: int, source: str) -> str:
    """The Python call the static step makes, as bench.json records it."""
    return (f"OVQuantizer(optimum.intel.{MODEL_CLASSES[task]}.from_pretrained({str(fp32)!r}, compile=False))"
            f".quantize(calibration_dataset=nncf.Dataset(<{samples} texts of {source}, tokenized>), "
            f"ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples={samples})), "
            f"save_directory={str(out)!r})")


def model_folder(target: str) -> str:
    return target.replace(":", "-")


def run_openvino_commands(folder: Path, checkpoint: Path, task: str, samples: list[dict[str, np.ndarray]] | None,
                          say: Progress, started: list[subprocess.Popen] | None = None,
                          calibration_source: str = "") -> list[PeerModel]:
    """The exports (and, with `samples`, static INT8) into `folder`; the models."""
    cli = optimum_cli()
    if cli is None:
        raise PeerError("optimum-cli not found")
    commands = openvino_commands(cli, checkpoint, task, folder)
    targets = [FP32, INT8_WEIGHTS, INT8_STATIC][:3 if samples else 2]
    models = []
    for target, command, step in zip(targets, commands, STEPS, strict=False):
        say(f"{OPTIMUM_INTEL.name}: {step}")
        recorded = shlex.join(command)
        if target == INT8_STATIC:
            write_samples(folder / CALIBRATION_FILE, samples or [])
            recorded = static_call(task, folder / model_folder(FP32), folder / model_folder(target), len(samples or []),
                                   calibration_source)
        seconds = run_command(command, step, started)
        models.append(describe_ir(folder, folder / model_folder(target), target, recorded, seconds))
    return models


def write_samples(path: Path, samples: list[dict[str, np.ndarray]]) -> None:
    np.savez(path, **{f"{i}.{name}": values for i, s in enumerate(samples) for name, values in s.items()})


def describe_ir(root: Path, folder: Path, target: str, command: str, seconds: float) -> PeerModel:
    """The IR optimum-intel wrote in `folder` (inside `root`, which is or becomes DIR/peer-openvino): its .xml and
    .bin and the model's inputs and outputs."""
    xml = folder / "openvino_model.xml"
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise PeerError(f"{target}: no openvino_model.xml and .bin in {folder.name}")
    inputs, outputs = ir_specs(xml)
    files = peer_files(root, [xml, xml.with_suffix(".bin")], OPTIMUM_INTEL)
    details = {"tool": "optimum-intel", "command": command, "inference_precision_hint": "f32"}
    artifact = ExportedArtifact(target=target, files=files, inputs=inputs, outputs=outputs, details=details)
    return PeerModel(target=target, command=command, seconds=seconds, artifact=artifact, tool=OPTIMUM_INTEL)


def ir_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Names, dtypes and shapes (axis names for dynamic dimensions) of an IR's inputs and outputs."""
    import openvino as ov

    model = ov.Core().read_model(str(path))

    def spec(port: Any) -> TensorSpec:
        dims = tuple(d.get_length() if d.is_static else f"axis{i}" for i, d in enumerate(port.get_partial_shape()))
        return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, dims)

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]
