"""What a build reads: the checkpoint, the validation texts and the labelled data, and what the manifest records of
them (and whether they changed since)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from distilforge.checkpoint import CheckpointInfo, LoadedCheckpoint, load_checkpoint
from distilforge.default_model import ensure_default_checkpoint
from distilforge.errors import CheckpointError, DataFileError
from distilforge.quantize.calibration import CalibrationSet
from distilforge.quantize.sensitivity import Scheme, Sensitivity
from distilforge.validate.task import EvalSet


@dataclass
class Source:
    """A loaded checkpoint with what validation needs beside it."""

    ckpt: LoadedCheckpoint
    texts: list[str]
    eval_set: EvalSet | None
    default: bool
    calibration: CalibrationSet | None = None  # loaded by the build when a chosen target needs it
    sensitivities: dict[Scheme, Sensitivity] = field(default_factory=dict, repr=False)
    predictions: dict[tuple[Scheme, tuple[str, ...]], float] = field(default_factory=dict, repr=False)
    ranges: dict[Scheme, dict[Any, tuple[float, float]]] = field(default_factory=dict, repr=False)

    def sensitivity(self, scheme: Scheme) -> Sensitivity:
        """Each layer group's INT8 cost under `scheme` (quantize/sensitivity.py), measured once per scheme: targets
        whose formats quantize alike share the table."""
        if scheme not in self.sensitivities:
            self.sensitivities[scheme] = measure_sensitivity(self, scheme)
        return self.sensitivities[scheme]

    def predicted_error(self, scheme: Scheme, float_groups: tuple[str, ...],
                        computing: Callable[[], None] = lambda: None) -> float:
        """The eager proxy's mean cosine error of a whole recipe (`scheme` with `float_groups` float) on the
        validation grid (quantize/sensitivity.py: `predicted_error`), computed once per recipe (`computing` is
        called first when it is)."""
        key = (scheme, tuple(sorted(float_groups)))
        if key not in self.predictions:
            computing()
            self.predictions[key] = predict_error(self, scheme, float_groups)
        return self.predictions[key]

    @cached_property
    def proxy_cases(self) -> tuple[list[dict[str, Any]], list[Any]]:
        """The validation grid's inputs (random shapes and real text, as every artifact is judged on) and the
        clean eager model's rows for them."""
        from distilforge.quantize.sensitivity import reference_rows
        from distilforge.validate.inputs import validation_cases

        info = self.ckpt.info
        cases = [c.inputs for c in validation_cases(info, self.ckpt.tokenizer, self.texts)]
        return cases, reference_rows(self.ckpt.model, info.head.output_names, cases)

    @cached_property
    def record(self) -> dict[str, Any]:
        """The manifest's checkpoint record (hashes every checkpoint file once)."""
        return checkpoint_record(self)


def load_source(checkpoint: str | Path | None, eval_file: str | Path | None = None) -> Source:
    """The checkpoint, the validation texts, and the labelled data: `eval_file` (read and checked in full
    here, before any output is written), else the default model's held-out split, else none."""
    from distilforge.default_model import load_topics, sample_texts
    from distilforge.validate.task import load_eval_set

    if checkpoint is None:
        path, provenance = ensure_default_checkpoint()
        ckpt = load_checkpoint(path, provenance=provenance)
    else:
        ckpt = load_checkpoint(checkpoint)
    if eval_file is not None:
        eval_set = load_eval_set(eval_file, ckpt.info, ckpt.tokenizer)
    elif checkpoint is None:
        topics = load_topics()
        eval_set = EvalSet(inputs=tuple((r.text,) for r in topics.test), labels=tuple(r.label for r in topics.test),
                           source="distilforge/data/topics.jsonl (test split)", sha256=topics.sha256)
    else:
        eval_set = None
    return Source(ckpt, sample_texts(), eval_set, default=checkpoint is None)


def measure_sensitivity(source: Source, scheme: Scheme) -> Sensitivity:
    from distilforge.quantize.sensitivity import measure
    from distilforge.validate.inputs import sensitivity_cases

    info = source.ckpt.info
    cases = sensitivity_cases(info, source.ckpt.tokenizer, source.texts)
    calibration = _range_samples(source, scheme, [])
    inputs = f"{len(cases)} batches: " + ", ".join(c.name for c in cases)
    if calibration:
        inputs += f"; ranges from {len(calibration)} calibration samples"
    return measure(source.ckpt.model, info.head.output_names, [c.inputs for c in cases], scheme,
                   calibration=calibration, inputs=inputs)


def predict_error(source: Source, scheme: Scheme, float_groups: tuple[str, ...]) -> float:
    from distilforge.quantize.sensitivity import predicted_error, static_ranges

    cases, reference = source.proxy_cases
    if scheme not in source.ranges:  # the same calibration forwards for every prediction of a scheme: made once
        source.ranges[scheme] = static_ranges(source.ckpt.model, scheme, _range_samples(source, scheme, cases))
    ranges = source.ranges[scheme]
    return predicted_error(source.ckpt.model, source.ckpt.info.head.output_names, cases, reference, scheme,
                           float_groups, ranges)


def _range_samples(source: Source, scheme: Scheme, fallback: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a static scheme's ranges are calibrated on: the first calibration samples, as for the table."""
    from distilforge.quantize.sensitivity import CALIBRATION_SAMPLES

    if scheme.activations != "static" or not source.calibration:
        return fallback
    return source.calibration.cut(source.ckpt.info.max_length)[:CALIBRATION_SAMPLES]


def eager_runner(ckpt: LoadedCheckpoint, threads: int) -> Any:
    from distilforge.validate.runners.eager import EagerRunner

    return EagerRunner(ckpt.model, ckpt.head, threads)


def checkpoint_record(source: Source) -> dict[str, Any]:
    info = source.ckpt.info
    return {
        "path": str(info.path),
        "default": source.default,
        "head": info.head.architecture,
        "problem_type": info.head.problem_type,
        "task": info.head.task,
        "labels": labels(info.config, info.head.task),
        "config": info.summary(),
        "has_tokenizer": info.has_tokenizer,
        "framework": info.framework,
        "ignored_files": [p.name for p in info.ignored_files],
        "files": info.file_hashes(),
        "provenance": source.ckpt.provenance or None,
    }


def ignored_weights_note(info: CheckpointInfo) -> str:
    """A folder with several frameworks' weights: PyTorch's are used, else TensorFlow's (docs/inputs.md)."""
    from distilforge.weights import FRAMEWORK_NAMES

    ignored = ", ".join(p.name for p in info.ignored_files)
    return (f"{info.path}: using the {FRAMEWORK_NAMES[info.framework]} weights ({info.weight_files[0].name}); "
            f"ignoring {ignored}")


def labels(config: dict[str, Any], task: str) -> dict[str, str] | None:
    """id2label of a classification head (what its outputs mean), else None."""
    if task not in ("text-classification", "token-classification") or not isinstance(config.get("id2label"), dict):
        return None
    return {str(k): str(v) for k, v in sorted(config["id2label"].items(), key=lambda kv: int(kv[0]))}


def source_for(manifest: dict[str, Any]) -> Source:
    """The checkpoint and validation data a manifest was built from (re-validation and the bench's peer)."""
    record = manifest["checkpoint"]
    eval_file = _recorded_eval_file(manifest["settings"].get("eval"))
    if record.get("default"):
        return load_source(None, eval_file)
    path = Path(record["path"])
    if not path.is_dir():
        raise CheckpointError(f"{path}: the checkpoint this manifest was built from is gone")
    return load_source(path, eval_file)


def _recorded_eval_file(record: dict[str, Any] | None) -> Path | None:
    """The user's eval file the build used (None: built-in data or none); re-validation needs it again."""
    if not record or not record.get("path"):
        return None
    path = Path(record["path"])
    if not path.is_file():
        raise DataFileError(f"{path}: the eval file this manifest was built with is gone (--eval)")
    return path


def eval_drift(record: dict[str, Any] | None, source: Source) -> list[str]:
    if not record or not record.get("path") or source.eval_set is None:
        return []
    if source.eval_set.sha256 != record.get("sha256"):
        return [f"eval: {record['path']} changed since the build (sha256 differs from the manifest)"]
    return []


def checkpoint_drift(record: dict[str, Any], source: Source) -> list[str]:
    """One line per checkpoint file that changed (or went missing) since the manifest recorded it."""
    now = {f["path"]: f["sha256"] for f in source.ckpt.info.file_hashes()}
    drift = []
    for f in record["files"]:
        if now.get(f["path"]) != f["sha256"]:
            drift.append(f"checkpoint: {os.path.join(record['path'], f['path'])} changed or is missing since the build")
    return drift
