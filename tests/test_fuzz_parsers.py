"""Fuzzing the parsers of user files: config.json, calibration files and eval files.

For any bytes, text or JSON, each returns a valid result or raises one of our errors (a DistilforgeError,
which the CLI prints as one line); never another exception. A result must also be usable by the next
stage: a checkpoint's summary, a calibration set's tokens, an eval set's batches. Derandomized, so every run
tries the same examples.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilforge.checkpoint import CheckpointInfo, inspect_checkpoint
from distilforge.errors import DistilforgeError
from distilforge.heads import find_head
from distilforge.quantize.calibration import load_calibration
from distilforge.validate.task import eval_batches, load_eval_set

FUZZ = settings(max_examples=150, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

# Text that is likely to reach deep into a parser: words of the tiny vocabulary, digits, separators,
# label names, and the odd character that trips decoders and tokenizers.
PIECES = st.sampled_from(["the", "market", "up", "rain", "0", "1", "2", "-1", "7", "LABEL_0", "LABEL_2", "O", "B-PER",
                          "I-LOC", "|", ",", " ", "\"", "\n", "\r", "\t", "1.5", "nan", "inf", "²", "٣", "\ud800",
                          "\u2028", "\x00", "\x85", "é", "{", "}", "[", "]"])
TEXT = st.lists(PIECES, max_size=12).map("".join) | st.text(max_size=30)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="distilforge-fuzz-") as d:
        yield Path(d)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8", errors="surrogatepass")  # lone surrogates too: not UTF-8, must be caught
    path.write_bytes(content)
    return path


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(",".join(cells) for cells in [header, *rows]) + "\n"


# What a label, a label list or a tag often looks like, right or wrong: ids as numbers and as text (in other
# scripts too: '²' passes str.isdigit() but not int()), names, huge numbers. Texts are mostly sensible, so that
# a row gets past its text fields to its label often enough.
LABELISH = st.sampled_from(["0", "1", "2", " 1 ", "-1", "3", "²", "٣", "9" * 5000, "LABEL_1", "O", "B-PER", "I-LOC",
                            "sports", "1.5", "nan", "", 10**400, -(10**400), 1e308 * 10, 0, 1, 2, 7, True])
LABEL_TEXT = LABELISH.filter(lambda v: isinstance(v, str))
TEXTISH = st.sampled_from(["the market is up", "rain and snow", "up", "market", "the team won the game"])


def _value(field: str) -> st.SearchStrategy[Any]:
    """A JSON value for `field`: mostly of the right kind, sometimes anything."""
    if field in ("label", "labels", "tags"):
        return st.one_of(LABELISH, st.lists(LABELISH, max_size=4), JSON)
    if field in ("tokens", "choices"):
        return st.one_of(st.lists(TEXTISH, max_size=4), st.lists(TEXTISH | JSON, max_size=3), JSON)
    return st.one_of(TEXTISH, TEXTISH, TEXTISH, JSON, TEXT)


# ---- config.json ---------------------------------------------------------------------------------


CONFIG_KEYS = ["model_type", "architectures", "dim", "n_heads", "n_layers", "hidden_dim", "vocab_size",
               "max_position_embeddings", "id2label", "label2id", "num_labels", "problem_type"]


@pytest.fixture(scope="module")
def checkpoint_dir(workdir: Path, tiny_checkpoints: dict[str, Path]) -> Path:
    """A checkpoint folder whose config.json each example overwrites (inspection reads no weights)."""
    folder = workdir / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def valid_config(tiny_checkpoints: dict[str, Path]) -> dict[str, Any]:
    return json.loads((tiny_checkpoints["seq-single"] / "config.json").read_text())


def _inspect(folder: Path, content: str | bytes) -> None:
    _write(folder / "config.json", content)
    try:
        info = inspect_checkpoint(folder)
    except DistilforgeError:
        return
    _usable(info)


def _usable(info: CheckpointInfo) -> None:
    assert isinstance(info.config, dict) and info.head is not None
    assert info.max_length > 0 and info.vocab_size > 0
    json.dumps(info.summary())


@FUZZ
@given(content=st.binary(max_size=200) | TEXT)
def test_config_from_any_bytes(checkpoint_dir: Path, content: str | bytes) -> None:
    _inspect(checkpoint_dir, content)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON | TEXT, max_size=4),
       drop=st.lists(st.sampled_from(CONFIG_KEYS), max_size=2))
def test_config_with_any_values(checkpoint_dir: Path, valid_config: dict[str, Any], changes: dict[str, Any],
                                drop: list[str]) -> None:
    config = {k: v for k, v in {**valid_config, **changes}.items() if k not in drop}
    _inspect(checkpoint_dir, json.dumps(config))


@FUZZ
@given(labels=st.dictionaries(st.sampled_from(["0", "1", "2", "-1", "01", " 1", "x", "1.0", "3"]),
                              st.none() | st.text(max_size=5) | st.integers(), max_size=4),
       num_labels=st.none() | st.integers(-2, 5) | st.booleans() | st.text(max_size=3),
       problem_type=st.none() | st.sampled_from(["regression", "single_label_classification",
                                                 "multi_label_classification", "x"]) | st.integers())
def test_config_labels(checkpoint_dir: Path, valid_config: dict[str, Any], labels: dict[str, Any],
                       num_labels: Any, problem_type: Any) -> None:
    config = {**valid_config, "id2label": labels, "num_labels": num_labels, "problem_type": problem_type}
    _inspect(checkpoint_dir, json.dumps({k: v for k, v in config.items() if v is not None}))


# ---- calibration files ---------------------------------------------------------------------------


HEADS = {"text": find_head("DistilBertForSequenceClassification", "single_label_classification"),
         "qa": find_head("DistilBertForQuestionAnswering", None),
         "multiple-choice": find_head("DistilBertForMultipleChoice", None)}
CALIBRATION_FIELDS = ["text", "question", "context", "prompt", "choices", "label"]


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints: dict[str, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoints["seq-single"]))


def _calibrate(path: Path, tokenizer: Any, head: str, samples: int) -> None:
    try:
        calibration = load_calibration(path, tokenizer, HEADS[head], samples=samples)
    except DistilforgeError:
        return
    assert len(calibration.samples) == samples
    for sample in calibration.samples:
        assert sample["input_ids"].shape == sample["attention_mask"].shape and sample["input_ids"].size > 0


@FUZZ
@given(content=st.binary(max_size=200) | TEXT, suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".tsv"]),
       head=st.sampled_from(sorted(HEADS)), samples=st.integers(1, 3))
def test_calibration_from_any_bytes(workdir: Path, tokenizer: Any, content: str | bytes, suffix: str, head: str,
                                    samples: int) -> None:
    _calibrate(_write(workdir / f"calibration{suffix}", content), tokenizer, head, samples)


CALIBRATION_FOR = {"text": ["text"], "qa": ["question", "context"], "multiple-choice": ["prompt", "choices"]}


@st.composite
def calibration_rows(draw: st.DrawFn, head: str) -> list[Any]:
    """Rows with the fields `head` reads (each present 9 times in 10), now and then another field or no object."""
    fields = CALIBRATION_FOR[head] + draw(st.lists(st.sampled_from(CALIBRATION_FIELDS), max_size=1))
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 19)) == 0:
            rows.append(draw(JSON))
        else:
            rows.append({f: draw(_value(f)) for f in fields if draw(st.integers(0, 9))})
    return rows


@FUZZ
@given(data=st.data(), head=st.sampled_from(sorted(HEADS)), samples=st.integers(1, 3))
def test_calibration_jsonl_with_any_values(workdir: Path, tokenizer: Any, data: st.DataObject, head: str,
                                           samples: int) -> None:
    rows = data.draw(calibration_rows(head))
    _calibrate(_write(workdir / "calibration.jsonl", _jsonl(rows)), tokenizer, head, samples)


@FUZZ
@given(header=st.lists(st.sampled_from(CALIBRATION_FIELDS) | TEXT, min_size=1, max_size=3),
       rows=st.lists(st.lists(TEXT, max_size=4), max_size=4), head=st.sampled_from(sorted(HEADS)))
def test_calibration_csv_with_any_cells(workdir: Path, tokenizer: Any, header: list[str], rows: list[list[str]],
                                        head: str) -> None:
    _calibrate(_write(workdir / "calibration.csv", _csv(header, rows)), tokenizer, head, 1)


# ---- eval files ----------------------------------------------------------------------------------


EVAL_FIELDS = {"seq-single": ["text", "label"], "seq-multi": ["text", "labels"], "seq-regression": ["text", "label"],
               "token": ["tokens", "tags"], "qa": ["question", "context", "answer"],
               "multiple-choice": ["prompt", "choices", "label"]}


@pytest.fixture(scope="module")
def eval_heads(tiny_checkpoints: dict[str, Path]) -> dict[str, tuple[CheckpointInfo, Any]]:
    from transformers import AutoTokenizer

    return {key: (inspect_checkpoint(tiny_checkpoints[key]), AutoTokenizer.from_pretrained(str(tiny_checkpoints[key])))
            for key in EVAL_FIELDS}


def _evaluate(path: Path, heads: dict[str, tuple[CheckpointInfo, Any]], key: str) -> None:
    info, tokenizer = heads[key]
    try:
        eval_set = load_eval_set(path, info, tokenizer)
    except DistilforgeError:
        return
    assert len(eval_set) > 0 and len(eval_set.inputs) == len(eval_set)
    batches = eval_batches(tokenizer, eval_set, max_length=info.max_length)  # what validation does with it next
    assert sum(b.case.inputs["input_ids"].shape[0] for b in batches) == len(eval_set)


@FUZZ
@given(content=st.binary(max_size=200) | TEXT, suffix=st.sampled_from([".jsonl", ".csv", ".txt"]),
       key=st.sampled_from(sorted(EVAL_FIELDS)))
def test_eval_from_any_bytes(workdir: Path, eval_heads: dict, content: str | bytes, suffix: str, key: str) -> None:
    _evaluate(_write(workdir / f"eval{suffix}", content), eval_heads, key)


CSV_CELLS = {"label": st.one_of(LABEL_TEXT, LABEL_TEXT, TEXT),
             "labels": st.one_of(st.lists(LABEL_TEXT, max_size=3).map("|".join), TEXT),
             "tags": st.one_of(st.lists(LABEL_TEXT, min_size=1, max_size=3).map(" ".join), TEXT),
             "tokens": st.one_of(st.lists(TEXTISH, min_size=1, max_size=3).map(" ".join), TEXT),
             "choices": st.one_of(st.lists(TEXTISH, min_size=1, max_size=3).map("|".join), TEXT)}


@st.composite
def eval_rows(draw: st.DrawFn, key: str) -> list[dict[str, Any]]:
    fields = EVAL_FIELDS[key]
    count = draw(st.integers(1, 4))
    return [{f: draw(_value(f)) for f in fields if draw(st.integers(0, 9))} for _ in range(count)]


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(EVAL_FIELDS)))
def test_eval_jsonl_with_any_values(workdir: Path, eval_heads: dict, data: st.DataObject, key: str) -> None:
    rows = data.draw(eval_rows(key))
    _evaluate(_write(workdir / "eval.jsonl", _jsonl(rows)), eval_heads, key)


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(EVAL_FIELDS)))
def test_eval_csv_with_any_cells(workdir: Path, eval_heads: dict, data: st.DataObject, key: str) -> None:
    header = EVAL_FIELDS[key]
    cells = [CSV_CELLS.get(f, st.one_of(TEXTISH, TEXTISH, TEXT)) for f in header]
    rows = data.draw(st.lists(st.tuples(*cells).map(list), min_size=1, max_size=4))
    _evaluate(_write(workdir / "eval.csv", _csv(header, rows)), eval_heads, key)
