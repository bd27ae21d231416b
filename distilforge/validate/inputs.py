"""Validation inputs: real text and random token ids over a grid of shapes, with padded rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilforge.checkpoint import CheckpointInfo

# The example the exporters trace with: (batch, sequence), and choices for multiple choice.
EXPORT_BATCH, EXPORT_SEQUENCE, EXPORT_CHOICES = 2, 16, 2
# Dynamic-shape grid: (batch, sequence). 61 is never seen at export; None is the model's maximum.
DYNAMIC_GRID: tuple[tuple[int, int | None], ...] = ((1, 8), (3, 16), (2, 61), (3, None))
CHOICES_GRID = (2, 3, 2, 3)  # choices per grid row for multiple choice (3 is never seen at export)
TEXT_BATCH = 4


@dataclass(frozen=True)
class Case:
    """One named input batch. Shape: (batch, [choices,] sequence)."""

    name: str
    inputs: dict[str, np.ndarray]

    @property
    def mask(self) -> np.ndarray:
        return self.inputs["attention_mask"]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.inputs["input_ids"].shape)


def validation_cases(info: CheckpointInfo, tokenizer: Any, texts: Sequence[str], *,
                     fixed_shapes: Sequence[tuple[int, ...]] | None = None, seed: int = 0) -> list[Case]:
    """The shape grid for a dynamic artifact, or its declared shapes for a fixed one."""
    rng = np.random.default_rng(seed)
    multiple_choice = info.head.multiple_choice
    if fixed_shapes:
        shapes = [tuple(s) for s in fixed_shapes] + [_smaller_than(tuple(fixed_shapes[0]))]
    else:
        shapes = [_grid_shape(b, s, c, info.max_length, multiple_choice)
                  for (b, s), c in zip(DYNAMIC_GRID, CHOICES_GRID, strict=False)]
    cases = [_random_case(shape, info, rng) for shape in dict.fromkeys(shapes)]
    if tokenizer is not None and texts:
        text_shapes = [tuple(s) for s in fixed_shapes] if fixed_shapes else [None]
        cases += [_text_case(tokenizer, texts, info, shape) for shape in dict.fromkeys(text_shapes)]
    return cases


def _smaller_than(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A batch the runner must split and a sequence it must pad: proves a fixed-shape artifact
    serves inputs that are not exactly its declared shape."""
    return (shape[0] + 2, *shape[1:-1], max(2, shape[-1] // 4))


def _grid_shape(batch: int, seq: int | None, choices: int, max_length: int,
                multiple_choice: bool) -> tuple[int, ...]:
    seq = max_length if seq is None else min(seq, max_length)
    return (batch, choices, seq) if multiple_choice else (batch, seq)


def _random_case(shape: tuple[int, ...], info: CheckpointInfo, rng: np.random.Generator) -> Case:
    low = min(1, info.vocab_size - 1)
    ids = rng.integers(low, info.vocab_size, size=shape, dtype=np.int64)
    mask = padded_mask(shape)
    ids = np.where(mask == 1, ids, _pad_id(info)).astype(np.int64)
    return Case(f"random {'x'.join(map(str, shape))}", {"input_ids": ids, "attention_mask": mask})


def padded_mask(shape: tuple[int, ...]) -> np.ndarray:
    """Row 0 full; later rows keep fewer positions (trailing zeros). A lone row is half padded
    when the sequence is longer than 8, so every shape exercises padding."""
    rows = int(np.prod(shape[:-1]))
    seq = shape[-1]
    mask = np.ones((rows, seq), dtype=np.int64)
    for r in range(rows):
        keep = seq - (r * seq) // (rows + 1)
        if rows == 1 and seq > 8:
            keep = seq // 2
        mask[r, max(1, keep):] = 0
    return mask.reshape(shape)


def _pad_id(info: CheckpointInfo) -> int:
    pad = info.config.get("pad_token_id")
    return int(pad) if isinstance(pad, int) and 0 <= pad < info.vocab_size else 0


def _text_case(tokenizer: Any, texts: Sequence[str], info: CheckpointInfo,
               shape: tuple[int, ...] | None) -> Case:
    head = info.head
    if shape is None:  # dynamic: natural padding to the longest row
        batch, choices, seq = TEXT_BATCH, 3, None
    else:
        batch, seq = shape[0], shape[-1]
        choices = shape[1] if head.multiple_choice else 1
    encoded = tokenize(tokenizer, head.task, texts, rows=batch * (choices if head.multiple_choice else 1),
                       max_length=seq or info.max_length, pad_to_max=seq is not None)
    if head.multiple_choice:
        encoded = {k: v.reshape(batch, choices, -1) for k, v in encoded.items()}
    dims = "x".join(map(str, encoded["input_ids"].shape))
    return Case(f"text {dims}", encoded)


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
