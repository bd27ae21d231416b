"""The build, readable top to bottom: load the checkpoint, build each target (reused when its inputs are unchanged,
one at a time or on worker processes), write the manifest.

checkpoint -> load -> export -> validate (against the eager reference) -> manifest. `build` and
`revalidate.validate_dir` are the Python API the CLI wraps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.cache import load_previous, save_progress
from distilforge.artifacts.layout import (
    begin_build,
    check_out_dir,
    clean_staging,
    end_build,
    exclusive,
    first_missing,
    no_space_error,
    out_of_space,
)
from distilforge.artifacts.manifest import ArtifactEntry, write_manifest
from distilforge.checkpoint import inspect_checkpoint
from distilforge.cpu import this_cpu_class
from distilforge.default_model import ensure_default_checkpoint
from distilforge.errors import BuildFailure, OutputDirError, UsageError
from distilforge.options import BuildOptions
from distilforge.pipeline.jobs import Workers, WorkerSetup, expected_seconds, measured_costs
from distilforge.pipeline.judge import failed_entry
from distilforge.pipeline.ladder import build_target
from distilforge.pipeline.record import build_manifest
from distilforge.pipeline.reuse import reuse_previous, target_cache_keys, verified_elsewhere
from distilforge.pipeline.source import Source, eager_runner, ignored_weights_note, load_source
from distilforge.progress import Progress, as_progress
from distilforge.quantize.calibration import CalibrationSet
from distilforge.targets import Target, get_target, resolve_targets
from distilforge.validate import Reference
from distilforge.validate.task import check_eval_head


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    entries: list[ArtifactEntry] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)

    @property
    def failures(self) -> list[str]:
        lines = []
        for e in self.entries:
            if e.error:
                lines.append(e.error)
            elif e.validation and not e.validation.passed:
                lines += e.validation.failures
        return lines


@dataclass(frozen=True)
class Part:
    """Build only some of the chosen targets: the K-th of N round-robin slices (`--shard K/N`, a CI matrix), or
    the named ones (a `build-many` task). Everything else (settings, reference, calibration) is the whole
    build's, so `distilforge merge` can put the parts together into the manifest one build would write."""

    index: int = 1
    count: int = 1
    names: tuple[str, ...] = ()

    def pick(self, chosen: list[Target]) -> list[Target]:
        if self.names:
            return [t for t in chosen if t.name in self.names]
        return chosen[self.index - 1::self.count]

    def record(self, picked: list[Target]) -> dict[str, Any]:
        return {"shard": None if self.names else f"{self.index}/{self.count}", "targets": [t.name for t in picked]}


def parse_shard(text: str) -> Part:
    """'2/3' -> the second of three slices."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise UsageError(f"--shard {text!r}: give K/N with 1 <= K <= N, e.g. 2/3")
    return Part(index=int(index), count=int(count))


def build(checkpoint: str | Path | None = None, out: str | Path = "artifacts", *, targets: list[str] | None = None,
          options: BuildOptions | None = None, force: bool = False,
          progress: Progress | Callable[[str], None] | None = None,
          eval_file: str | Path | None = None, keep_going: bool = False, rebuild: bool = False,
          on_loaded: Callable[[Source], None] | None = None, part: Part | None = None,
          reuse: dict[str, dict[str, Any]] | None = None, jobs: int = 1) -> BuildResult:
    """Build, validate and record every target. Bad input raises before anything is written.

    `eval_file`: labelled data (.jsonl/.csv) the task metrics are computed on, instead of the default
    model's held-out split. A failed target stops the build (the rest are listed as not built) unless
    `keep_going`; either way the manifest says which target failed and why. A target whose inputs are
    unchanged since the last build into `out` is reused (see artifacts/cache.py) unless `rebuild`.
    `progress`: what is shown while it runs (distilforge/progress.py); a plain callable gets each message.
    `on_loaded(source)` runs once the checkpoint is loaded and checked, before any target (`build --bench`
    starts the peer's commands there). `part`: build only a slice of the targets (the manifest records it as
    `part`). `reuse`: entries from elsewhere whose files the caller has verified (build-many's driver), taken
    when both their cache keys match; their files are not in `out`. `jobs`: targets built at once, each on a
    worker process of its own (distilforge/pipeline/jobs.py); the files and the manifest are those of `jobs=1`."""
    options = options or BuildOptions()
    progress = as_progress(progress)
    chosen = resolve_targets(targets)
    if not chosen:
        raise BuildFailure("no target has its backend installed: pip install 'distilforge[all]'")
    out = Path(out)
    check_out_dir(out, force=force)
    if checkpoint is not None:
        info = inspect_checkpoint(checkpoint)  # fail on a bad directory before torch is imported
        if eval_file is not None:
            check_eval_head(info.head, eval_file)
    workers = Workers(min(jobs, len(part.pick(chosen) if part else chosen)),
                      WorkerSetup(None if checkpoint is None else str(checkpoint),
                                  None if eval_file is None else str(eval_file), str(out)))
    with workers:
        if rebuild or not load_previous(out):  # they will have work: let their loading overlap this process's
            if checkpoint is None:
                ensure_default_checkpoint()  # made once, here, before the workers read it from the cache
            workers.start()
        return _build(checkpoint, out, chosen, targets, options, force, progress, eval_file, keep_going, rebuild,
                      on_loaded, part, reuse, workers)


def _build(checkpoint: str | Path | None, out: Path, chosen: list[Target], targets: list[str] | None,
           options: BuildOptions, force: bool, progress: Progress, eval_file: str | Path | None, keep_going: bool,
           rebuild: bool, on_loaded: Callable[[Source], None] | None, part: Part | None,
           reuse: dict[str, dict[str, Any]] | None, workers: Workers) -> BuildResult:
    progress.step("checkpoint" if checkpoint else "the built-in default model", "loading")
    source = load_source(checkpoint, eval_file)
    if source.ckpt.info.ignored_files:
        progress.note(ignored_weights_note(source.ckpt.info))
    for target in chosen:
        if target.check:
            target.check(source.ckpt.info, options)
    if targets is None and source.ckpt.tokenizer is None and options.calibration_file is None:
        skipped = [t.name for t in chosen if t.calibrated]
        chosen = [t for t in chosen if not t.calibrated]
        if skipped:
            progress.note(f"skipping {', '.join(skipped)}: calibration text needs a tokenizer, "
                          "and the checkpoint has none")
    source.calibration = load_calibration_for(options, source, chosen)
    if on_loaded:
        on_loaded(source)
    picked = part.pick(chosen) if part else chosen
    if not picked:
        raise UsageError(f"{part.record(picked)['shard'] or ', '.join(part.names)}: no target to build in this part "
                         f"of {len(chosen)} target(s)")
    progress.phase("build", len(picked), costs=_expected_seconds(picked, options),
                   workers=min(workers.count, len(picked)))
    reference = Reference(eager_runner(source.ckpt, options.threads))
    created = first_missing(out)  # what this build will create, and remove again if the disk fills up
    with exclusive(out):
        try:
            clean_staging(out)
            previous = {} if rebuild else load_previous(out)
            begin_build(out)
            entries = build_targets(picked, source, out, options, reference, progress, keep_going=keep_going,
                                    previous=previous, reuse=reuse or {}, workers=workers)
            progress.step("manifest", "writing")
            manifest = build_manifest(source, entries, reference, options, chosen)
            if part:
                manifest["part"] = part.record(picked)
            write_manifest(out, manifest)
            end_build(out)
        except OSError as e:
            reason = out_of_space(out, e)
            if reason is None:
                raise
            _give_up(out, created)
            raise no_space_error(out, reason, "writing the build") from None
        except OutputDirError:
            _give_up(out, created)
            raise
    return BuildResult(out=out, manifest=manifest, entries=entries)


def _give_up(out: Path, created: Path | None) -> None:
    """After the output directory filled up: the directories this build created go (nothing of the user's
    was in them); an earlier build's directory is left as a killed build leaves it (no manifest, and the
    marker that lets the rerun complete it), minus the staging folders."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
    else:
        clean_staging(out)


def load_calibration_for(options: BuildOptions, source: Source, chosen: list[Target]) -> CalibrationSet | None:
    """The calibration text, loaded and checked, when a chosen target needs it or the user named a file."""
    if options.calibration_file is None and not any(t.calibrated for t in chosen):
        return None
    from distilforge.quantize.calibration import load_calibration

    return load_calibration(options.calibration_file, source.ckpt.tokenizer, source.ckpt.head,
                            samples=options.calibration_samples)


def build_targets(chosen: list[Target], source: Source, out: Path, options: BuildOptions, reference: Reference,
                  progress: Progress, *, keep_going: bool,
                  previous: dict[str, dict[str, Any]],
                  reuse: dict[str, dict[str, Any]] | None = None,
                  workers: Workers | None = None) -> list[ArtifactEntry]:
    """Each target (reused when its inputs are unchanged), one at a time or on the workers; stop handing out
    targets at the first failure unless keep_going. The entries come in `chosen`'s order either way."""
    files = source.ckpt.info.file_hashes()
    keys = {t.name: target_cache_keys(t, source, files, options) for t in chosen}
    entries: dict[str, ArtifactEntry] = {}
    stopped_by: list[str] = []

    def finish(name: str, entry: ArtifactEntry) -> bool:
        entry.cache = keys[name].to_dict()
        entries[name] = entry
        save_progress(out, previous, [entries[t.name].to_dict() for t in chosen if t.name in entries])
        progress.advance(name, _outcome(entry))
        if not entry.passed and not keep_going:
            stopped_by.append(name)
            progress.note(f"{name} failed: stopping (pass --keep-going to build the others anyway)")
        return not stopped_by

    to_build = []
    for target in chosen:
        keys_ = keys[target.name]
        entry = verified_elsewhere((reuse or {}).get(target.name), keys_)
        entry = entry or reuse_previous(target, previous.get(target.name), keys_, source, out, options, reference,
                                        progress)
        if entry is None and (workers is None or workers.count < 2):
            entry = build_target(target, source, out, options, reference, progress)
        if entry is None:
            to_build.append(target.name)
        elif not finish(target.name, entry):
            break
    if len(to_build) == 1 and not stopped_by:  # a worker would only add its start-up
        finish(to_build[0], build_target(get_target(to_build[0]), source, out, options, reference, progress))
    elif to_build and not stopped_by:
        costs = _expected_seconds([get_target(n) for n in to_build], options)
        workers.run(to_build, (options, source.calibration), costs, step=progress.step, note=progress.note, done=finish)
    if entries and all(e.reused == "all" for e in entries.values()):
        progress.note("everything is up to date: nothing was exported or validated again")
    return [entries.get(t.name) or failed_entry(t, f"{t.name}: not built: the build stopped after {stopped_by[0]} "
                                                    "failed (pass --keep-going to build the others anyway)")
            for t in chosen]


def _expected_seconds(targets: list[Target], options: BuildOptions) -> dict[str, float]:
    """Each target's prior cost (jobs.py): the schedule's order and the ETA's estimate before anything is measured."""
    costs = measured_costs(this_cpu_class())
    return {t.name: expected_seconds(costs.get(t.name), len(t.ladder(options)) if t.ladder else 1) for t in targets}


def _outcome(entry: ArtifactEntry) -> str:
    if entry.reused == "all":
        return "up to date (same inputs as the last build), nothing to do"
    return "passed" if entry.passed else "FAILED"
