"""What an artifact does to sentence embeddings, measured beside the pass rule (issue 27) on the real-text cases.

Exact nearest-neighbour agreement fails INT8 embedding models on near-ties: in a batch of 16 texts, a text's two
nearest others are often within 0.01 of cosine of each other, and which of them comes first says nothing of the
embeddings' quality. So each build records, per embedding output: per-text cosine with eager (mean and minimum), the
Spearman correlation of every pairwise cosine (pooled over the real-text batches) with eager's, exact agreement,
how many of the artifact's picks are within ε of eager's best (for a few ε), and the histogram of how far the picks
that differ are from eager's best (their margin in eager's cosine). These are the figures an embedding rule's
thresholds are chosen from (docs/validation.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distilforge.artifacts.records import Tolerance
from distilforge.validate import metrics
from distilforge.validate.compare import neighbour_margins, similarities

TIE_EPSILONS = (0.005, 0.01, 0.02, 0.05)  # a pick within this of eager's best cosine counts as a tie
MARGIN_EDGES = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 2.0)  # histogram bins of the differing picks


def embedding_record(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict | None:
    """`pairs`: (eager rows, artifact rows) of each real-text batch of at least 3 texts. None without any."""
    cosines, eager_pairs, artifact_pairs, margins, same = [], [], [], [], []
    for reference, actual in pairs:
        cosines.append((_unit(reference) * _unit(actual)).sum(axis=1))
        eager_sim, got_sim = similarities(reference), similarities(actual)
        upper = np.triu_indices(len(eager_sim), 1)
        eager_pairs.append(eager_sim[upper])
        artifact_pairs.append(got_sim[upper])
        agreed, margin = neighbour_margins(reference, actual)
        same.append(agreed)
        margins.append(margin)
    if not cosines:
        return None
    cosine, margin, agreed = np.concatenate(cosines), np.concatenate(margins), np.concatenate(same)
    differing = margin[~agreed]
    counts, _ = np.histogram(differing, bins=MARGIN_EDGES)
    return {
        "texts": int(cosine.size),
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "pairwise_spearman": _spearman(np.concatenate(eager_pairs), np.concatenate(artifact_pairs)),
        "agreement": float(agreed.mean()),
        "agreement_within": {f"{e:g}": float(np.mean(agreed | (margin <= e))) for e in TIE_EPSILONS},
        "differing_margins": {f"{lo:g}-{hi:g}": int(n) for lo, hi, n in
                              zip(MARGIN_EDGES, MARGIN_EDGES[1:], counts, strict=False)},
    }


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.reshape(len(rows), -1).astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1.0, norms)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (not in points, as the task metric is); 0 for constant input."""
    return metrics.spearman(a, b) / 100.0 if a.size >= 2 else 0.0


def check_pair_spearman(artifact: str, output: str, record: dict, tolerance: Tolerance) -> list[str]:
    """The rule's order-of-similarities check: one line when the pairwise cosines' Spearman is under the minimum."""
    least = tolerance.min_pair_spearman
    if least is None or record["pairwise_spearman"] >= least:
        return []
    return [f"{artifact}: {output} on real text ({record['texts']} texts): Spearman of the pairwise cosines with "
            f"the eager model's {record['pairwise_spearman']:.5f} < {least:g}"]
