"""Validation inputs: fixed-shape artifacts get the same rows as dynamic ones, and every verdict on agreement
counts at least MIN_DECISIONS decisions."""

from __future__ import annotations

import pytest
from tiny import make_checkpoint

from distilforge.checkpoint import inspect_checkpoint, load_checkpoint
from distilforge.default_model import sample_texts
from distilforge.validate.inputs import DYNAMIC_GRID, MIN_DECISIONS, TOP_UP_BATCH, decisions, validation_cases


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("inputs"), "seq-single"))


def _rows(cases) -> int:
    return sum(c.shape[0] for c in cases)


def test_a_fixed_shape_artifact_gets_the_rows_a_dynamic_one_gets(classifier):
    info, tokenizer, texts = classifier.info, classifier.tokenizer, sample_texts()
    dynamic = validation_cases(info, tokenizer, texts)
    fixed = validation_cases(info, tokenizer, texts, fixed_shapes=[(1, 32)])
    grid_rows = sum(b for b, _ in DYNAMIC_GRID)
    assert _rows(dynamic[:len(DYNAMIC_GRID)]) == _rows(fixed[:len(DYNAMIC_GRID)]) == grid_rows
    assert all(c.shape[-1] <= 32 for c in fixed)  # cut to the declared sequence: its runner pads and chunks
    assert {(1, 32), (3, 8)} <= {c.shape for c in fixed}  # its declared shape, and a smaller batch it must split
    assert sum(decisions(info, c) for c in fixed) >= sum(decisions(info, c) for c in dynamic) >= MIN_DECISIONS


def test_too_few_decisions_are_topped_up_with_real_text(classifier):
    info, tokenizer, texts = classifier.info, classifier.tokenizer, sample_texts()
    cases = validation_cases(info, tokenizer, texts)
    total = sum(decisions(info, c) for c in cases)
    assert MIN_DECISIONS <= total < MIN_DECISIONS + TOP_UP_BATCH
    added = [c for c in cases if c.name.startswith("text") and c.shape[0] == TOP_UP_BATCH]
    assert added and len({c.name for c in cases}) == len(cases)  # every case has its own name
    assert validation_cases(info, tokenizer, texts, counted=MIN_DECISIONS)[-1].name.startswith("text 1-4")


def test_without_a_tokenizer_random_rows_fill_in(tmp_path):
    info = inspect_checkpoint(make_checkpoint(tmp_path, "seq-single", tokenizer=False))
    cases = validation_cases(info, None, [])
    assert sum(decisions(info, c) for c in cases) >= MIN_DECISIONS
    assert cases[-1].name.startswith("random ") and cases[-1].shape == (TOP_UP_BATCH, 32)


@pytest.mark.parametrize(("head", "topped_up"), [("token", False), ("seq-multi", True), ("qa", True),
                                                 ("multiple-choice", True), ("base", False)])
def test_decisions_follow_the_head(tmp_path, head, topped_up):
    """A per-token head counts kept tokens, so the grid alone gives enough; a multi-label head counts every label,
    others a row each; a head with no discrete decision (hidden states) needs none."""
    ckpt = load_checkpoint(make_checkpoint(tmp_path, head))
    cases = validation_cases(ckpt.info, ckpt.tokenizer, sample_texts())
    assert any(c.shape[0] == TOP_UP_BATCH for c in cases) == topped_up
    total = sum(decisions(ckpt.info, c) for c in cases)
    assert total == 0 if head == "base" else total >= MIN_DECISIONS


def test_a_fixed_multiple_choice_signature_gets_its_own_number_of_choices(tmp_path):
    """A TFLite signature fixes the choices: every case, grid, text and top-up alike, has that many."""
    ckpt = load_checkpoint(make_checkpoint(tmp_path, "multiple-choice"))
    cases = validation_cases(ckpt.info, ckpt.tokenizer, sample_texts(), fixed_shapes=[(1, 2, 64)])
    assert {c.shape[1] for c in cases} == {2} and all(c.shape[-1] <= 64 for c in cases)
    assert sum(decisions(ckpt.info, c) for c in cases) >= MIN_DECISIONS


@pytest.mark.parametrize("key", ["qa", "multiple-choice"])
def test_tiny_decisions_are_not_ties(key, tiny_checkpoints):
    """The tiny heads judged on ~110 decisions under fp16's 99.5 % rule may flip none: a decision whose two best
    choices are tied to 1e-5 is decided by rounding, which differs between CPU classes. Their seeds and
    initializer ranges (tiny.py) keep the closest decision at least 1.5 % of the median gap apart."""
    import numpy as np

    from distilforge.validate.runners.eager import EagerRunner

    ckpt = load_checkpoint(tiny_checkpoints[key])
    runner = EagerRunner(ckpt.model, ckpt.head, 1)
    gaps = []
    for case in validation_cases(ckpt.info, ckpt.tokenizer, sample_texts()):
        outputs = runner.run(case.inputs)
        for spec in ckpt.info.head.outputs:
            values = np.where(case.mask.astype(bool), outputs[spec.name], -np.inf) \
                if spec.agreement == "position" else outputs[spec.name]
            best_two = np.sort(values, -1)[..., -2:]
            gaps.append((best_two[..., 1] - best_two[..., 0]).ravel())
    gaps = np.concatenate(gaps)
    assert gaps.size >= MIN_DECISIONS
    assert gaps.min() >= 0.015 * np.median(gaps), (gaps.min(), np.median(gaps))
