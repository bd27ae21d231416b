"""Task metrics on predictions, independent of any model. Every score is in points (0-100) except MSE.

Library code where a well-kept one exists (scikit-learn for F1 and MSE, seqeval for entities); the SQuAD
answer normalization is the official v1.1 evaluation script's, restated here (no package ships it alone).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    return float(np.mean(np.asarray(gold) == np.asarray(predicted)) * 100.0)


def macro_f1(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes seen in gold or predictions."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, average="macro", zero_division=0) * 100.0)


def micro_f1_multilabel(gold: np.ndarray, predicted: np.ndarray, *, average: str = "micro") -> float:
    """F1 over every (example, label) decision; both are 0/1 indicator arrays (examples, labels)."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, average=average, zero_division=0) * 100.0)


def pearson(gold: Sequence[float], predicted: Sequence[float]) -> float:
    """Pearson's r in points. Constant predictions carry no linear relation: 0, not NaN (NaN would
    compare as "no drop" and pass any gate)."""
    gold_a, pred_a = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if np.ptp(gold_a) == 0 or np.ptp(pred_a) == 0:
        return 0.0
    return float(np.corrcoef(gold_a, pred_a)[0, 1] * 100.0)


def spearman(gold: Sequence[float], predicted: Sequence[float]) -> float:
    """Spearman's rank correlation in points (the STS benchmark's figure); constant input: 0, as pearson."""
    from scipy.stats import spearmanr

    gold_a, pred_a = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if np.ptp(gold_a) == 0 or np.ptp(pred_a) == 0:
        return 0.0
    return float(spearmanr(gold_a, pred_a).statistic * 100.0)


def mse(gold: Sequence[float], predicted: Sequence[float]) -> float:
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)))


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """seqeval's entity-level F1, precision and recall (an entity counts only if its type and both ends
    match), default (conlleval) mode, as Hugging Face's token-classification examples report them."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold_l, pred_l = [list(g) for g in gold], [list(p) for p in predicted]
    return {name: float(fn(gold_l, pred_l, zero_division=0) * 100.0)
            for name, fn in (("entity_f1", f1_score), ("entity_precision", precision_score),
                             ("entity_recall", recall_score))}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1: lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact(gold: str, predicted: str) -> float:
    return 100.0 if normalize_answer(gold) == normalize_answer(predicted) else 0.0


def squad_f1(gold: str, predicted: str) -> float:
    """Token-overlap F1 of the normalized answers, in points."""
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
    common = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 200.0 * precision * recall / (precision + recall)
