import numpy as np
import pytest

from distilforge.artifacts.records import Tolerance
from distilforge.errors import UsageError
from distilforge.heads import OutputSpec
from distilforge.shapes import padded_mask
from distilforge.validate.compare import check_agreement, check_output, compare_output
from distilforge.validate.tolerances import parse_overrides, precision_class


def test_padded_positions_are_not_compared():
    mask = np.array([[1, 1, 0, 0]])
    ref = np.zeros((1, 4, 3), dtype=np.float32)
    got = ref.copy()
    got[0, 2:] = 100.0  # garbage at padded positions only
    m = compare_output("c", (1, 4), OutputSpec("h", True, None), ref, got, mask)
    assert m.max_abs == 0.0 and m.compared == 6


def test_kept_positions_are_compared():
    mask = np.array([[1, 1, 0, 0]])
    ref = np.zeros((1, 4, 3), dtype=np.float32)
    got = ref.copy()
    got[0, 1, 2] = 0.5
    m = compare_output("c", (1, 4), OutputSpec("h", True, None), ref, got, mask)
    assert m.max_abs == pytest.approx(0.5)
    assert check_output("onnx:fp32", m, Tolerance(max_abs=1e-4)) == [
        "onnx:fp32: h on c (shape 1x4): max abs diff 0.5 > 0.0001"]


def test_class_agreement_counts_rows():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    got = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = compare_output("c", (4, 8), OutputSpec("logits", False, "class"), ref, got, np.ones((4, 8)))
    assert m.agreement == 0.75 and m.decisions == 4
    assert check_agreement("t", "logits", [m], Tolerance(min_agreement=0.98))


def test_position_agreement_ignores_padding():
    mask = np.array([[1, 1, 1, 0]])
    ref = np.array([[0.0, 2.0, 1.0, 9.0]])
    got = np.array([[0.0, 2.0, 1.0, -9.0]])
    m = compare_output("c", (1, 4), OutputSpec("start_logits", True, "position"), ref, got, mask)
    assert m.agreement == 1.0


def test_multilabel_agreement_uses_sign():
    ref = np.array([[1.0, -1.0, 0.5]])
    got = np.array([[0.9, 0.1, 0.4]])
    m = compare_output("c", (1, 4), OutputSpec("logits", False, "labels"), ref, got, np.ones((1, 4)))
    assert m.agreement == pytest.approx(2 / 3)


def test_cosine_detects_a_scaled_output():
    ref = np.ones((2, 4), dtype=np.float32)
    got = -ref
    m = compare_output("c", (2, 4), OutputSpec("x", False, None), ref, got, np.ones((2, 4)))
    assert m.cosine == pytest.approx(-1.0)
    assert check_output("t", m, Tolerance(min_cosine=0.99))


def test_nan_output_fails():
    ref = np.ones((1, 2), dtype=np.float32)
    got = np.array([[np.nan, 1.0]], dtype=np.float32)
    m = compare_output("c", (1, 2), OutputSpec("x", False, None), ref, got, np.ones((1, 2)))
    assert check_output("t", m, Tolerance(max_abs=1.0)) == ["t: x on c (shape 1x2): output is not finite (NaN or inf)"]


def test_padded_mask_has_trailing_zeros_in_later_rows():
    mask = padded_mask((3, 10))
    assert mask[0].all()
    assert mask[1].sum() < 10 and mask[2].sum() < mask[1].sum()
    assert (np.diff(mask, axis=1) <= 0).all()  # only trailing zeros
    assert padded_mask((1, 16)).sum() == 8  # a lone row is padded too


def test_tolerance_overrides():
    tol = parse_overrides(["fp32.max_abs=2e-4", "int8.min_cosine=none"])
    assert tol["fp32"].max_abs == 2e-4 and tol["int8"].min_cosine is None
    with pytest.raises(UsageError):
        parse_overrides(["fp99.max_abs=1"])
    assert precision_class("int8-static") == "int8" and precision_class("bf16") == "fp16"


def test_reference_outputs_are_cached_by_content_not_name():
    """Two cases may share a name (fixed-shape and dynamic grids both have 'random 3x16')."""
    from distilforge.validate import Reference
    from distilforge.validate.inputs import Case

    class Echo:
        output_names = ("x",)

        def run(self, inputs):
            return {"x": inputs["input_ids"].astype(np.float32)}

    reference = Reference(Echo())
    a = Case("random 3x16", {"input_ids": np.zeros((3, 16), np.int64), "attention_mask": np.ones((3, 16), np.int64)})
    b = Case("random 3x16", {"input_ids": np.ones((3, 16), np.int64), "attention_mask": np.ones((3, 16), np.int64)})
    assert reference.outputs(a)["x"].sum() == 0
    assert reference.outputs(b)["x"].sum() == 48


def test_a_single_value_has_no_cosine():
    """A regression output for one row is one number: its 'cosine' would be only its sign."""
    mask = np.ones((1, 8), dtype=np.int64)
    m = compare_output("c", (1, 8), OutputSpec("logits", False, None), np.array([[1e-4]]), np.array([[-1e-4]]), mask)
    assert m.cosine is None
    assert check_output("onnx:int8-dynamic", m, Tolerance(min_cosine=0.99)) == []
    two = compare_output("c", (2, 8), OutputSpec("logits", False, None), np.array([[1.0], [2.0]]),
                         np.array([[-1.0], [2.0]]), np.ones((2, 8), dtype=np.int64))
    assert two.cosine == pytest.approx(0.6)


def test_nearest_neighbour_agreement_over_text_rows():
    embedding = OutputSpec("sentence_embedding", False, "neighbour", row_cosine=True)
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    got = ref.copy()
    got[1] = [0.2, 0.8]  # row 1's nearest becomes row 3 (and row 0 keeps row 1)
    m = compare_output("c", (4, 8), embedding, ref, got, np.ones((4, 8)), texts=True)
    assert m.decisions == 4 and m.agreement == pytest.approx(0.75)
    assert m.cosine == pytest.approx(float(ref[1] @ got[1] / np.linalg.norm(ref[1]) / np.linalg.norm(got[1])))
    # random token ids, or two rows (each the other's nearest), make no decision
    assert compare_output("c", (4, 8), embedding, ref, got, np.ones((4, 8))).agreement is None
    assert compare_output("c", (2, 8), embedding, ref[:2], got[:2], np.ones((2, 8)), texts=True).agreement is None


def test_embedding_record_tells_a_near_tie_from_a_wrong_neighbour():
    """Row 0's two nearest others are 0.004 apart in eager's cosine: the artifact picking the second is a near-tie
    (agreeing within 0.005), not a wrong neighbour; shuffled rows are wrong neighbours and rank pairs differently."""
    from scipy.stats import spearmanr

    from distilforge.validate.embedding import embedding_record

    def unit(v):
        return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)

    eager = np.stack([unit([1, 0, 0, 0]), unit([0.9, 0.43589, 0, 0]), unit([0.896, 0, 0.44405, 0]),
                      unit([0, 0, 0, 1]), unit([0, 0.2, 0, 1])])
    near_tie = eager.copy()
    near_tie[1] = unit([0.85, 0.5268, 0, 0])  # row 0 now prefers row 2 (0.896) over row 1 (0.85)
    record = embedding_record([(eager, near_tie)])
    assert record["texts"] == 5 and record["min_cosine"] < 1.0 and record["mean_cosine"] > 0.99
    assert record["agreement"] == 0.8  # row 0 picks another neighbour
    assert record["agreement_within"]["0.005"] == 1.0  # ... 0.004 below eager's best: a near-tie
    assert record["differing_margins"]["0.002-0.005"] == 1 and sum(record["differing_margins"].values()) == 1
    assert 0.9 < record["pairwise_spearman"] < 1.0

    same = embedding_record([(eager, eager * 3.0)])  # scale does not matter to cosine
    assert same["agreement"] == 1.0 and same["pairwise_spearman"] == pytest.approx(1.0)
    garbage = np.random.default_rng(2).normal(size=eager.shape)  # a broken artifact: wrong neighbours, far off
    assert embedding_record([(eager, garbage)])["agreement_within"]["0.05"] <= 0.6
    assert embedding_record([]) is None

    a, b = np.random.default_rng(1).normal(size=(2, 30))
    record = embedding_record([(a.reshape(6, 5), b.reshape(6, 5))])
    upper = np.triu_indices(6, 1)
    ua, ub = (x.reshape(6, 5) / np.linalg.norm(x.reshape(6, 5), axis=1, keepdims=True) for x in (a, b))
    assert record["pairwise_spearman"] == pytest.approx(spearmanr((ua @ ua.T)[upper], (ub @ ub.T)[upper]).statistic)


def test_a_near_tied_neighbour_agrees_and_a_wrong_one_does_not():
    """The rule's agreement: a pick within NEIGHBOUR_TIE (0.01) of eager's best cosine counts; one further off does
    not. Row 0's eager neighbours: row 1 at 0.9000, row 2 at 0.8960 (a near-tie), row 3 at 0.5."""
    from distilforge.validate.compare import NEIGHBOUR_TIE, neighbour_agreement

    def unit(v):
        return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)

    eager = np.stack([unit([1, 0, 0]), unit([0.9, 0.43589, 0]), unit([0.896, 0, 0.44405]), unit([0.5, -0.8660, 0])])
    assert NEIGHBOUR_TIE == 0.01
    tie = eager.copy()
    tie[2] = unit([0.95, 0, 0.3122])  # the artifact's row 0 now prefers row 2: 0.004 below eager's best
    assert neighbour_agreement(eager, tie).tolist() == [True, True, True, True]
    assert neighbour_agreement(eager, tie, tie=0.001)[0] == np.False_  # exact agreement would count it wrong
    wrong = eager.copy()
    wrong[3] = unit([0.99, -0.1411, 0])  # now row 3 (eager cosine 0.5, 0.4 below the best) is row 0's pick
    assert neighbour_agreement(eager, wrong)[0] == np.False_


def test_pairwise_spearman_below_the_rule_fails_with_a_line():
    from distilforge.validate.embedding import check_pair_spearman

    record = {"texts": 129, "pairwise_spearman": 0.981234}
    rule = Tolerance(min_pair_spearman=0.99)
    assert check_pair_spearman("onnx:int8-static", "sentence_embedding", record, rule) == [
        "onnx:int8-static: sentence_embedding on real text (129 texts): Spearman of the pairwise cosines with the "
        "eager model's 0.98123 < 0.99"]
    assert check_pair_spearman("t", "e", {**record, "pairwise_spearman": 0.995}, rule) == []
    assert check_pair_spearman("t", "e", record, Tolerance()) == []
