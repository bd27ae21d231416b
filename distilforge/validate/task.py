"""Task metrics on labelled data. The labelled examples are also validation cases: every artifact's
outputs on them are compared with the reference's (agreement over many real decisions), and the
metrics are computed from those same outputs.

One kind of labelled data per head (the `--eval FILE` formats, .jsonl or .csv):

| kind            | fields                                   | metrics (the gated one first)         |
| single_label    | text, label (id or id2label name)        | accuracy, macro_f1                    |
| multi_label     | text, labels (list; csv: `a|b`)          | micro_f1, macro_f1                    |
| regression      | text, label (number)                     | pearson (x100), mse                   |
| token           | tokens, tags (lists, IOB2; csv: spaces)  | entity_f1, entity_precision, _recall  |
| qa              | question, context, answer (in context)   | f1, exact_match (SQuAD normalization) |
| multiple_choice | prompt, choices (list; csv: `a|b`), label| accuracy                              |
| similarity      | sentence1, sentence2, score (number)     | spearman, pearson (x100, of the cosine)|

Here: reading and checking the file (`load_eval_set`) and encoding it into validation cases (`eval_batches`);
scores.py computes the metrics from the outputs on those cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distilforge.artifacts.hashing import sha256_file
from distilforge.errors import DataFileError, UsageError
from distilforge.heads import HeadSpec
from distilforge.textdata import numbered_rows
from distilforge.validate.inputs import Case, tokenize

if TYPE_CHECKING:
    from distilforge.checkpoint import CheckpointInfo

# Labelled examples are compared in cases of EVAL_BATCH, but each is run by itself, unpadded (Case.rows_alone), as
# transformers' pipelines and `distilforge predict` run them: dynamic INT8 (ONNX Runtime's DynamicQuantizeLinear)
# takes one activation scale over the whole batch, padding rows included, so run in a batch of 16 a text's label
# can depend on its neighbours (measured on the default model: one held-out text was "finance" like eager's in a
# batch of 16 and "sports" alone).
EVAL_BATCH = 16
PER_TOKEN = {"token": ("logits",), "qa": ("start_logits", "end_logits"),  # outputs with a sequence axis
             "similarity": ("last_hidden_state",)}
CSV_LIST_SEPARATOR = "|"  # csv: labels and choices; tokens and tags are separated by whitespace

GATED = {"single_label": "accuracy", "multi_label": "micro_f1", "regression": "pearson", "token": "entity_f1",
         "qa": "f1", "multiple_choice": "accuracy", "similarity": "spearman"}


def eval_kind(head: HeadSpec) -> str | None:
    """The kind of labelled data a head is scored on; None for heads without labels."""
    if head.task == "text-classification":
        return {"single_label_classification": "single_label", "multi_label_classification": "multi_label",
                "regression": "regression"}[head.problem_type or "single_label_classification"]
    return {"token-classification": "token", "question-answering": "qa",
            "multiple-choice": "multiple_choice", "sentence-similarity": "similarity"}.get(head.task)


@dataclass(frozen=True)
class EvalSet:
    """Labelled examples for one head; scores in points (0-100), MSE excepted.

    `inputs` per example: (text,), (words,), (question, context) or (prompt, choices).
    `labels` per example: a class id, a tuple of ids, a float, a tuple of tag names, the answer text,
    or the right choice's index."""

    inputs: tuple[tuple[Any, ...], ...]
    labels: tuple[Any, ...]
    source: str
    kind: str = "single_label"
    sha256: str = ""
    path: str | None = None  # the user's file, absolute (re-validation reads it again); None: built-in data
    label_names: tuple[str, ...] = ()  # class id -> name (token tags are predicted by name)

    @property
    def metric(self) -> str:
        return GATED[self.kind]

    def __len__(self) -> int:
        return len(self.labels)

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "examples": len(self), "sha256": self.sha256,
                "kind": self.kind, "metric": self.metric}


def check_eval_head(head: HeadSpec, path: str | Path) -> str:
    """The eval kind for this head; a usage error for heads that have nothing to score."""
    kind = eval_kind(head)
    if kind is None:
        raise UsageError(f"--eval {path}: {head.architecture} has no labels to score (--eval needs a "
                         "classification, regression, token-classification, QA or multiple-choice head, or a "
                         "sentence-transformers model)")
    return kind


def load_eval_set(path: str | Path, info: CheckpointInfo, tokenizer: Any) -> EvalSet:
    """Read and check a labelled file completely, before anything is built or written."""
    given = str(path)
    path = Path(path)
    kind = check_eval_head(info.head, path)
    if path.suffix.lower() == ".txt":
        raise DataFileError(f"{path}: evaluation data needs labels: use .jsonl or .csv")
    if tokenizer is None:
        raise DataFileError(f"{path}: evaluation data needs the checkpoint's tokenizer, and it has none")
    if kind in ("token", "qa") and not getattr(tokenizer, "is_fast", False):
        raise DataFileError(f"{path}: {kind} evaluation needs a fast tokenizer (word ids, offsets); "
                            "the checkpoint's is a slow one")
    rows = numbered_rows(path)
    parse = _PARSERS[kind]
    names = _label_names(info.config) if kind in ("single_label", "multi_label", "token") else ()
    examples = [parse(_Row(path, line, row), names) for line, row in rows]
    if kind in ("regression", "similarity") and len({label for _, label in examples}) < 2:
        raise DataFileError(f"{path}: every label is the same value; Pearson correlation is undefined")
    return EvalSet(inputs=tuple(i for i, _ in examples), labels=tuple(label for _, label in examples),
                   source=given, kind=kind, sha256=sha256_file(path), path=str(path.resolve()), label_names=names)


def _label_names(config: dict[str, Any]) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    if id2label:
        return tuple(str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label)))
    return tuple(f"LABEL_{i}" for i in range(int(config.get("num_labels", 2))))


class _Row:
    """One row of the file, with the place an error must name."""

    def __init__(self, path: Path, line: int, values: dict[str, Any]) -> None:
        self.path, self.line, self.values = path, line, values
        self.csv = path.suffix.lower() == ".csv"

    def error(self, problem: str) -> DataFileError:
        return DataFileError(f"{self.path}:{self.line}: {problem}")

    def get(self, name: str) -> Any:
        if self.values.get(name) is None:
            have = ", ".join(sorted(str(k) for k in self.values if k is not None)) or "none"
            raise self.error(f"missing field {name!r} (has: {have})")
        return self.values[name]

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self.error(f"{name!r} must be text, got {type(value).__name__}")
        if not value.strip():
            raise self.error(f"{name!r} is empty")
        return value

    def texts(self, name: str, separator: str | None) -> list[str]:
        """A list of non-empty strings: a JSON list, or in csv one cell split on `separator` (None: spaces)."""
        value = self.get(name)
        if self.csv:
            value = value.split(separator) if value.strip() else []
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(f"{name!r} must be a list of non-empty strings")
        return [v.strip() for v in value]

    def label_id(self, value: Any, names: Sequence[str], name: str = "label") -> int:
        """A class id from an int id or a label name of config.json's id2label (csv: either, as text)."""
        if isinstance(value, str) and value.strip() in names:
            return names.index(value.strip())
        if isinstance(value, str):
            value = _int_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(f"{name} {_short(value)} must be a class id (int) or a label name, "
                             f"not {type(value).__name__}")
        if isinstance(value, str) or not 0 <= value < len(names):
            raise self.error(f"{name} {_short(value)} is not in id2label (ids 0-{len(names) - 1}; names: "
                             f"{_shorten(names)})")
        return value

    def choice(self, count: int) -> int:
        value = self.get("label")
        if isinstance(value, str):
            value = _int_text(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            raise self.error(f"label {_short(value)} must be the index of the right choice (0-{count - 1})")
        return value


def _int_text(text: str) -> int | str:
    """'2' or ' -1 ' as an int; anything else (a name, '²', 5000 digits) stays text. str.isdigit() is not
    enough: '²' is a digit to it and not to int()."""
    stripped = text.strip()
    return int(stripped) if re.fullmatch(r"-?[0-9]{1,18}", stripped) else text

def _shorten(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _single_label(row: _Row, names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    return (row.text("text"),), row.label_id(row.get("label"), names)


def _multi_label(row: _Row, names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    value = row.get("labels")
    if row.csv:
        value = [v for v in value.split(CSV_LIST_SEPARATOR) if v.strip()]
    if not isinstance(value, list):
        raise row.error(f"'labels' must be a list of class ids or names, got {type(value).__name__}")
    return (row.text("text"),), tuple(sorted({row.label_id(v, names, "labels entry") for v in value}))


def _regression(row: _Row, _names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    return (row.text("text"),), _number(row, "label")


def _similarity(row: _Row, _names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    return (row.text("sentence1"), row.text("sentence2")), _number(row, "score")


def _number(row: _Row, name: str) -> float:
    value = row.get(name)
    if row.csv:
        try:
            value = float(value)
        except ValueError:
            raise row.error(f"{name} {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(_as_float(value)):
        raise row.error(f"{name} {_short(value)} must be a finite number")
    return float(value)


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond a double's range
        return float("inf")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _token(row: _Row, names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    words, tags = row.texts("tokens", None), row.get("tags")
    if row.csv:
        tags = tags.split()
    if not words:
        raise row.error("'tokens' is empty")
    if not isinstance(tags, list):
        raise row.error(f"'tags' must be a list of label names, got {type(tags).__name__}")
    if len(tags) != len(words):
        raise row.error(f"{len(tags)} tags for {len(words)} tokens")
    return (tuple(words),), tuple(names[row.label_id(t, names, "tag")] for t in tags)


def _qa(row: _Row, _names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    question, context, answer = row.text("question"), row.text("context"), row.text("answer")
    if answer not in context:
        raise row.error(f"answer {answer!r} not found in its context")
    return (question, context), answer


def _multiple_choice(row: _Row, _names: Sequence[str]) -> tuple[tuple[Any, ...], Any]:
    prompt, choices = row.text("prompt"), row.texts("choices", CSV_LIST_SEPARATOR)
    if len(choices) < 2:
        raise row.error(f"'choices' has {len(choices)} entries; at least 2 are needed")
    return (prompt, tuple(choices)), row.choice(len(choices))


_PARSERS: dict[str, Callable[[_Row, Sequence[str]], tuple[tuple[Any, ...], Any]]] = {
    "single_label": _single_label, "multi_label": _multi_label, "regression": _regression, "token": _token,
    "qa": _qa, "multiple_choice": _multiple_choice, "similarity": _similarity}


@dataclass(frozen=True)
class EvalBatch:
    """One validation case of labelled examples, and per example what scoring needs to read its
    outputs: token classification the first sub-token of each word (-1: cut off), QA the token
    positions inside the context and their character offsets."""

    case: Case
    start: int  # index of the batch's first example
    align: tuple[Any, ...] = ()


def eval_batches(tokenizer: Any, eval_set: EvalSet, *, max_length: int) -> list[EvalBatch]:
    """The labelled examples in batches of EVAL_BATCH, padded to each batch's longest (cut at max_length)."""
    batches = []
    for start, stop in _batch_bounds(eval_set):
        chunk = eval_set.inputs[start:stop]
        inputs, align = _ENCODERS[eval_set.kind](tokenizer, chunk, max_length)
        shape = "x".join(map(str, inputs["input_ids"].shape))
        case = Case(f"eval {start + 1}-{stop} {shape}", inputs, rows_alone=True, texts=True,
                    per_token=PER_TOKEN.get(eval_set.kind, ()))
        batches.append(EvalBatch(case, start, align))
    return batches


def eval_cases(tokenizer: Any, eval_set: EvalSet, *, max_length: int) -> list[Case]:
    return [b.case for b in eval_batches(tokenizer, eval_set, max_length=max_length)]


def _batch_bounds(eval_set: EvalSet) -> list[tuple[int, int]]:
    """Runs of up to EVAL_BATCH examples; multiple choice starts a new batch when the choice count changes."""
    bounds, start = [], 0
    for i in range(1, len(eval_set) + 1):
        new_shape = (eval_set.kind == "multiple_choice" and i < len(eval_set)
                     and len(eval_set.inputs[i][1]) != len(eval_set.inputs[start][1]))
        if i == len(eval_set) or i - start == EVAL_BATCH or new_shape:
            bounds.append((start, i))
            start = i
    return bounds


def _ids(encoded: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(encoded[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def _encode_texts(tokenizer: Any, chunk: Sequence[tuple[Any, ...]], max_length: int) -> tuple[dict, tuple]:
    texts = [x[0] for x in chunk]
    return tokenize(tokenizer, "text-classification", texts, rows=len(texts), max_length=max_length,
                    pad_to_max=False), ()


def _encode_words(tokenizer: Any, chunk: Sequence[tuple[Any, ...]], max_length: int) -> tuple[dict, tuple]:
    words = [list(x[0]) for x in chunk]
    encoded = tokenizer(words, is_split_into_words=True, padding="longest", truncation=True,
                        max_length=max_length, return_tensors="np")
    return _ids(encoded), tuple(_first_subtokens(encoded.word_ids(i), len(w)) for i, w in enumerate(words))


def _first_subtokens(word_ids: Sequence[int | None], words: int) -> tuple[int, ...]:
    """Position of each word's first sub-token; -1 for a word truncation cut off (or that has no token)."""
    first = [-1] * words
    for position, word in enumerate(word_ids):
        if word is not None and first[word] < 0:
            first[word] = position
    return tuple(first)


def _encode_qa(tokenizer: Any, chunk: Sequence[tuple[Any, ...]], max_length: int) -> tuple[dict, tuple]:
    encoded = tokenizer([q for q, _ in chunk], [c for _, c in chunk], padding="longest", truncation=True,
                        max_length=max_length, return_offsets_mapping=True, return_tensors="np")
    offsets = np.asarray(encoded["offset_mapping"])
    align = tuple((np.array([s == 1 for s in encoded.sequence_ids(i)]), offsets[i]) for i in range(len(chunk)))
    return _ids(encoded), align


def _encode_choices(tokenizer: Any, chunk: Sequence[tuple[Any, ...]], max_length: int) -> tuple[dict, tuple]:
    choices = len(chunk[0][1])
    firsts = [prompt for prompt, options in chunk for _ in options]
    seconds = [option for _, options in chunk for option in options]
    encoded = tokenizer(firsts, seconds, padding="longest", truncation=True, max_length=max_length,
                        return_tensors="np")
    return {k: v.reshape(len(chunk), choices, -1) for k, v in _ids(encoded).items()}, ()


def _encode_pairs(tokenizer: Any, chunk: Sequence[tuple[Any, ...]], max_length: int) -> tuple[dict, tuple]:
    """Each pair's two texts as two rows, one after the other (each embedded by itself)."""
    return _encode_texts(tokenizer, [(text,) for pair in chunk for text in pair], max_length)


_ENCODERS = {"single_label": _encode_texts, "multi_label": _encode_texts, "regression": _encode_texts,
             "token": _encode_words, "qa": _encode_qa, "multiple_choice": _encode_choices,
             "similarity": _encode_pairs}
