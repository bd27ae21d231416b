"""One target built: exported into a staging folder and judged there; an INT8 target climbs its ladder of recipes
until one clears its rule with the margin; the kept folder is made deployable and moved into place."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from distilforge.artifacts.folder import add_companions, add_sentence_files, write_card
from distilforge.artifacts.layout import move_into_place, no_space_error, out_of_space, staging_dir
from distilforge.artifacts.manifest import ArtifactEntry
from distilforge.artifacts.records import ExportedArtifact
from distilforge.errors import DistilforgeError, ExportError, first_line
from distilforge.options import BuildOptions
from distilforge.pipeline.judge import failed_entry, judge_elsewhere, validate_or_fail
from distilforge.pipeline.source import Source
from distilforge.progress import Progress
from distilforge.quantize.ladder import (
    PREDICTED_GAIN,
    Attempt,
    QuantizeRun,
    Rung,
    Skipped,
    kept_attempt,
    ladder_record,
    mean_error,
    measured_rungs,
    verdict,
)
from distilforge.quantize.sensitivity import Sensitivity
from distilforge.targets import Target
from distilforge.validate import Reference
from distilforge.validate.runners.isolated import prestart
from distilforge.validate.tolerances import margin_shortfalls


def build_target(target: Target, source: Source, out: Path, options: BuildOptions, reference: Reference,
                 progress: Progress) -> ArtifactEntry:
    """Export into a staging folder and validate it there through its runner; an INT8 target climbs its ladder of
    recipes until one passes its rule with the margin (validate/tolerances.py). The kept one moves into place."""
    rungs, sensitivity = _ladder(target, source, options, progress)
    predict = _predictor(target, source, options, progress)
    attempts: list[Attempt] = []
    skipped: list[Skipped] = []
    try:
        index = 0
        while index < len(rungs):
            rung = rungs[index]
            attempts.append(_attempt(target, source, out, options, reference, progress, rung,
                                     f"{index + 1}/{len(rungs)}"))
            if attempts[-1].clear:
                break
            index = _next_rung(rungs, index, attempts)
            index = _past_unpromising(rungs, index, rung, predict, skipped)
            if index >= len(rungs):
                break
            why = f"; {skipped[-1].say()}" if skipped and skipped[-1].after == rung.name else ""
            progress.note(f"{target.name}: recipe {rung.name} {verdict(attempts[-1])}{why}; "
                          f"trying {rungs[index].name}")
        kept = kept_attempt(attempts)
        if target.ladder:
            kept.entry.ladder = ladder_record(rungs, attempts, kept, sensitivity, skipped)
        if kept.entry.artifact.files:
            finish_folder(target, kept.entry, kept.root / target.folder, source)
            move_into_place(kept.root / target.folder, out / target.folder)
    finally:
        for attempt in attempts:
            shutil.rmtree(attempt.root, ignore_errors=True)
    return kept.entry


def _next_rung(rungs: tuple[Rung | None, ...], index: int, attempts: list[Attempt]) -> int:
    """The next rung to try; past the measured ones when the one just tried did no better (mean cosine error over
    the validation cases) than the recipe before it: the one-group-at-a-time table does not rank what this artifact
    loses (errors of several groups can cancel), and each further measured rung is a whole export and validation."""
    rung, (before, latest) = rungs[index], (attempts[-2:] if len(attempts) > 1 else (None, attempts[-1]))
    if rung is None or not rung.float_layers or before is None or mean_error(latest) < mean_error(before):
        return index + 1
    return _past_measured(rungs, index + 1)


def _past_unpromising(rungs: tuple[Rung | None, ...], index: int, tried: Rung | None,
                      predict: Callable[[tuple[str, ...]], float] | None, skipped: list[Skipped]) -> int:
    """`index`, or past the measured rungs when the eager proxy predicts that rung `index` (a measured one) loses
    no less than PREDICTED_GAIN of what the recipe just tried loses: exporting it would cost a conversion and a
    validation (minutes for ExecuTorch) to confirm a prediction of no progress."""
    if predict is None or tried is None or index >= len(rungs) or not (rungs[index] and rungs[index].float_layers):
        return index
    now, then = predict(tried.float_layers), predict(rungs[index].float_layers)
    if then < PREDICTED_GAIN * now:
        return index
    skipped.append(Skipped(rungs[index].name, tried.name, then, now))
    return _past_measured(rungs, index)


def _past_measured(rungs: tuple[Rung | None, ...], index: int) -> int:
    return next((i for i in range(index, len(rungs)) if not (rungs[i] and rungs[i].float_layers)), len(rungs))


def _predictor(target: Target, source: Source, options: BuildOptions, progress: Progress
               ) -> Callable[[tuple[str, ...]], float] | None:
    """float groups -> the eager proxy's mean cosine error of the target's first recipe with them float; None for
    a format whose rungs cost less to export and judge than to predict (FormatSpec.predicts_rungs)."""
    scheme = target.scheme(options) if target.ladder and target.scheme else None
    if scheme is None or not target.spec.predicts_rungs:
        return None

    def predict(float_groups: tuple[str, ...]) -> float:
        count = f"{len(float_groups)} layer group{'' if len(float_groups) == 1 else 's'}"
        step = f"predicting the recipe with {count} float, in eager"
        return source.predicted_error(scheme, float_groups, lambda: progress.step(target.name, step))

    return predict


def _ladder(target: Target, source: Source, options: BuildOptions, progress: Progress
            ) -> tuple[tuple[Rung | None, ...], Sensitivity | None]:
    """The target's recipes to try, with the measured rungs from its sensitivity table when its format measures."""
    if target.ladder is None:
        return (None,), None
    rungs = target.ladder(options)
    scheme = target.scheme(options) if target.scheme else None
    if scheme is None:
        return rungs, None
    progress.step(target.name, "measuring each layer's INT8 cost")
    sensitivity = source.sensitivity(scheme)
    return measured_rungs(rungs, sensitivity), sensitivity


def finish_folder(target: Target, entry: ArtifactEntry, folder: Path, source: Source, *,
                  companions: bool = True) -> None:
    """Make the folder deployable as it is (artifacts/folder.py): the checkpoint's config and tokenizer beside the
    model (unless already there), then the card; the entry lists every file."""
    files = [f for f in entry.artifact.files if f.role != "card"]
    if companions:
        info = source.ckpt.info
        files = [f for f in files if f.role == "model"] + add_companions(info.model_dir, folder, folder.name)
        if info.sentence:
            files += add_sentence_files(info.path, info.sentence, folder, folder.name)
    entry.artifact.files = files  # what the card lists: every file but itself
    card = write_card(folder, entry.to_dict(), source.record, target.spec.loader)
    entry.artifact.files = files + [card]


def _attempt(target: Target, source: Source, out: Path, options: BuildOptions, reference: Reference,
             progress: Progress, rung: Rung | None, place: str) -> Attempt:
    label = f" (recipe {place}: {rung.name})" if rung is not None else ""
    progress.step(target.name, f"exporting{label}")
    prestart(target.spec.open_runner)  # its runtime imports while the artifact is exported
    root = staging_dir(out, target.folder)
    try:
        entry = _export_and_validate(target, source, root, options, rung, reference,
                                     lambda: progress.step(target.name, f"validating{label}"))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    shortfalls = []
    if rung is not None and entry.passed:  # on this machine and on every emulated CPU it was judged on
        shortfalls = margin_shortfalls(entry.validation) + [
            f"[{v.cpu['spec']}] {line}" for v in entry.elsewhere if v.validation
            for line in margin_shortfalls(v.validation)]
    return Attempt(rung, root, entry, shortfalls)


def _export_and_validate(target: Target, source: Source, root: Path, options: BuildOptions, rung: Rung | None,
                         reference: Reference, validating: Callable[[], None]) -> ArtifactEntry:
    """Export into root/<folder>, then validate from there: the artifact's paths are relative to `root`."""
    folder = root / target.folder
    folder.mkdir()
    try:
        artifact = _rebase(_export(target, source, folder, options, rung), target.folder)
    except ExportError as e:
        _stop_if_out_of_space(root.parent, e, target)
        return failed_entry(target, str(e))
    except DistilforgeError:
        raise
    except Exception as e:  # a converter's own exception: name the target, keep the message to one line
        _stop_if_out_of_space(root.parent, e, target)
        return failed_entry(target, f"{target.name}: export failed: {type(e).__name__}: {first_line(e)}")
    validating()
    entry = validate_or_fail(target, artifact, source, root, options, reference)
    return judge_elsewhere(entry, target, source, root, options, reference) if entry.passed else entry


def _export(target: Target, source: Source, folder: Path, options: BuildOptions, rung: Rung | None) -> ExportedArtifact:
    if target.ladder is None and not target.calibrated:
        return target.export(source.ckpt, folder, options)
    run = QuantizeRun(rung.recipe if rung else None, source.calibration if target.calibrated else None,
                      rung.float_layers if rung else ())
    return target.export(source.ckpt, folder, options, run)


def _stop_if_out_of_space(out: Path, error: BaseException, target: Target) -> None:
    """A full disk is not this target's failure: every later write fails too. Stop the build."""
    reason = out_of_space(out, error)
    if reason is not None:
        raise no_space_error(out, reason, f"for {target.name}") from None


def _rebase(artifact: ExportedArtifact, folder: str) -> ExportedArtifact:
    """Exporters record paths inside their folder; the manifest records them from the output root."""
    artifact.files = [replace(f, path=f"{folder}/{f.path}") for f in artifact.files]
    return artifact
