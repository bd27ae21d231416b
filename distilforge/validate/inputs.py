"""Validation inputs: real text and random token ids over a grid of shapes, with padded rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilforge.checkpoint import CheckpointInfo
from distilforge.heads import OutputSpec
from distilforge.shapes import padded_mask

NEIGHBOUR_MIN_ROWS = 3  # rows of real text a batch needs for nearest-neighbour decisions (two: each other's)

# Dynamic-shape grid: (batch, sequence). 61 is never seen at export; None is the model's maximum. A fixed-shape
# artifact gets the same grid with sequences cut to its longest declared one (its runner pads and chunks).
DYNAMIC_GRID: tuple[tuple[int, int | None], ...] = ((1, 8), (3, 16), (2, 61), (3, None))
CHOICES_GRID = (2, 3, 2, 3)  # choices per grid row for multiple choice (3 is never seen at export)
TEXT_BATCH = 4  # rows of the real-text case
# A verdict on agreement needs at least this many decisions (rows, kept tokens, labels...): under the 98 % rule
# two flips then fail, and one flipped near-tie cannot. When the grid, the text case and the labelled data give
# fewer, batches of further validation texts (random ids without a tokenizer) are added until they do.
MIN_DECISIONS = 100
TOP_UP_BATCH = 16  # rows of each added batch; random ones are TOP_UP_BATCH x TOP_UP_SEQUENCE
TOP_UP_SEQUENCE = 32


@dataclass(frozen=True)
class Case:
    """One named input batch. Shape: (batch, [choices,] sequence)."""

    name: str
    inputs: dict[str, np.ndarray]
    # Labelled texts: each row is run by itself, cut to its own length, as pipelines run one text; the outputs
    # are stacked back (these outputs' sequence axis padded with zeros) and compared as one batch, so figures
    # keep the granularity of a batch while each text's output is the one it gets alone.
    rows_alone: bool = False
    per_token: tuple[str, ...] = ()  # outputs with a sequence axis after the batch axis
    texts: bool = False  # rows of real text (nearest-neighbour decisions are made among these only)

    @property
    def mask(self) -> np.ndarray:
        return self.inputs["attention_mask"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.inputs["input_ids"].shape)


def validation_cases(info: CheckpointInfo, tokenizer: Any, texts: Sequence[str], *,
                     fixed_shapes: Sequence[tuple[int, ...]] | None = None,
                     max_shape: tuple[int, ...] | None = None, seed: int = 0, counted: int = 0) -> list[Case]:
    """The shape grid (cut to a fixed-shape artifact's longest sequence, plus its declared shapes) and a real-text
    batch, the same rows for every format; then more batches until the head's decisions, with the `counted` ones
    the labelled data adds, reach MIN_DECISIONS. An artifact with upper bounds (`max_shape`) gets every case cut
    to them."""
    rng = np.random.default_rng(seed)
    fits = Fits(info.max_length, None)
    if fixed_shapes:  # the runner pads sequences and chunks batches; a multiple-choice signature fixes the choices
        fits = Fits(min(info.max_length, max(s[-1] for s in fixed_shapes)),
                    fixed_shapes[0][1] if info.head.multiple_choice else None)
    if max_shape:
        fits = Fits(min(info.max_length, max_shape[-1]), None, max_shape)
    shapes = [_grid_shape(b, s, fits.choices or c, fits.longest, info.head.multiple_choice)
              for (b, s), c in zip(DYNAMIC_GRID, CHOICES_GRID, strict=False)]
    if fixed_shapes:
        shapes += [tuple(s) for s in fixed_shapes] + [_smaller_than(tuple(fixed_shapes[0]))]
    cases = [_random_case(shape, info, rng) for shape in dict.fromkeys(fits.cut(s) for s in shapes)]
    if tokenizer is not None and texts:
        cases.append(fits.cut_case(_text_case(tokenizer, texts, info, 0, fits.rows(TEXT_BATCH), fits)))
    return cases + _top_up(cases, info, tokenizer, texts, rng, fits, counted)


@dataclass(frozen=True)
class Fits:
    """What an artifact takes: its longest sequence, and (fixed multiple-choice signatures) its number of choices."""

    longest: int
    choices: int | None
    bounds: tuple[int, ...] | None = None  # the largest (batch, [choices,] sequence) it takes

    def cut(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(min(a, b) for a, b in zip(shape, self.bounds, strict=True)) if self.bounds else shape

    def rows(self, wanted: int) -> int:
        return min(wanted, self.bounds[0]) if self.bounds else wanted

    def cut_case(self, case: Case) -> Case:
        shape = self.cut(case.shape)
        if shape == case.shape:
            return case
        index = tuple(slice(0, n) for n in shape)
        return Case(f"{case.name} cut to {'x'.join(map(str, shape))}", {k: v[index] for k, v in case.inputs.items()},
                    texts=case.texts)


SENSITIVITY_BATCHES = 2  # batches of TOP_UP_BATCH rows the INT8 layer sensitivity is measured on
SENSITIVITY_LENGTH = 128


def sensitivity_cases(info: CheckpointInfo, tokenizer: Any, texts: Sequence[str], seed: int = 0) -> list[Case]:
    """What each layer's INT8 cost is measured on (quantize/sensitivity.py): real text when there is a tokenizer,
    else random ids; the same for every target."""
    fits = Fits(min(info.max_length, SENSITIVITY_LENGTH), None)
    if tokenizer is not None and texts:
        return [_text_case(tokenizer, texts, info, i * TOP_UP_BATCH, TOP_UP_BATCH, fits)
                for i in range(SENSITIVITY_BATCHES)]
    rng = np.random.default_rng(seed)
    shape = (TOP_UP_BATCH, CHOICES_GRID[0], TOP_UP_SEQUENCE) if info.head.multiple_choice else \
        (TOP_UP_BATCH, TOP_UP_SEQUENCE)
    return [_random_case(shape, info, rng) for _ in range(SENSITIVITY_BATCHES)]


def decisions(info: CheckpointInfo, case: Case) -> int:
    """How many discrete decisions a case gives the head's least decided output (0: a values-only head)."""
    counts = [_output_decisions(spec, case, info) for spec in info.head.outputs if spec.agreement]
    return min(counts, default=0)


def _output_decisions(spec: OutputSpec, case: Case, info: CheckpointInfo) -> int:
    if spec.agreement == "class" and spec.per_token:
        return int(case.mask.sum())
    if spec.agreement == "labels":
        return case.shape[0] * info.num_labels
    if spec.agreement == "neighbour":
        return case.shape[0] if case.texts and case.shape[0] >= NEIGHBOUR_MIN_ROWS else 0
    return case.shape[0]  # one class per row (or per question for multiple choice), one position per row


def _top_up(cases: list[Case], info: CheckpointInfo, tokenizer: Any, texts: Sequence[str],
            rng: np.random.Generator, fits: Fits, counted: int) -> list[Case]:
    have = counted + sum(decisions(info, c) for c in cases)
    extra: list[Case] = []
    start = fits.rows(TEXT_BATCH)
    while have and have < MIN_DECISIONS:
        if tokenizer is not None and texts:
            case = fits.cut_case(_text_case(tokenizer, texts, info, start, fits.rows(TOP_UP_BATCH), fits))
            start += fits.rows(TOP_UP_BATCH)
        else:
            seq = min(TOP_UP_SEQUENCE, fits.longest)
            choices = fits.choices or CHOICES_GRID[0]
            shape = fits.cut((TOP_UP_BATCH, choices, seq) if info.head.multiple_choice else (TOP_UP_BATCH, seq))
            case = _random_case(shape, info, rng, name=f"random {len(extra) + 1} {'x'.join(map(str, shape))}")
        extra.append(case)
        have += decisions(info, case)
    return extra


def _smaller_than(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A batch the runner must split and a sequence it must pad: proves a fixed-shape artifact
    serves inputs that are not exactly its declared shape."""
    return (shape[0] + 2, *shape[1:-1], max(2, shape[-1] // 4))


def _grid_shape(batch: int, seq: int | None, choices: int, max_length: int,
                multiple_choice: bool) -> tuple[int, ...]:
    seq = max_length if seq is None else min(seq, max_length)
    return (batch, choices, seq) if multiple_choice else (batch, seq)


def _random_case(shape: tuple[int, ...], info: CheckpointInfo, rng: np.random.Generator, name: str = "") -> Case:
    low = min(1, info.vocab_size - 1)
    ids = rng.integers(low, info.vocab_size, size=shape, dtype=np.int64)
    mask = padded_mask(shape)
    ids = np.where(mask == 1, ids, _pad_id(info)).astype(np.int64)
    return Case(name or f"random {'x'.join(map(str, shape))}", {"input_ids": ids, "attention_mask": mask})


def _pad_id(info: CheckpointInfo) -> int:
    pad = info.config.get("pad_token_id")
    return int(pad) if isinstance(pad, int) and 0 <= pad < info.vocab_size else 0


def _text_case(tokenizer: Any, texts: Sequence[str], info: CheckpointInfo, start: int, rows: int,
               fits: Fits) -> Case:
    """`rows` texts from `start` (cycling through `texts`), padded to the longest row and cut to what the artifact
    takes; multiple choice: neighbouring texts are a row's choices (3, or what a fixed signature takes)."""
    choices = (fits.choices or 3) if info.head.multiple_choice else 1
    picked = [texts[(start * choices + i) % len(texts)] for i in range(rows * choices)]
    encoded = tokenize(tokenizer, info.head.task, picked, rows=rows * choices, max_length=fits.longest,
                       pad_to_max=False)
    if info.head.multiple_choice:
        encoded = {k: v.reshape(rows, choices, -1) for k, v in encoded.items()}
    first = start * choices % len(texts) + 1
    dims = "x".join(map(str, encoded["input_ids"].shape))
    return Case(f"text {first}-{first + rows * choices - 1} {dims}", encoded, texts=True)


def tokenize(tokenizer: Any, task: str, texts: Sequence[str], *, rows: int, max_length: int,
             pad_to_max: bool) -> dict[str, np.ndarray]:
    """Tokenize `rows` texts (cycling through `texts`); QA gets question/context pairs."""
    picked = [texts[i % len(texts)] for i in range(rows)]
    kwargs = dict(padding="max_length" if pad_to_max else "longest", truncation=True,
                  max_length=max_length, return_tensors="np")
    if task == "question-answering":
        contexts = [texts[(i + 1) % len(texts)] for i in range(rows)]
        encoded = tokenizer(picked, contexts, **kwargs)
    else:
        encoded = tokenizer(picked, **kwargs)
    return {k: np.asarray(encoded[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def run_case(runner: Any, case: Case) -> dict[str, np.ndarray]:
    """The runner's outputs on a case: one batch, or (rows_alone) each row by itself, unpadded, stacked back."""
    if not case.rows_alone:
        return runner.run(case.inputs)
    length = case.shape[-1]
    rows = []
    for i in range(case.shape[0]):
        kept = int(np.nonzero(case.mask[i].reshape(-1, length).any(axis=0))[0].max()) + 1
        row = {k: np.ascontiguousarray(v[i:i + 1, ..., :kept]) for k, v in case.inputs.items()}
        out = runner.run(row)
        rows.append({k: _pad_sequence(v, length) if k in case.per_token else v for k, v in out.items()})
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _pad_sequence(array: np.ndarray, length: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[1] = (0, length - array.shape[1])
    return np.pad(array, widths)
