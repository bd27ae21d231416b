"""Task metrics on labelled data, computed through runners like every other figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from distilforge.validate.inputs import tokenize
from distilforge.validate.runners import Runner

EVAL_BATCH = 16


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts for a single-label classifier; scores are in points (percent)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    source: str
    metric: str = "accuracy"


def predict_classes(runner: Runner, tokenizer: Any, texts: tuple[str, ...], *, max_length: int) -> np.ndarray:
    predicted = []
    for start in range(0, len(texts), EVAL_BATCH):
        chunk = texts[start:start + EVAL_BATCH]
        inputs = tokenize(tokenizer, "text-classification", chunk, rows=len(chunk), max_length=max_length,
                          pad_to_max=False)
        predicted.append(runner.run(inputs)["logits"].argmax(-1))
    return np.concatenate(predicted)


def score(runner: Runner, tokenizer: Any, eval_set: EvalSet, *, max_length: int) -> float:
    predicted = predict_classes(runner, tokenizer, eval_set.texts, max_length=max_length)
    return float(np.mean(predicted == np.asarray(eval_set.labels)) * 100.0)
