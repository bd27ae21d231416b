"""The manifest a build writes: its entries, the reference, the tools, the machine and the settings."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from distilforge.artifacts.environment import machine_info, tool_versions
from distilforge.artifacts.manifest import ArtifactEntry, make_manifest
from distilforge.options import BuildOptions
from distilforge.pipeline.source import Source
from distilforge.targets import Target, format_settings
from distilforge.validate import Reference
from distilforge.validate.inputs import DYNAMIC_GRID, MIN_DECISIONS
from distilforge.validate.tolerances import MARGIN


def build_manifest(source: Source, entries: list[ArtifactEntry], reference: Reference, options: BuildOptions,
              chosen: list[Target]) -> dict[str, Any]:
    return make_manifest(
        checkpoint=source.record,
        entries=entries,
        reference=_reference_record(source, reference),
        tools=tool_versions(),
        machine=machine_info(options.threads),
        settings={
            "targets": [t.name for t in chosen],
            "threads": options.threads,
            "seed": options.seed,
            **format_settings(options),
            "calibration": source.calibration.record() if source.calibration else None,
            "eval": source.eval_set.record() if source.eval_set else None,
            "tolerances": {k: asdict(v) for k, v in options.tolerances.items()},
            "int8_cpu": options.int8_cpu,
            "int8_margin": MARGIN.to_dict(),
            "validate_on": list(options.validate_on),
            "validation_grid": {"dynamic": [[b, s if s else "max"] for b, s in DYNAMIC_GRID],
                                "min_decisions": MIN_DECISIONS,
                                "padded_rows": True, "real_text_rows": source.ckpt.tokenizer is not None},
        },
    )


def _reference_record(source: Source, reference: Reference) -> dict[str, Any]:
    record: dict[str, Any] = {"runtime": "PyTorch eager, fp32",
                              "attention": getattr(source.ckpt.model.config, "_attn_implementation", None)}
    if source.eval_set is not None and source.ckpt.tokenizer is not None:
        scores = reference.task_score(source.ckpt.tokenizer, source.eval_set, source.ckpt.info.max_length)
        metric = source.eval_set.metric
        record["task"] = {"metric": metric, "value": scores[metric], "examples": len(source.eval_set),
                          "data": source.eval_set.source, "sha256": source.eval_set.sha256,
                          "extra": {k: v for k, v in scores.items() if k != metric}}
    return record
