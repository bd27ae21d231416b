"""Scoring labelled examples: every metric of an eval set's kind, the gated one first, from the outputs on its
batches (task.py reads the set and encodes the batches); `best_span`, the answer a QA head's logits point at."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilforge.validate import metrics
from distilforge.validate.task import EvalBatch, EvalSet

MAX_ANSWER_TOKENS = 30  # longest answer span considered, in tokens (as in Hugging Face's QA examples)


def score(eval_set: EvalSet, batches: Sequence[EvalBatch], outputs: Sequence[dict[str, np.ndarray]]
          ) -> dict[str, float]:
    """Every metric of the set's kind, the gated one first, from the outputs on `batches` (in order)."""
    return _SCORERS[eval_set.kind](eval_set, batches, outputs)


def _logits(outputs: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([o["logits"] for o in outputs])


def _score_single(eval_set: EvalSet, _batches: Sequence[EvalBatch], outputs: Sequence[dict]) -> dict[str, float]:
    predicted = _logits(outputs).argmax(-1)
    return {"accuracy": metrics.accuracy(eval_set.labels, predicted),
            "macro_f1": metrics.macro_f1(eval_set.labels, predicted)}


def _score_multi(eval_set: EvalSet, _batches: Sequence[EvalBatch], outputs: Sequence[dict]) -> dict[str, float]:
    predicted = (_logits(outputs) > 0).astype(np.int64)  # sigmoid > 0.5
    gold = np.zeros_like(predicted)
    for row, ids in enumerate(eval_set.labels):
        gold[row, list(ids)] = 1
    return {"micro_f1": metrics.micro_f1_multilabel(gold, predicted),
            "macro_f1": metrics.micro_f1_multilabel(gold, predicted, average="macro")}


def _score_regression(eval_set: EvalSet, _batches: Sequence[EvalBatch], outputs: Sequence[dict]
                      ) -> dict[str, float]:
    predicted = _logits(outputs)[:, 0]
    return {"pearson": metrics.pearson(eval_set.labels, predicted), "mse": metrics.mse(eval_set.labels, predicted)}


def _score_token(eval_set: EvalSet, batches: Sequence[EvalBatch], outputs: Sequence[dict]) -> dict[str, float]:
    predicted = []
    for batch, out in zip(batches, outputs, strict=True):
        classes = out["logits"].argmax(-1)
        for row, firsts in enumerate(batch.align):
            predicted.append([eval_set.label_names[classes[row, p]] if p >= 0 else "O" for p in firsts])
    return metrics.entity_scores(eval_set.labels, predicted)


def _score_qa(eval_set: EvalSet, batches: Sequence[EvalBatch], outputs: Sequence[dict]) -> dict[str, float]:
    exact, f1 = [], []
    for batch, out in zip(batches, outputs, strict=True):
        mask = batch.case.mask
        for row, (in_context, offsets) in enumerate(batch.align):
            context, gold = eval_set.inputs[batch.start + row][1], eval_set.labels[batch.start + row]
            span = best_span(out["start_logits"][row], out["end_logits"][row], in_context & (mask[row] == 1))
            answer = context[offsets[span[0]][0]:offsets[span[1]][1]] if span else ""
            exact.append(metrics.squad_exact(gold, answer))
            f1.append(metrics.squad_f1(gold, answer))
    return {"f1": float(np.mean(f1)), "exact_match": float(np.mean(exact))}


def best_span(start: np.ndarray, end: np.ndarray, allowed: np.ndarray,
              max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[int, int] | None:
    """The (start, end) token positions with the highest start + end logit, both in `allowed`,
    end >= start, at most `max_tokens` long; None when no position is allowed."""
    positions = np.flatnonzero(allowed)
    if not positions.size:
        return None
    length = positions[None, :] - positions[:, None]
    scores = np.where((length >= 0) & (length < max_tokens),
                      start[positions][:, None].astype(np.float64) + end[positions][None, :], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(positions[i]), int(positions[j])


def _score_choice(eval_set: EvalSet, _batches: Sequence[EvalBatch], outputs: Sequence[dict]) -> dict[str, float]:
    predicted = [int(i) for o in outputs for i in o["logits"].argmax(-1)]
    return {"accuracy": metrics.accuracy(eval_set.labels, predicted)}


def _score_similarity(eval_set: EvalSet, _batches: Sequence[EvalBatch], outputs: Sequence[dict]
                      ) -> dict[str, float]:
    """The cosine of each pair's embeddings against its gold score, as sentence-transformers'
    EmbeddingSimilarityEvaluator ranks them."""
    embeddings = np.concatenate([o["sentence_embedding"] for o in outputs]).astype(np.float64)
    first, second = embeddings[0::2], embeddings[1::2]
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    cosine = (first * second).sum(axis=1) / np.where(norms == 0, 1.0, norms)
    return {"spearman": metrics.spearman(eval_set.labels, cosine), "pearson": metrics.pearson(eval_set.labels, cosine)}


_SCORERS = {"single_label": _score_single, "multi_label": _score_multi, "regression": _score_regression,
            "token": _score_token, "qa": _score_qa, "multiple_choice": _score_choice,
            "similarity": _score_similarity}
