"""The data flow of DESIGN.md, readable in one place:

checkpoint -> load -> export -> validate (against the eager reference) -> manifest.

`build` and `validate_dir` are the Python API the CLI wraps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from distilforge.artifacts.cache import CacheKeys, cache_keys, load_previous, reusable, save_progress
from distilforge.artifacts.environment import cpu_record, machine_info, tool_versions
from distilforge.artifacts.folder import add_companions, add_sentence_files, card_problems, write_card
from distilforge.artifacts.layout import (
    begin_build,
    check_out_dir,
    clean_staging,
    end_build,
    exclusive,
    first_missing,
    move_into_place,
    no_space_error,
    out_of_space,
    staging_dir,
)
from distilforge.artifacts.manifest import (
    ArtifactEntry,
    Verdict,
    host_cpu,
    make_manifest,
    manifest_problems,
    read_manifest,
    verify_files,
    write_manifest,
)
from distilforge.artifacts.records import ExportedArtifact, Tolerance
from distilforge.checkpoint import CheckpointInfo, LoadedCheckpoint, inspect_checkpoint, load_checkpoint
from distilforge.default_model import ensure_default_checkpoint
from distilforge.errors import (
    BuildFailure,
    CheckpointError,
    DataFileError,
    DistilforgeError,
    ExportError,
    OutputDirError,
    UsageError,
    first_line,
)
from distilforge.jobs import Workers, WorkerSetup, expected_seconds
from distilforge.options import BuildOptions
from distilforge.progress import Progress, as_progress
from distilforge.quantize.ladder import Attempt, Rung, kept_attempt, ladder_record, verdict
from distilforge.targets import Target, format_settings, get_target, resolve_targets
from distilforge.validate import Reference, validate_artifact
from distilforge.validate.inputs import DYNAMIC_GRID, MIN_DECISIONS, TOP_UP_BATCH, decisions, validation_cases
from distilforge.validate.machine import cpu_differences, outside_recipe
from distilforge.validate.recorded import figure_mismatches
from distilforge.validate.runners.isolated import WRAPPER, IsolatedRunner, Launcher, RunnerError, RuntimeCrash
from distilforge.validate.task import EvalSet, check_eval_head, eval_batches
from distilforge.validate.tolerances import MARGIN, margin_shortfalls, precision_class

EMULATED_SEQUENCE = 128  # the longest sequence validated on an emulated CPU (validate_entry)


@dataclass
class Source:
    """A loaded checkpoint with what validation needs beside it."""

    ckpt: LoadedCheckpoint
    texts: list[str]
    eval_set: EvalSet | None
    default: bool

    @cached_property
    def record(self) -> dict[str, Any]:
        """The manifest's checkpoint record (hashes every checkpoint file once)."""
        return checkpoint_record(self)


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
    worker process of its own (distilforge/jobs.py); the files and the manifest are those of `jobs=1`."""
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
    options = _with_calibration(options, source, chosen)
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
            manifest = _manifest(source, entries, reference, options, chosen)
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


def load_source(checkpoint: str | Path | None, eval_file: str | Path | None = None) -> Source:
    """The checkpoint, the validation texts, and the labelled data: `eval_file` (read and checked in full
    here, before any output is written), else the default model's held-out split, else none."""
    from distilforge.default_model import ensure_default_checkpoint, load_topics, sample_texts
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


def _with_calibration(options: BuildOptions, source: Source, chosen: list[Target]) -> BuildOptions:
    """Load and check the calibration text when a chosen target needs it, or when the user named a file."""
    if options.calibration_file is None and not any(t.calibrated for t in chosen):
        return options
    from distilforge.quantize.calibration import load_calibration

    calibration = load_calibration(options.calibration_file, source.ckpt.tokenizer, source.ckpt.head,
                                   samples=options.calibration_samples)
    return replace(options, calibration=calibration)


def eager_runner(ckpt: LoadedCheckpoint, threads: int) -> Any:
    from distilforge.validate.runners.eager import EagerRunner

    return EagerRunner(ckpt.model, ckpt.head, threads)


def build_targets(chosen: list[Target], source: Source, out: Path, options: BuildOptions, reference: Reference,
                  progress: Progress, *, keep_going: bool,
                  previous: dict[str, dict[str, Any]],
                  reuse: dict[str, dict[str, Any]] | None = None,
                  workers: Workers | None = None) -> list[ArtifactEntry]:
    """Each target (reused when its inputs are unchanged), one at a time or on the workers; stop handing out
    targets at the first failure unless keep_going. The entries come in `chosen`'s order either way."""
    files = source.ckpt.info.file_hashes()
    keys = {t.name: _cache_keys(t, source, files, options) for t in chosen}
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
        entry = _verified_elsewhere((reuse or {}).get(target.name), keys_)
        entry = entry or _reuse(target, previous.get(target.name), keys_, source, out, options, reference, progress)
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
        workers.run(to_build, options, costs, step=progress.step, note=progress.note, done=finish)
    if entries and all(e.reused == "all" for e in entries.values()):
        progress.note("everything is up to date: nothing was exported or validated again")
    return [entries.get(t.name) or _failed_entry(t, f"{t.name}: not built: the build stopped after {stopped_by[0]} "
                                                    "failed (pass --keep-going to build the others anyway)")
            for t in chosen]


def _expected_seconds(targets: list[Target], options: BuildOptions) -> dict[str, float]:
    """Each target's prior cost (jobs.py): the schedule's order and the ETA's estimate before anything is measured."""
    return {t.name: expected_seconds(t.name, len(t.ladder(options)) if t.ladder else 1) for t in targets}


def _outcome(entry: ArtifactEntry) -> str:
    if entry.reused == "all":
        return "up to date (same inputs as the last build), nothing to do"
    return "passed" if entry.passed else "FAILED"


def _cache_keys(target: Target, source: Source, files: list[dict[str, Any]], options: BuildOptions) -> CacheKeys:
    """What the artifact's bytes, then its figures, depend on (artifacts/cache.py)."""
    exporter_options: dict[str, Any] = {"seed": options.seed, "threads": options.threads,
                                        **target.spec.settings(options)}
    if target.calibrated and options.calibration:
        exporter_options["calibration"] = options.calibration.record()
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


def _verified_elsewhere(previous: dict[str, Any] | None, keys: CacheKeys) -> ArtifactEntry | None:
    """An entry whose files someone else holds and has verified, when it was exported and validated from the same
    inputs as this build would (both keys)."""
    if not previous or previous.get("error") or previous.get("cache") != keys.to_dict():
        return None
    entry = ArtifactEntry.from_dict(previous)
    entry.reused = "all"
    return entry


def _reuse(target: Target, previous: dict[str, Any] | None, keys: CacheKeys, source: Source, out: Path,
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
    entry = _validate_or_fail(target, entry.artifact, source, out, options, reference)
    if entry.passed:
        entry = _judge_elsewhere(entry, target, source, out, options, reference)
    entry.ladder, entry.reused = ladder, "export"
    finish_folder(entry, out / target.folder, source, companions=False)  # the card carries the new figures
    return entry


def build_target(target: Target, source: Source, out: Path, options: BuildOptions, reference: Reference,
                 progress: Progress) -> ArtifactEntry:
    """Export into a staging folder and validate it there through its runner; an INT8 target climbs its ladder of
    recipes until one passes its rule with the margin (validate/tolerances.py). The kept one moves into place."""
    rungs: tuple[Rung | None, ...] = target.ladder(options) if target.ladder else (None,)
    attempts: list[Attempt] = []
    try:
        for index, rung in enumerate(rungs):
            attempts.append(_attempt(target, source, out, options, reference, progress, rung,
                                     f"{index + 1}/{len(rungs)}"))
            if attempts[-1].clear or index + 1 == len(rungs):
                break
            progress.note(f"{target.name}: recipe {rung.name} {verdict(attempts[-1])}; trying {rungs[index + 1].name}")
        kept = kept_attempt(attempts)
        if target.ladder:
            kept.entry.ladder = ladder_record(rungs, attempts, kept)
        if kept.entry.artifact.files:
            finish_folder(kept.entry, kept.root / target.folder, source)
            move_into_place(kept.root / target.folder, out / target.folder)
    finally:
        for attempt in attempts:
            shutil.rmtree(attempt.root, ignore_errors=True)
    return kept.entry


def finish_folder(entry: ArtifactEntry, folder: Path, source: Source, *, companions: bool = True) -> None:
    """Make the folder deployable as it is (artifacts/folder.py): the checkpoint's config and tokenizer beside the
    model (unless already there), then the card; the entry lists every file."""
    files = [f for f in entry.artifact.files if f.role != "card"]
    if companions:
        info = source.ckpt.info
        files = [f for f in files if f.role == "model"] + add_companions(info.model_dir, folder, folder.name)
        if info.sentence:
            files += add_sentence_files(info.path, info.sentence, folder, folder.name)
    entry.artifact.files = files  # what the card lists: every file but itself
    card = write_card(folder, entry.to_dict(), source.record)
    entry.artifact.files = files + [card]


def _attempt(target: Target, source: Source, out: Path, options: BuildOptions, reference: Reference,
             progress: Progress, rung: Rung | None, place: str) -> Attempt:
    label = f" (recipe {place}: {rung.name})" if rung is not None else ""
    progress.step(target.name, f"exporting{label}")
    root = staging_dir(out, target.folder)
    try:
        entry = _export_and_validate(target, source, root, replace(options, rung=rung.name if rung else None),
                                     reference, lambda: progress.step(target.name, f"validating{label}"))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    shortfalls = []
    if rung is not None and entry.passed:  # on this machine and on every emulated CPU it was judged on
        shortfalls = margin_shortfalls(entry.validation) + [
            f"[{v.cpu['spec']}] {line}" for v in entry.elsewhere if v.validation
            for line in margin_shortfalls(v.validation)]
    return Attempt(rung, root, entry, shortfalls)


def _export_and_validate(target: Target, source: Source, root: Path, options: BuildOptions, reference: Reference,
                         validating: Callable[[], None]) -> ArtifactEntry:
    """Export into root/<folder>, then validate from there: the artifact's paths are relative to `root`."""
    folder = root / target.folder
    folder.mkdir()
    try:
        artifact = _rebase(target.export(source.ckpt, folder, options), target.folder)
    except ExportError as e:
        _stop_if_out_of_space(root.parent, e, target)
        return _failed_entry(target, str(e))
    except DistilforgeError:
        raise
    except Exception as e:  # a converter's own exception: name the target, keep the message to one line
        _stop_if_out_of_space(root.parent, e, target)
        return _failed_entry(target, f"{target.name}: export failed: {type(e).__name__}: {first_line(e)}")
    validating()
    entry = _validate_or_fail(target, artifact, source, root, options, reference)
    return _judge_elsewhere(entry, target, source, root, options, reference) if entry.passed else entry


def _judge_elsewhere(entry: ArtifactEntry, target: Target, source: Source, out: Path, options: BuildOptions,
                     reference: Reference) -> ArtifactEntry:
    """`--validate-on`: the artifact judged on each emulated CPU too. A failure there fails the artifact (and
    climbs an INT8 ladder) as one here does; a format whose runtime cannot run there is recorded as not run."""
    from distilforge.validate import arm64

    for cpu in options.validate_on:
        if target.format not in arm64.FORMATS:
            entry.elsewhere.append(Verdict(cpu={"spec": cpu}, not_run=arm64.why_not(target.format)))
            continue
        other = _validate_or_fail(target, entry.artifact, source, out, options, reference,
                                  launcher=arm64.launcher(cpu))
        entry.elsewhere.append(Verdict(cpu=other.validated_on or {"spec": cpu}, validation=other.validation,
                                       error=other.error))
    return merge_verdicts(entry)


def merge_verdicts(entry: ArtifactEntry) -> ArtifactEntry:
    """Fold the emulated CPUs' verdicts into the artifact's: `validation.passed`, what build systems read, is False
    when it failed on any of them, with one failure line each prefixed by the CPU; `validated_on` keeps each
    CPU's own verdict, this machine's included."""
    entry.validated_on = {**(entry.validated_on or {}), "passed": entry.validation.passed}
    failures = [f"[{v.cpu['spec']}] {line}" for v in entry.elsewhere if v.passed is False
                for line in ([v.error] if v.error else v.validation.failures)]
    if failures:
        entry.validation = replace(entry.validation, passed=False, failures=entry.validation.failures + failures)
    return entry


def _validate_or_fail(target: Target, artifact: ExportedArtifact, source: Source, out: Path, options: BuildOptions,
                      reference: Reference, tolerance: Tolerance | None = None, *,
                      launcher: Launcher | None = None) -> ArtifactEntry:
    try:
        return validate_entry(target, artifact, source, out, options, reference, tolerance, launcher=launcher)
    except DistilforgeError:
        raise
    except Exception as e:  # the runtime could not load or run the artifact (or crashed): only that target fails
        detail = first_line(e) if isinstance(e, (RuntimeCrash, RunnerError)) else f"{type(e).__name__}: {first_line(e)}"
        entry = _failed_entry(target, f"{target.name}: running it failed: {detail}")
        entry.artifact = artifact
        return entry


def _stop_if_out_of_space(out: Path, error: BaseException, target: Target) -> None:
    """A full disk is not this target's failure: every later write fails too. Stop the build."""
    reason = out_of_space(out, error)
    if reason is not None:
        raise no_space_error(out, reason, f"for {target.name}") from None


def validate_entry(target: Target, artifact: ExportedArtifact, source: Source, out: Path, options: BuildOptions,
                   reference: Reference, tolerance: Tolerance | None = None, *,
                   launcher: Launcher | None = None) -> ArtifactEntry:
    """Judge `artifact` by its class's rule. Under an emulated CPU (`launcher`, 100-400x slower) sequences are cut
    to EMULATED_SEQUENCE (the grid's longest row is 3 x 128, not 3 x the model's maximum); every other case, the
    labelled eval set included, is the host's. (Leaving the eval set out for speed made the verdict another one:
    its top-up batches of unlabelled sample texts, many of them off-topic near-ties, gave the default model's
    tflite:int8-static 93.8 % agreement, on the host as under emulation, against 99.3 % with the labelled texts.)"""
    klass = precision_class(target.precision)
    tolerance = tolerance or options.tolerances[klass]
    task, labelled = None, 0
    if source.eval_set is not None and source.ckpt.tokenizer is not None:
        task = (source.ckpt.tokenizer, source.eval_set, _longest_input(artifact, source.ckpt.info.max_length))
        labelled = sum(decisions(source.ckpt.info, b.case) for b in eval_batches(*task[:2], max_length=task[2]))
    max_shape = artifact.max_shape
    if launcher is not None and not artifact.fixed_shapes and not max_shape:
        max_shape = emulated_bound(source.ckpt.info)
    cases = validation_cases(source.ckpt.info, source.ckpt.tokenizer, source.texts,
                             fixed_shapes=artifact.fixed_shapes, max_shape=max_shape, seed=options.seed,
                             counted=labelled)
    with IsolatedRunner(target.open_runner, out, artifact, options.threads, launcher=launcher) as runner:
        result = validate_artifact(artifact, runner, reference, cases, head=source.ckpt.head, tolerance=tolerance,
                                   precision_class=klass, task=task)
    return ArtifactEntry(artifact=artifact, validation=result, format=target.format, precision=target.precision,
                         runtime=target.runtime, not_reproducible=target.not_reproducible,
                         reproducible_caveat=target.reproducible_caveat, validated_on=runner.cpu)


def emulated_bound(info: CheckpointInfo) -> tuple[int, ...]:
    """The largest input validated under emulation: (batch, [choices,] EMULATED_SEQUENCE)."""
    return (TOP_UP_BATCH, 4, EMULATED_SEQUENCE) if info.head.multiple_choice else (TOP_UP_BATCH, EMULATED_SEQUENCE)


def _longest_input(artifact: ExportedArtifact, max_length: int) -> int:
    """Labelled texts are truncated to what the artifact takes, as they would be in deployment."""
    return min(max_length, artifact.longest_sequence or max_length)


def _rebase(artifact: ExportedArtifact, folder: str) -> ExportedArtifact:
    """Exporters record paths inside their folder; the manifest records them from the output root."""
    artifact.files = [replace(f, path=f"{folder}/{f.path}") for f in artifact.files]
    return artifact


def _failed_entry(target: Target, message: str) -> ArtifactEntry:
    empty = ExportedArtifact(target=target.name, files=[], inputs=[], outputs=[])
    return ArtifactEntry(artifact=empty, validation=None, format=target.format, precision=target.precision,
                         runtime=target.runtime, error=message, not_reproducible=target.not_reproducible,
                         reproducible_caveat=target.reproducible_caveat)



def _manifest(source: Source, entries: list[ArtifactEntry], reference: Reference, options: BuildOptions,
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
            "calibration": options.calibration.record() if options.calibration else None,
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


@dataclass
class CheckResult:
    """What `validate_dir` found: problems with files or checkpoint, and each artifact's fresh result."""

    out: Path
    problems: list[str]
    entries: list[ArtifactEntry]
    notes: list[str] = field(default_factory=list)  # how this CPU differs from the build's, what moved with it
    # each emulated CPU asked for ("arm64:cortex-a76") -> the artifacts judged there
    elsewhere: dict[str, list[ArtifactEntry]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        everywhere = [*self.entries, *(e for entries in self.elsewhere.values() for e in entries)]
        return not self.problems and all(e.passed for e in everywhere)

    @property
    def failures(self) -> list[str]:
        lines = list(self.problems)
        for cpu, entries in [("", self.entries), *self.elsewhere.items()]:
            for e in entries:
                if cpu and e.error:  # the host's are in `problems` already
                    lines.append(e.error)
                elif e.validation and not e.validation.passed:
                    lines += [f"[{cpu}] {line}" if cpu else line for line in e.validation.failures]
        return lines


def validate_dir(out: str | Path, *, threads: int | None = None, cpus: tuple[str, ...] = ("host",),
                 targets: list[str] | None = None, progress: Callable[[str], None] | None = None) -> CheckResult:
    """Verify every file's hash and the checkpoint's, then re-run each artifact's checks on each of `cpus`: "host"
    (this machine) and emulated ones ("arm64:cortex-a76", validate/arm64.py). Where an artifact runs on another
    CPU than its figures were recorded on, say how the CPU differs (`notes`) and judge the figures measured there
    by the pass rules alone. `targets`: re-run only these (every file is checked all the same)."""
    out = Path(out)
    manifest = read_manifest(out)
    _known_targets(out, manifest, targets)
    problems = manifest_problems(manifest) + [p for a in manifest["artifacts"] for p in verify_files(out, a)]
    problems += [p for a in manifest["artifacts"] for p in card_problems(out, a, manifest["checkpoint"])]
    source = source_for(manifest)
    problems += checkpoint_drift(manifest["checkpoint"], source)
    problems += _eval_drift(manifest["settings"].get("eval"), source)
    options = BuildOptions(threads=threads or manifest["settings"]["threads"], seed=manifest["settings"]["seed"])
    reference = Reference(eager_runner(source.ckpt, options.threads))
    entries, notes = [], []
    elsewhere = {cpu: _validate_emulated(cpu, manifest, source, out, options, reference, notes, progress, targets)
                 for cpu in cpus if cpu != "host"}
    for record in _runnable(manifest, out, targets) if "host" in cpus else []:
        target = get_target(record["target"])
        artifact = ExportedArtifact.from_dict(record)
        tolerance = Tolerance(**record["validation"]["tolerance"])
        entry = _validate_or_fail(target, artifact, source, out, options, reference, tolerance)
        if entry.error:
            problems.append(entry.error)
            continue
        entry.ladder = record.get("ladder")
        differences = cpu_differences(host_cpu(record.get("validated_on")) or manifest.get("machine"),
                                      entry.validated_on)
        same_threads = options.threads == manifest["settings"]["threads"]
        moved = figure_mismatches(target.name, record["validation"], entry.validation,
                                  same_threads=same_threads and not differences)
        if differences:  # another CPU: its kernels move the figures, and the pass rules decide
            notes += differences + list(filter(None, [outside_recipe(record, entry.validated_on["cpu_class"])]))
            notes += [f"{line} (measured on another CPU)" for line in moved if "passed=" not in line]
        else:
            problems += moved
        entries.append(entry)
    return CheckResult(out=out, problems=problems, entries=entries, notes=list(dict.fromkeys(notes)),
                       elsewhere=elsewhere)


def _runnable(manifest: dict[str, Any], out: Path, targets: list[str] | None) -> list[dict[str, Any]]:
    """The entries asked for that built and whose files are there (changed files are still run: the figures say
    how wrong they are)."""
    return [r for r in manifest["artifacts"] if (targets is None or r["target"] in targets)
            and not r.get("error") and all((out / f["path"]).is_file() for f in r["files"])]


def _known_targets(out: Path, manifest: dict[str, Any], targets: list[str] | None) -> None:
    built = [a["target"] for a in manifest["artifacts"]]
    unknown = [t for t in targets or [] if t not in built]
    if unknown:
        raise UsageError(f"{out / 'manifest.json'}: has no artifact {unknown[0]} (--targets); it holds "
                         f"{', '.join(built)}")


def _validate_emulated(cpu: str, manifest: dict[str, Any], source: Source, out: Path, options: BuildOptions,
                       reference: Reference, notes: list[str], progress: Callable[[str], None] | None,
                       targets: list[str] | None) -> list[ArtifactEntry]:
    """Each artifact whose runtime runs on `cpu` (an emulated "arm64:MODEL"), judged by its recorded rule there."""
    from distilforge.validate import arm64

    entries = []
    for record in _runnable(manifest, out, targets):
        target = get_target(record["target"])
        if target.format not in arm64.FORMATS:
            notes.append(f"{target.name}: not validated on {cpu}: {arm64.why_not(target.format)}")
            continue
        if progress:
            progress(f"validating {target.name} on {cpu} (emulated)")
        launcher = arm64.launcher(cpu, progress=progress)
        entry = _validate_or_fail(target, ExportedArtifact.from_dict(record), source, out, options, reference,
                                  Tolerance(**record["validation"]["tolerance"]), launcher=launcher)
        if entry.error:
            entry.error = f"[{cpu}] {entry.error}"
        entry.ladder = record.get("ladder")
        entries.append(entry)
    return entries


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


def _eval_drift(record: dict[str, Any] | None, source: Source) -> list[str]:
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
