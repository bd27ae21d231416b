"""Input shapes both the exporters and the validation use: the example traced with, and the padded attention mask."""

from __future__ import annotations

import numpy as np

# The example the exporters trace with: (batch, sequence), and choices for multiple choice.
EXPORT_BATCH, EXPORT_SEQUENCE, EXPORT_CHOICES = 2, 16, 2


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
