"""Task metrics on labelled data. The labelled texts are also validation cases: every artifact's
outputs on them are compared with the reference's (agreement over many real decisions), and the
metric is computed from those same outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilforge.validate.inputs import Case, tokenize

EVAL_BATCH = 16


@dataclass(frozen=True)
class EvalSet:
    """Labelled texts for a single-label classifier; scores are in points (percent)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    source: str
    metric: str = "accuracy"


def eval_cases(tokenizer: Any, eval_set: EvalSet, *, max_length: int) -> list[Case]:
    """The labelled texts in batches, padded to each batch's longest (cut at max_length)."""
    cases = []
    for start in range(0, len(eval_set.texts), EVAL_BATCH):
        chunk = eval_set.texts[start:start + EVAL_BATCH]
        inputs = tokenize(tokenizer, "text-classification", chunk, rows=len(chunk), max_length=max_length,
                          pad_to_max=False)
        shape = "x".join(map(str, inputs["input_ids"].shape))
        cases.append(Case(f"eval {start + 1}-{start + len(chunk)} {shape}", inputs))
    return cases


def score(eval_set: EvalSet, outputs: Sequence[dict[str, np.ndarray]]) -> float:
    """The metric, in points, from the outputs on `eval_cases` (in order)."""
    predicted = np.concatenate([o["logits"].argmax(-1) for o in outputs])
    return float(np.mean(predicted == np.asarray(eval_set.labels)) * 100.0)
