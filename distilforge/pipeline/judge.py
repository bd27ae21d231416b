"""One artifact judged: run through its runner (in a child process, here or on an emulated CPU) and compared with the
reference by its precision class's rule; the manifest entry that says so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from distilforge.artifacts.manifest import ArtifactEntry, Verdict
from distilforge.artifacts.records import ExportedArtifact, Tolerance
from distilforge.checkpoint import CheckpointInfo
from distilforge.errors import DistilforgeError, first_line
from distilforge.options import BuildOptions
from distilforge.pipeline.source import Source
from distilforge.targets import Target, arm64_formats
from distilforge.validate import Reference, validate_artifact
from distilforge.validate.inputs import TOP_UP_BATCH, decisions, validation_cases
from distilforge.validate.runners.isolated import IsolatedRunner, Launcher, RunnerError, RuntimeCrash
from distilforge.validate.task import eval_batches
from distilforge.validate.tolerances import precision_class

AsUsed = Callable[[IsolatedRunner], list[str]]

EMULATED_SEQUENCE = 128  # the longest sequence validated on an emulated CPU (validate_entry)


def judge_elsewhere(entry: ArtifactEntry, target: Target, source: Source, out: Path, options: BuildOptions,
                     reference: Reference) -> ArtifactEntry:
    """`--validate-on`: the artifact judged on each emulated CPU too. A failure there fails the artifact (and
    climbs an INT8 ladder) as one here does; a format whose runtime cannot run there is recorded as not run."""
    from distilforge.validate import arm64

    for cpu in options.validate_on:
        if not target.spec.arm64.runnable:
            entry.elsewhere.append(Verdict(cpu={"spec": cpu}, not_run=target.spec.arm64.why_not))
            continue
        other = validate_or_fail(target, entry.artifact, source, out, options, reference,
                                  launcher=arm64.launcher(cpu, arm64_formats()))
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


def validate_or_fail(target: Target, artifact: ExportedArtifact, source: Source, out: Path, options: BuildOptions,
                      reference: Reference, tolerance: Tolerance | None = None, *,
                      launcher: Launcher | None = None, as_used: AsUsed | None = None) -> ArtifactEntry:
    try:
        return validate_entry(target, artifact, source, out, options, reference, tolerance, launcher=launcher,
                              as_used=as_used)
    except DistilforgeError:
        raise
    except Exception as e:  # the runtime could not load or run the artifact (or crashed): only that target fails
        detail = first_line(e) if isinstance(e, (RuntimeCrash, RunnerError)) else f"{type(e).__name__}: {first_line(e)}"
        entry = failed_entry(target, f"{target.name}: running it failed: {detail}")
        entry.artifact = artifact
        return entry


def validate_entry(target: Target, artifact: ExportedArtifact, source: Source, out: Path, options: BuildOptions,
                   reference: Reference, tolerance: Tolerance | None = None, *,
                   launcher: Launcher | None = None, as_used: AsUsed | None = None) -> ArtifactEntry:
    """Judge `artifact` by its class's rule, and with `as_used` (given the open runner: problem lines) the folder
    as its users run it (pipeline/as_used.py) on the same runner. Under an emulated CPU (`launcher`, 100-400x
    slower) sequences are cut to EMULATED_SEQUENCE (the grid's longest row is 3 x 128, not 3 x the model's
    maximum); every other case, the labelled eval set included, is the host's. (Leaving the eval set out for speed
    made the verdict another one:
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
                                   precision_class=klass, task=task,
                                   batching=target.precision == "int8-dynamic" and launcher is None)
        problems = as_used(runner) if as_used else []
    if problems:
        result = replace(result, passed=False, failures=result.failures + problems)
    return ArtifactEntry(artifact=artifact, validation=result, format=target.format, precision=target.precision,
                         runtime=target.runtime, not_reproducible=target.not_reproducible,
                         reproducible_caveat=target.reproducible_caveat, validated_on=runner.cpu)


def emulated_bound(info: CheckpointInfo) -> tuple[int, ...]:
    """The largest input validated under emulation: (batch, [choices,] EMULATED_SEQUENCE)."""
    return (TOP_UP_BATCH, 4, EMULATED_SEQUENCE) if info.head.multiple_choice else (TOP_UP_BATCH, EMULATED_SEQUENCE)


def _longest_input(artifact: ExportedArtifact, max_length: int) -> int:
    """Labelled texts are truncated to what the artifact takes, as they would be in deployment."""
    return min(max_length, artifact.longest_sequence or max_length)


def failed_entry(target: Target, message: str) -> ArtifactEntry:
    empty = ExportedArtifact(target=target.name, files=[], inputs=[], outputs=[])
    return ArtifactEntry(artifact=empty, validation=None, format=target.format, precision=target.precision,
                         runtime=target.runtime, error=message, not_reproducible=target.not_reproducible,
                         reproducible_caveat=target.reproducible_caveat)
