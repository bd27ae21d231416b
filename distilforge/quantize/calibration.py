"""Calibration data for static INT8: real, varied text tokenized with the checkpoint's tokenizer.

txt: one text a line; jsonl: a `text` field, or `question`/`context` for QA, `prompt`/`choices`
for multiple choice; csv: a `text` column (or `question`/`context`). The shipped default is
`distilforge/data/calibration.txt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.hashing import sha256_text
from distilforge.errors import DataFileError
from distilforge.heads import HeadSpec
from distilforge.textdata import field, read_rows

DEFAULT_SAMPLES = 128
MAX_CALIBRATION_LENGTH = 128


@dataclass(frozen=True)
class CalibrationSet:
    """Tokenized samples, one (1, [choices,] sequence) input dict each, unpadded."""

    samples: tuple[dict[str, np.ndarray], ...]
    source: str
    sha256: str  # of the texts used, in order

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self.samples), "sha256": self.sha256}

    def cut(self, length: int) -> list[dict[str, np.ndarray]]:
        """Every sample cut to at most `length` tokens (what the model or the artifact takes), unpadded."""
        return [fit_to_shape(s, (*s["input_ids"].shape[:-1], min(s["input_ids"].shape[-1], length)))
                for s in self.samples]

    def padded(self, length: int) -> list[dict[str, np.ndarray]]:
        """Every sample padded (or cut) to one sequence length."""
        return [fit_to_shape(s, (*s["input_ids"].shape[:-1], length)) for s in self.samples]


def fit_to_shape(sample: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Pad (zeros: [PAD] ids, mask 0) or cut every axis of a sample to `shape`, for fixed-shape formats."""
    return {k: _fit_array(v, shape) for k, v in sample.items()}


def _fit_array(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    values = values[tuple(slice(0, n) for n in shape)]
    return np.pad(values, [(0, want - have) for have, want in zip(values.shape, shape, strict=True)])


def calibration_texts(path: Path, head: HeadSpec) -> list[tuple[str, ...]]:
    """One tuple of texts per sample: (text,), (question, context) or (prompt + choice, ...)."""
    rows = read_rows(path)
    if head.task == "question-answering" and any("question" in r for r in rows):
        return list(zip(field(path, rows, "question"), field(path, rows, "context"), strict=True))
    if head.multiple_choice and any("choices" in r for r in rows):
        prompts, choices = field(path, rows, "prompt"), field(path, rows, "choices", list)
        for number, cs in enumerate(choices, start=1):
            if not cs or not all(isinstance(c, str) and c.strip() for c in cs):
                raise DataFileError(f"{path}: row {number}: 'choices' must be a list of one or more non-empty strings")
        return [tuple(f"{p} {c}" for c in cs) for p, cs in zip(prompts, choices, strict=True)]
    texts = field(path, rows, "text")
    if head.multiple_choice:  # plain text: neighbouring texts become the choices
        return [(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]
    return [(t,) for t in texts]


def load_calibration(path: str | Path | None, tokenizer: Any, head: HeadSpec, *,
                     samples: int = DEFAULT_SAMPLES, max_length: int = MAX_CALIBRATION_LENGTH) -> CalibrationSet:
    """Read, check and tokenize `samples` calibration examples (the shipped set when path is None)."""
    from distilforge.default_model import data_path

    shipped = path is None
    path = Path(path) if path is not None else data_path("calibration.txt")
    if tokenizer is None:
        raise DataFileError(f"{path}: calibration text needs the checkpoint's tokenizer, and it has none")
    texts = calibration_texts(path, head)
    if len(texts) < samples:
        raise DataFileError(f"{path}: {len(texts)} calibration samples, {samples} asked for "
                            "(give more text or ask for fewer with --calibration-samples)")
    texts = texts[:samples]
    encoded = tuple(_encode(tokenizer, head, t, max_length) for t in texts)
    # the shipped file is named by its place in the package: the manifest must not depend on the install path
    source = "distilforge/data/calibration.txt (shipped)" if shipped else str(path)
    return CalibrationSet(samples=encoded, source=source, sha256=sha256_text("\n".join("\t".join(t) for t in texts)))


def _encode(tokenizer: Any, head: HeadSpec, texts: tuple[str, ...], max_length: int) -> dict[str, np.ndarray]:
    kwargs = dict(truncation=True, max_length=max_length, return_tensors="np")
    if head.task == "question-answering" and len(texts) == 2:
        enc = tokenizer([texts[0]], [texts[1]], **kwargs)
    elif head.multiple_choice:
        enc = tokenizer(list(texts), padding="longest", **kwargs)
        return {k: np.asarray(enc[k], dtype=np.int64)[None] for k in ("input_ids", "attention_mask")}
    else:
        enc = tokenizer([texts[0]], **kwargs)
    return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}
