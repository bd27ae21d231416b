"""Validation: run an artifact on the shape grid, compare with the reference, collect every failure."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact, OutputMetrics, TaskScore, Tolerance, ValidationResult
from distilforge.heads import HeadSpec
from distilforge.validate.compare import check_agreement, check_output, compare_output
from distilforge.validate.inputs import Case, run_case
from distilforge.validate.runners import Runner
from distilforge.validate.scores import score
from distilforge.validate.task import EvalBatch, EvalSet, eval_batches


class Reference:
    """The eager fp32 model's outputs, computed once per case and reused for every artifact."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._outputs: dict[str, dict[str, np.ndarray]] = {}

    def outputs(self, case: Case) -> dict[str, np.ndarray]:
        key = _fingerprint(case)  # by content: two targets' cases may share a name, not their token ids
        if key not in self._outputs:
            self._outputs[key] = run_case(self.runner, case)
        return self._outputs[key]

    def task_score(self, tokenizer: Any, eval_set: EvalSet, max_length: int) -> dict[str, float]:
        """Every metric of the eval set (the gated one first) on the eager model's outputs."""
        batches = eval_batches(tokenizer, eval_set, max_length=max_length)
        return score(eval_set, batches, [self.outputs(b.case) for b in batches])


def _fingerprint(case: Case) -> str:
    digest = hashlib.sha256(f"{case.rows_alone}".encode())
    for name in sorted(case.inputs):
        values = np.ascontiguousarray(case.inputs[name])
        digest.update(f"{name}{values.shape}{values.dtype}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def validate_artifact(artifact: ExportedArtifact, runner: Runner, reference: Reference, cases: list[Case], *,
                      head: HeadSpec, tolerance: Tolerance, precision_class: str,
                      task: tuple[Any, EvalSet, int] | None = None) -> ValidationResult:
    """Compare every output on every case; gather all failures, then report them together.

    `task` is (tokenizer, eval set, max length) when labelled data is available."""
    metrics: list[OutputMetrics] = []
    failures: list[str] = []
    labelled = eval_batches(task[0], task[1], max_length=task[2]) if task else []
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for case in [*cases, *(b.case for b in labelled)]:
        expected = reference.outputs(case)
        actual = outputs[case.name] = run_case(runner, case)
        for spec in head.outputs:
            problem = _shape_problem(artifact.target, case, spec.name, expected, actual)
            if problem:
                failures.append(problem)
                continue
            m = compare_output(case.name, case.shape, spec, expected[spec.name], actual[spec.name], case.mask,
                               texts=case.texts)
            metrics.append(m)
            failures += check_output(artifact.target, m, tolerance)
    for spec in head.outputs:
        failures += check_agreement(artifact.target, spec.name, [m for m in metrics if m.output == spec.name],
                                    tolerance)
    task_score = _task_score(task[1], labelled, reference, outputs) if task else None
    if task_score and tolerance.max_task_drop is not None and task_score.drop > tolerance.max_task_drop:
        failures.append(f"{artifact.target}: {task_score.metric} {task_score.artifact:.2f} is "
                        f"{task_score.drop:.2f} points below the reference's {task_score.reference:.2f} "
                        f"(allowed {tolerance.max_task_drop:g})")
    note = ("validated on its declared shapes " + ", ".join("x".join(map(str, s)) for s in artifact.fixed_shapes)
            if artifact.fixed_shapes else "validated on the dynamic shape grid")
    return ValidationResult(passed=not failures, tolerance=tolerance, precision_class=precision_class,
                            cases=metrics, failures=failures, task=task_score, shapes_note=note)


def _task_score(eval_set: EvalSet, labelled: list[EvalBatch], reference: Reference,
                outputs: dict[str, dict[str, np.ndarray]]) -> TaskScore:
    """Scores of the reference and the artifact from the outputs both gave on the labelled cases."""
    ref = score(eval_set, labelled, [reference.outputs(b.case) for b in labelled])
    art = score(eval_set, labelled, [outputs[b.case.name] for b in labelled])
    extra = {name: {"reference": ref[name], "artifact": art[name]} for name in ref if name != eval_set.metric}
    return TaskScore(metric=eval_set.metric, examples=len(eval_set), reference=ref[eval_set.metric],
                     artifact=art[eval_set.metric], extra=extra)


def _shape_problem(target: str, case: Case, name: str, expected: dict[str, np.ndarray],
                   actual: dict[str, np.ndarray]) -> str | None:
    shape = "x".join(map(str, case.shape))
    if name not in actual:
        return f"{target}: output {name} missing on {case.name} (shape {shape})"
    if actual[name].shape != expected[name].shape:
        return (f"{target}: {name} on {case.name} (shape {shape}) has shape {actual[name].shape}, "
                f"the reference {expected[name].shape}")
    return None
