"""Comparing an artifact's outputs with the reference's, only where the attention mask keeps a position."""

from __future__ import annotations

import numpy as np

from distilforge.artifacts.records import OutputMetrics, Tolerance, overall_agreement
from distilforge.heads import OutputSpec
from distilforge.validate.inputs import NEIGHBOUR_MIN_ROWS


def compare_output(case_name: str, shape: tuple[int, ...], spec: OutputSpec, reference: np.ndarray,
                   actual: np.ndarray, mask: np.ndarray, *, texts: bool = False) -> OutputMetrics:
    """Metrics for one output of one case (`texts`: its rows are real text). Shapes must already match."""
    ref, got = _kept(reference, mask, spec), _kept(actual, mask, spec)
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    decisions = agreeing_decisions(spec, reference, actual, mask, texts)
    return OutputMetrics(
        case=case_name, shape=shape, output=spec.name,
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        cosine=_row_cosine(ref64, got64) if spec.row_cosine else
        _cosine(ref64.ravel(), got64.ravel()) if diff.size >= 2 else None,
        agreement=float(np.mean(decisions)) if decisions is not None else None,
        decisions=int(decisions.size) if decisions is not None else 0,
        compared=int(diff.size),
    )


def _kept(values: np.ndarray, mask: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Per-token outputs (B, S, ...) -> (kept tokens, ...); others unchanged."""
    if not spec.per_token:
        return values
    return values[mask.astype(bool)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _row_cosine(ref: np.ndarray, got: np.ndarray) -> float | None:
    """The lowest cosine between a row of the reference and the same row of the artifact (one embedding each)."""
    rows = [_cosine(a, b) for a, b in zip(ref.reshape(len(ref), -1), got.reshape(len(got), -1), strict=True)]
    return min(rows) if rows else None


# A nearest-neighbour pick counts as agreeing when its cosine with the text, by the eager model's embeddings, is
# within this of the eager model's best: among 16 texts two neighbours are often that close, and which of two
# near-ties comes first says nothing of an embedding's quality (docs/validation.md, "Sentence embeddings").
NEIGHBOUR_TIE = 0.01


def similarities(embeddings: np.ndarray) -> np.ndarray:
    """Cosine of every row with every other row (the diagonal -inf: a row is not its own neighbour)."""
    e = embeddings.reshape(len(embeddings), -1).astype(np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    unit = e / np.where(norms == 0, 1.0, norms)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine (rows of a batch of at least 3)."""
    return similarities(embeddings).argmax(-1)


def neighbour_margins(reference: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: is the artifact's nearest other row the eager model's, and how far below eager's best cosine its
    pick is by eager's cosines (0 where they agree)."""
    eager = similarities(reference)
    rows = np.arange(len(eager))
    best, pick = eager.argmax(-1), nearest_neighbours(actual)
    return best == pick, eager[rows, best] - eager[rows, pick]


def neighbour_agreement(reference: np.ndarray, actual: np.ndarray, tie: float = NEIGHBOUR_TIE) -> np.ndarray:
    """Per row: is the artifact's nearest other row the eager model's, or one within `tie` of it by eager's
    cosine?"""
    same, margin = neighbour_margins(reference, actual)
    return same | (margin <= tie)


def agreeing_decisions(spec: OutputSpec, reference: np.ndarray, actual: np.ndarray,
                        mask: np.ndarray, texts: bool) -> np.ndarray | None:
    """A boolean per discrete decision: does the artifact decide as the reference does?"""
    if spec.agreement == "class":
        ref, got = _kept(reference, mask, spec), _kept(actual, mask, spec)
        return (ref.argmax(-1) == got.argmax(-1)).ravel()
    if spec.agreement == "labels":
        return ((reference > 0) == (actual > 0)).ravel()
    if spec.agreement == "position":  # (B, S): best kept position per row
        keep = mask.astype(bool)
        ref = np.where(keep, reference, -np.inf).argmax(-1)
        got = np.where(keep, actual, -np.inf).argmax(-1)
        return (ref == got).ravel()
    if spec.agreement == "neighbour":  # among real texts; random ids have no meaning to be near in
        if not texts or reference.shape[0] < NEIGHBOUR_MIN_ROWS:
            return None
        return neighbour_agreement(reference, actual)
    return None


def check_output(artifact: str, metrics: OutputMetrics, tolerance: Tolerance) -> list[str]:
    """Every per-case rule the metrics break, one line each, naming artifact, output, case and shape."""
    where = f"{artifact}: {metrics.output} on {metrics.case} (shape {'x'.join(map(str, metrics.shape))})"
    failures = []
    if not np.isfinite(metrics.max_abs):
        return [f"{where}: output is not finite (NaN or inf)"]
    if tolerance.max_abs is not None and metrics.max_abs > tolerance.max_abs:
        failures.append(f"{where}: max abs diff {metrics.max_abs:.3g} > {tolerance.max_abs:g}")
    if tolerance.min_cosine is not None and metrics.cosine is not None and metrics.cosine < tolerance.min_cosine:
        failures.append(f"{where}: cosine {metrics.cosine:.5f} < {tolerance.min_cosine:g}")
    return failures


def check_agreement(artifact: str, output: str, metrics: list[OutputMetrics], tolerance: Tolerance) -> list[str]:
    agreement = overall_agreement(metrics)
    if tolerance.min_agreement is None or agreement is None or agreement >= tolerance.min_agreement:
        return []
    decisions = sum(m.decisions for m in metrics if m.agreement is not None)
    return [f"{artifact}: {output}: agreement {agreement:.2%} over {decisions} decisions "
            f"< {tolerance.min_agreement:.2%}"]
