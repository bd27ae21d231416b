"""Validation: run an artifact on the shape grid, compare with the reference, collect every failure."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np

from distilforge.artifacts.records import ExportedArtifact, OutputMetrics, TaskScore, Tolerance, ValidationResult
from distilforge.heads import HeadSpec
from distilforge.validate.compare import agreeing_decisions, check_agreement, check_output, compare_output
from distilforge.validate.embedding import check_pair_spearman, embedding_record
from distilforge.validate.inputs import NEIGHBOUR_MIN_ROWS, Case, run_case
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
                      task: tuple[Any, EvalSet, int] | None = None, batching: bool = False) -> ValidationResult:
    """Compare every output on every case; gather all failures, then report them together.

    `task` is (tokenizer, eval set, max length) when labelled data is available. `batching`: also measure how many
    of the artifact's own decisions on real text change between running each text alone and in a padded batch
    (`batch_dependence`)."""
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
    texts = [c for c in [*cases, *(b.case for b in labelled)] if c.texts]
    embeddings = {spec.name: embedding_record([(reference.outputs(c)[spec.name], outputs[c.name][spec.name])
                                               for c in texts if c.shape[0] >= NEIGHBOUR_MIN_ROWS
                                               and spec.name in outputs[c.name]])
                  for spec in head.outputs if spec.agreement == "neighbour"}
    failures += [line for name, record in embeddings.items() if record
                 for line in check_pair_spearman(artifact.target, name, record, tolerance)]
    return ValidationResult(passed=not failures, tolerance=tolerance, precision_class=precision_class,
                            cases=metrics, failures=failures, task=task_score, shapes_note=note,
                            batch_dependence=batch_dependence(runner, head, texts, outputs,
                                                              _max_rows(artifact)) if batching else None,
                            embedding={k: v for k, v in embeddings.items() if v} or None)


def batch_dependence(runner: Runner, head: HeadSpec, cases: list[Case], outputs: dict[str, dict[str, np.ndarray]],
                     max_rows: int | None = None) -> dict[str, Any]:
    """How many of the artifact's decisions on real text differ between each text run alone (as a pipeline runs it)
    and the same texts run together as one padded batch (as a server's dynamic batching runs strangers' requests):
    ONNX Runtime's dynamic INT8 takes one activation scale over the whole batch, padding included. An artifact with a
    batch bound (ExecuTorch) gets batches of at most `max_rows`, as a server batching for it would."""
    decisions = changed = rows = 0
    sequences = tuple(spec.name for spec in head.outputs if spec.per_token)  # padded back to the batch's length
    for case in cases:
        other = _batched(runner, case, max_rows) if case.rows_alone else \
            run_case(runner, replace(case, rows_alone=True, per_token=sequences))
        alone, batched = (outputs[case.name], other) if case.rows_alone else (other, outputs[case.name])
        rows += case.shape[0]
        for spec in [s for s in head.outputs if s.name in alone and s.name in batched]:
            same = agreeing_decisions(spec, alone[spec.name], batched[spec.name], case.mask, case.texts)
            if same is not None:
                decisions += same.size
                changed += int((~same).sum())
    batch = max((c.shape[0] for c in cases), default=0)
    return {"texts": rows, "batch": min(batch, max_rows or batch), "decisions": decisions, "changed": changed}


def _batched(runner: Runner, case: Case, max_rows: int | None) -> dict[str, np.ndarray]:
    """The case's rows run as padded batches of at most `max_rows` (all of them at once without a bound)."""
    step = max_rows or case.shape[0]
    parts = [runner.run({k: np.ascontiguousarray(v[i:i + step]) for k, v in case.inputs.items()})
             for i in range(0, case.shape[0], step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _max_rows(artifact: ExportedArtifact) -> int | None:
    """The largest batch the artifact runs at once: its bound (ExecuTorch), its largest fixed shape's (TFLite)."""
    if artifact.fixed_shapes:
        return max(shape[0] for shape in artifact.fixed_shapes)
    return artifact.max_shape[0] if artifact.max_shape else None


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
