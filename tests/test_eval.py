"""--eval FILE: labelled data per head, metrics computed through the runners, bad files rejected up front."""

import json

import numpy as np
import pytest
from tiny import make_checkpoint

from distilforge.errors import DataFileError
from distilforge.pipeline import build
from distilforge.pipeline.revalidate import validate_dir
from distilforge.validate import metrics
from distilforge.validate.scores import best_span, score
from distilforge.validate.task import eval_batches, load_eval_set

NER_LABELS = {"id2label": {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
              "label2id": {"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}}


def _jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# Words from tests/tiny.py's vocabulary, so every example tokenizes to real pieces.
EVAL_FILES = {
    "seq-single": ("eval.jsonl", _jsonl(
        {"text": "the market is up", "label": 0}, {"text": "rain and snow", "label": "LABEL_2"},
        {"text": "the team won the game", "label": 1}, {"text": "bread and cheese soup", "label": "LABEL_0"},
        {"text": "new phone app", "label": 2})),
    "seq-multi": ("eval.csv", "text,labels\nthe market is up,0|2\nrain and snow,LABEL_1\n"
                              "the team won the game,\nbread and cheese soup,LABEL_3|1\n"),
    "seq-regression": ("eval.jsonl", _jsonl(
        {"text": "good game", "label": 4.5}, {"text": "bad soup", "label": 1.0},
        {"text": "the stock is up", "label": 3}, {"text": "old phone", "label": 2.25})),
    "token": ("eval.jsonl", _jsonl(
        {"tokens": ["the", "bank", "in", "cloud"], "tags": ["O", "B-LOC", "O", "B-LOC"]},
        {"tokens": ["who", "won", "game"], "tags": ["B-PER", "I-PER", "O"]},
        {"tokens": ["rain", "snow", "wind"], "tags": ["O", "O", "B-PER"]},
        {"tokens": ["market", "price"], "tags": ["B-LOC", "I-LOC"]})),
    "qa": ("eval.jsonl", _jsonl(
        {"question": "what is up", "context": "the market is up today", "answer": "market"},
        {"question": "who won", "context": "the team won the game", "answer": "the team"},
        {"question": "what was bad", "context": "the soup was bad and the bread was good", "answer": "soup"},
        {"question": "when", "context": "rain and snow in the new market", "answer": "rain and snow"})),
    "multiple-choice": ("eval.jsonl", _jsonl(
        {"prompt": "the team", "choices": ["won", "lost"], "label": 0},
        {"prompt": "the bank", "choices": ["is up", "is down", "is new"], "label": 2},
        {"prompt": "rain and", "choices": ["snow", "code"], "label": 0},
        {"prompt": "bread and", "choices": ["cheese", "chip"], "label": 1})),
}
METRICS = {"seq-single": ("accuracy", {"macro_f1"}), "seq-multi": ("micro_f1", {"macro_f1"}),
           "seq-regression": ("pearson", {"mse"}),
           "token": ("entity_f1", {"entity_precision", "entity_recall"}),
           "qa": ("f1", {"exact_match"}), "multiple-choice": ("accuracy", set())}


@pytest.fixture(scope="module")
def ner_checkpoint(tmp_path_factory):
    """The tiny token classifier with IOB2 label names (the shared one has LABEL_0...)."""
    return make_checkpoint(tmp_path_factory.mktemp("ner"), "token", **NER_LABELS)


def _checkpoint(key, tiny_checkpoints, ner_checkpoint):
    return ner_checkpoint if key == "token" else tiny_checkpoints[key]


@pytest.mark.parametrize("key", sorted(EVAL_FILES))
def test_eval_file_scores_every_head(key, tiny_checkpoints, ner_checkpoint, tmp_path):
    name, content = EVAL_FILES[key]
    data = tmp_path / name
    data.write_text(content)
    result = build(_checkpoint(key, tiny_checkpoints, ner_checkpoint), tmp_path / "out", targets=["onnx:fp32"],
                   eval_file=data)
    assert result.passed, result.failures
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    gated, others = METRICS[key]
    examples = len([line for line in content.splitlines()[(name.endswith(".csv")):] if line.strip()])
    recorded = manifest["settings"]["eval"]
    assert recorded["path"] == str(data) and recorded["examples"] == examples and recorded["metric"] == gated
    assert len(recorded["sha256"]) == 64
    reference = manifest["reference"]["task"]
    assert reference["metric"] == gated and set(reference["extra"]) == others
    task = manifest["artifacts"][0]["validation"]["task"]
    assert task["metric"] == gated and task["examples"] == examples
    assert task["reference"] == reference["value"]
    # fp32: the same predictions, so the same scores; regression scores values, which move by ~1e-6
    same = (lambda a, b: a == pytest.approx(b, abs=0.05)) if gated == "pearson" else (lambda a, b: a == b)
    assert same(task["artifact"], task["reference"]) and same(task["drop"], 0.0)
    assert set(task["extra"]) == others
    assert all(same(v["artifact"], v["reference"]) for v in task["extra"].values())
    assert all(0.0 <= task[k] <= 100.0 for k in ("reference", "artifact")) or gated == "pearson"
    assert any(c["case"].startswith("eval 1-") for c in manifest["artifacts"][0]["validation"]["cases"])


def test_revalidation_reuses_the_eval_file(tiny_checkpoints, tmp_path):
    name, content = EVAL_FILES["seq-single"]
    data = tmp_path / name
    data.write_text(content)
    out = tmp_path / "out"
    built = build(tiny_checkpoints["seq-single"], out, targets=["onnx:fp32"], eval_file=data)
    check = validate_dir(out)
    assert check.passed, check.failures
    assert check.entries[0].validation.task.reference == built.entries[0].validation.task.reference
    data.write_text(content + _jsonl({"text": "good food", "label": 1}))
    assert any("changed since the build" in p for p in validate_dir(out).problems)
    data.unlink()
    with pytest.raises(DataFileError, match="eval file this manifest was built with is gone"):
        validate_dir(out)


# ---- reading files -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints, ner_checkpoint):
    from distilforge.checkpoint import load_checkpoint

    return {key: load_checkpoint(_checkpoint(key, tiny_checkpoints, ner_checkpoint)) for key in EVAL_FILES}


def test_csv_formats(loaded, tmp_path):
    cases = {
        "seq-single": "text,label\nthe market is up,LABEL_1\nrain,2\n",
        "seq-regression": "text,label\ngood,1.5\nbad,-2\n",
        "token": "tokens,tags\nthe bank up,O B-LOC O\n",
        "qa": "question,context,answer\nwho won,the team won,team\n",
        "multiple-choice": "prompt,choices,label\nthe team,won|lost,1\n",
    }
    expected = {"seq-single": (1, 2), "seq-regression": (1.5, -2.0), "token": (("O", "B-LOC", "O"),),
                "qa": ("team",), "multiple-choice": (1,)}
    for key, content in cases.items():
        path = tmp_path / f"{key}.csv"
        path.write_text(content)
        ckpt = loaded[key]
        assert load_eval_set(path, ckpt.info, ckpt.tokenizer).labels == expected[key], key
    path = tmp_path / "multi.csv"
    path.write_text(EVAL_FILES["seq-multi"][1])  # ids or names separated by '|'; an empty cell: no label
    ckpt = loaded["seq-multi"]
    assert load_eval_set(path, ckpt.info, ckpt.tokenizer).labels == ((0, 2), (1,), (), (1, 3))


def test_truncated_words_and_answers_count_as_missed(loaded, tmp_path):
    """A fixed-shape artifact sees texts cut to its sequence: words past the cut are predicted 'O',
    answers past it cannot be found (F1 0)."""
    path = tmp_path / "ner.jsonl"
    path.write_text(_jsonl({"tokens": ["the", "market", "is", "up", "in", "the", "bank"],
                            "tags": ["O", "O", "O", "O", "O", "O", "B-LOC"]}))
    ckpt = loaded["token"]
    eval_set = load_eval_set(path, ckpt.info, ckpt.tokenizer)
    batch = eval_batches(ckpt.tokenizer, eval_set, max_length=6)[0]  # [CLS] + 4 words + [SEP]
    assert batch.align[0] == (1, 2, 3, 4, -1, -1, -1)
    logits = np.zeros((1, 6, 5), dtype=np.float32)
    logits[0, :, 3] = 1.0  # the model says B-LOC everywhere it can
    assert score(eval_set, [batch], [{"logits": logits}])["entity_recall"] == 0.0

    path = tmp_path / "qa.jsonl"
    path.write_text(_jsonl({"question": "what", "context": "the market is up in the bank", "answer": "bank"}))
    ckpt = loaded["qa"]
    eval_set = load_eval_set(path, ckpt.info, ckpt.tokenizer)
    batch = eval_batches(ckpt.tokenizer, eval_set, max_length=6)[0]
    start = np.zeros((1, 6), dtype=np.float32)
    start[0, 3] = 5.0  # 'market'
    scores = score(eval_set, [batch], [{"start_logits": start, "end_logits": start.copy()}])
    assert scores == {"f1": 0.0, "exact_match": 0.0}
    full = eval_batches(ckpt.tokenizer, eval_set, max_length=64)[0]
    seq = full.case.shape[-1]
    start = np.zeros((1, seq), dtype=np.float32)
    start[0, seq - 2] = 5.0  # 'bank', the last context token
    assert score(eval_set, [full], [{"start_logits": start, "end_logits": start.copy()}])["exact_match"] == 100.0


def test_multiple_choice_batches_by_choice_count(loaded, tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(EVAL_FILES["multiple-choice"][1])
    ckpt = loaded["multiple-choice"]
    batches = eval_batches(ckpt.tokenizer, load_eval_set(path, ckpt.info, ckpt.tokenizer), max_length=64)
    assert [b.case.shape[:2] for b in batches] == [(1, 2), (1, 3), (2, 2)]
    assert len({b.case.name for b in batches}) == 3 and all(b.case.rows_alone for b in batches)


# ---- metric functions on hand-made predictions ---------------------------------------------------------


def test_entity_f1_on_known_tags():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]
    assert metrics.entity_scores(gold, gold)["entity_f1"] == 100.0
    predicted = [["B-PER", "O", "O", "B-LOC"], ["O", "B-LOC", "I-LOC"]]  # the person's end is wrong
    scores = metrics.entity_scores(gold, predicted)
    assert scores["entity_precision"] == pytest.approx(200 / 3) and scores["entity_recall"] == pytest.approx(200 / 3)
    assert scores["entity_f1"] == pytest.approx(200 / 3)
    assert metrics.entity_scores(gold, [["O"] * 4, ["O"] * 3])["entity_f1"] == 0.0


def test_squad_normalization_exact_match_and_f1():
    assert metrics.normalize_answer("The  Market, is UP!") == "market is up"
    assert metrics.squad_exact("the market", "Market.") == 100.0
    assert metrics.squad_exact("market", "stock market") == 0.0
    assert metrics.squad_f1("the stock market", "market price") == pytest.approx(50.0)  # p 1/2, r 1/2
    assert metrics.squad_f1("market", "") == 0.0


def test_pearson_mse_and_classification_metrics():
    assert metrics.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(100.0)
    assert metrics.pearson([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-100.0)
    assert metrics.pearson([1, 2, 3], [5, 5, 5]) == 0.0  # constant predictions: no relation, never NaN
    assert metrics.mse([1.0, 2.0], [2.0, 4.0]) == pytest.approx(2.5)
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 75.0
    assert metrics.macro_f1([0, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx((80.0 + 200 / 3) / 2)
    gold = np.array([[1, 0, 1], [0, 1, 0]])
    assert metrics.micro_f1_multilabel(gold, np.array([[1, 0, 0], [0, 1, 1]])) == pytest.approx(200 / 3)


def test_best_span_stays_in_context_and_in_length():
    start = np.array([9.0, 1.0, 2.0, 0.0, 0.0])
    end = np.array([9.0, 0.0, 1.0, 3.0, 0.0])
    allowed = np.array([False, True, True, True, False])  # position 0 is the question
    assert best_span(start, end, allowed) == (2, 3)
    assert best_span(start, end, allowed, max_tokens=1) == (2, 2)
    assert best_span(start, end, np.zeros(5, dtype=bool)) is None
    assert best_span(np.array([0.0, 0.0, 5.0]), np.array([5.0, 0.0, 0.0]), np.ones(3, dtype=bool)) != (2, 0)
