"""What a head's outputs mean, for one input: the label, the entities, the answer span, the choice, the top tokens.

Each decoder takes the numpy outputs of one row (batch axis removed) and what the tokenizer said about that row
(`Encoded`), and returns a plain dict; `describe` turns it into the line `distilforge predict` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TOP_TOKENS = 5  # fill-mask: how many candidates per [MASK]
MAX_ANSWER_TOKENS = 30  # QA: the longest span considered, as transformers' pipeline does


@dataclass
class Encoded:
    """One tokenized row: its ids, kept length, and each token's character span in its text."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]  # [CLS], [SEP], padding
    sequence_ids: list[int | None]  # for pairs: 0 question, 1 context
    word_ids: list[int | None]  # the word of the text each token is part of
    truncated: bool = False


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def label_name(labels: dict[str, str] | None, index: int) -> str:
    return (labels or {}).get(str(index), f"LABEL_{index}")


def classification(logits: np.ndarray, labels: dict[str, str] | None, problem_type: str | None) -> dict[str, Any]:
    """Single-label: the top label and its softmax score. Multi-label: every label whose logit is above 0 (sigmoid
    above 0.5). Regression: the value."""
    if problem_type == "regression":
        return {"value": float(logits[0])}
    if problem_type == "multi_label_classification":
        scores = sigmoid(logits)
        chosen = [i for i in np.argsort(-logits) if logits[i] > 0]
        return {"labels": [{"label": label_name(labels, int(i)), "score": float(scores[i])} for i in chosen]}
    probs = softmax(logits)
    top = int(np.argmax(logits))
    return {"label": label_name(labels, top), "score": float(probs[top])}


def token_classification(logits: np.ndarray, labels: dict[str, str] | None, row: Encoded) -> dict[str, Any]:
    """Entities grouped as transformers' pipeline does ("simple"): adjacent tokens of one entity type, B-/I-
    prefixes joined (a B- starts a new one), the words cut from the text, the mean score. "O" is not an entity."""
    probs = softmax(logits)
    entities: list[dict[str, Any]] = []
    for i, (start, end) in enumerate(row.offsets):
        index = int(np.argmax(logits[i]))
        name = label_name(labels, index)
        if row.special[i] or start == end or name == "O":
            continue
        kind = name[2:] if name[:2] in ("B-", "I-") else name
        last = entities[-1] if entities else None
        if last is not None and last["entity"] == kind and last["_next"] == i and not name.startswith("B-"):
            last["end"], last["_next"] = end, i + 1
            last["_scores"].append(float(probs[i, index]))
        else:
            entities.append({"entity": kind, "start": start, "end": end, "_next": i + 1,
                             "_scores": [float(probs[i, index])]})
    return {"entities": [{"entity": e["entity"], "word": row.text[e["start"]:e["end"]], "start": e["start"],
                          "end": e["end"], "score": float(np.mean(e["_scores"]))} for e in entities]}


def question_answering(start_logits: np.ndarray, end_logits: np.ndarray, row: Encoded) -> dict[str, Any]:
    """The best context span (start <= end, at most MAX_ANSWER_TOKENS), scored as start prob x end prob."""
    context = [i for i, s in enumerate(row.sequence_ids) if s == 1 and not row.special[i]]
    if not context:
        return {"answer": "", "start": 0, "end": 0, "score": 0.0}
    starts, ends = softmax(start_logits[context]), softmax(end_logits[context])
    scores = np.triu(np.outer(starts, ends)) - np.triu(np.outer(starts, ends), k=MAX_ANSWER_TOKENS)
    a, b = np.unravel_index(int(np.argmax(scores)), scores.shape)
    start, end = _word_span(row, context, context[a])[0], _word_span(row, context, context[b])[1]
    return {"answer": row.text[start:end], "start": start, "end": end, "score": float(scores[a, b])}


def _word_span(row: Encoded, context: list[int], token: int) -> tuple[int, int]:
    """The characters of the whole word a token is part of (an answer never starts or ends inside a word, as in
    transformers' pipeline)."""
    pieces = [row.offsets[i] for i in context if row.word_ids[i] == row.word_ids[token]]
    return min(p[0] for p in pieces), max(p[1] for p in pieces)


def multiple_choice(logits: np.ndarray, choices: list[str]) -> dict[str, Any]:
    probs = softmax(logits)
    best = int(np.argmax(logits))
    return {"choice": best, "text": choices[best], "score": float(probs[best]),
            "scores": [float(p) for p in probs]}


def fill_mask(logits: np.ndarray, row: Encoded, mask_id: int, vocab: dict[int, str]) -> dict[str, Any]:
    masks = [i for i, t in enumerate(row.ids) if t == mask_id]
    out = []
    for i in masks:
        probs = softmax(logits[i])
        top = np.argsort(-probs)[:TOP_TOKENS]
        out.append({"position": i, "top": [{"token": vocab.get(int(t), str(int(t))), "score": float(probs[t])}
                                           for t in top]})
    return {"masks": out}


def embedding(hidden: np.ndarray, row: Encoded) -> dict[str, Any]:
    """last_hidden_state of the kept tokens: its shape, the norm of the [CLS] vector and of the mean over tokens."""
    kept = hidden[:len(row.ids)]
    return {"shape": list(kept.shape), "cls_norm": float(np.linalg.norm(kept[0])),
            "mean_norm": float(np.linalg.norm(kept.mean(axis=0)))}


def sentence_embedding(vector: np.ndarray) -> dict[str, Any]:
    """A sentence-transformers model's embedding of one text: its size, its L2 norm (1 when the model
    normalizes), and the vector itself."""
    return {"dimension": int(vector.shape[-1]), "norm": float(np.linalg.norm(vector.astype(np.float64))),
            "embedding": [float(x) for x in vector]}


def similarity(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The cosine similarity of two texts' embeddings (results of sentence_embedding)."""
    a, b = np.asarray(first["embedding"], dtype=np.float64), np.asarray(second["embedding"], dtype=np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return {"text": f"{first['text']} | {second['text']}", "texts": [first["text"], second["text"]],
            "cosine": float(a @ b / norms) if norms else 0.0}


def describe(task: str, result: dict[str, Any]) -> str:
    """The one line `distilforge predict` prints for a result."""
    if "cosine" in result:
        return f"cosine {result['cosine']:.4f}"
    if "embedding" in result:
        return f"sentence_embedding {result['dimension']} dims, norm {result['norm']:.4f}"
    if "value" in result:
        return f"{result['value']:.4f}"
    if "labels" in result:
        return ", ".join(f"{x['label']} {x['score']:.3f}" for x in result["labels"]) or "(no label above 0.5)"
    if "label" in result:
        return f"{result['label']} {result['score']:.3f}"
    if "entities" in result:
        return "; ".join(f"{e['word']!r} {e['entity']} {e['score']:.3f}" for e in result["entities"]) or "(none)"
    if "answer" in result:
        return f"{result['answer']!r} {result['score']:.3f}"
    if "choice" in result:
        return f"choice {result['choice']}: {result['text']!r} {result['score']:.3f}"
    if "masks" in result:
        return "; ".join("[MASK] -> " + ", ".join(f"{t['token']} {t['score']:.3f}" for t in m["top"])
                         for m in result["masks"])
    if "shape" in result:
        return (f"last_hidden_state {'x'.join(map(str, result['shape']))}, [CLS] norm {result['cls_norm']:.3f}, "
                f"mean norm {result['mean_norm']:.3f}")
    raise ValueError(f"{task}: nothing to describe in {sorted(result)}")
