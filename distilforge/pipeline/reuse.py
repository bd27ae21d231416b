"""Incremental builds: what a target's bytes and figures depend on (its cache keys), and an earlier entry taken
when they match (artifacts/cache.py)."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distilforge.artifacts.cache import CacheKeys, cache_keys, reusable
from distilforge.artifacts.environment import cpu_record, tool_versions
from distilforge.artifacts.manifest import ArtifactEntry
from distilforge.options import BuildOptions
from distilforge.pipeline.judge import judge_elsewhere, validate_or_fail
from distilforge.pipeline.ladder import finish_folder
from distilforge.pipeline.source import Source
from distilforge.progress import Progress
from distilforge.targets import Target
from distilforge.validate import Reference
from distilforge.validate.runners.isolated import WRAPPER
from distilforge.validate.tolerances import MARGIN, precision_class


def target_cache_keys(target: Target, source: Source, files: list[dict[str, Any]], options: BuildOptions) -> CacheKeys:
    """What the artifact's bytes, then its figures, depend on (artifacts/cache.py)."""
    exporter_options: dict[str, Any] = {"seed": options.seed, "threads": options.threads,
                                        **target.spec.settings(options)}
    if target.calibrated and source.calibration:
        exporter_options["calibration"] = source.calibration.record()
    tolerance = options.tolerances[precision_class(target.precision)]
    cpu = {**cpu_record(), "wrapper": os.environ.get(WRAPPER)}  # what the runtime runs on decides the figures
    if target.ladder:  # which recipe is kept depends on the figures: the rule, the margin and the CPU measured on
        exporter_options.update(onnx_int8_keep_float=options.onnx_int8_keep_float, int8_cpu=options.int8_cpu,
                                tolerance=asdict(tolerance), margin=MARGIN.to_dict(), cpu=cpu)
        if options.validate_on:
            exporter_options["validate_on"] = list(options.validate_on)
    export = {"target": target.name, "checkpoint": files, "options": exporter_options, "tools": tool_versions()}
    validation = {"tolerance": asdict(tolerance), "eval": source.eval_set.record() if source.eval_set else None,
                  "cpu": cpu, **({"validate_on": list(options.validate_on)} if options.validate_on else {})}
    return cache_keys(export, validation)


def verified_elsewhere(previous: dict[str, Any] | None, keys: CacheKeys) -> ArtifactEntry | None:
    """An entry whose files someone else holds and has verified, when it was exported and validated from the same
    inputs as this build would (both keys)."""
    if not previous or previous.get("error") or previous.get("cache") != keys.to_dict():
        return None
    entry = ArtifactEntry.from_dict(previous)
    entry.reused = "all"
    return entry


def reuse_previous(target: Target, previous: dict[str, Any] | None, keys: CacheKeys, source: Source, out: Path,
           options: BuildOptions, reference: Reference, progress: Progress) -> ArtifactEntry | None:
    """The previous build's entry when its inputs are unchanged (re-validated if only the rule changed)."""
    if not reusable(out, previous, keys):
        return None
    entry = ArtifactEntry.from_dict(previous)
    if entry.cache and entry.cache.get("validation") == keys.validation and entry.validation:
        entry.reused = "all"
        return entry
    progress.step(target.name, "export unchanged, validating again")
    ladder = entry.ladder
    entry = validate_or_fail(target, entry.artifact, source, out, options, reference)
    if entry.passed:
        entry = judge_elsewhere(entry, target, source, out, options, reference)
    entry.ladder, entry.reused = ladder, "export"
    finish_folder(target, entry, out / target.folder, source, companions=False)  # the card carries the new figures
    return entry
