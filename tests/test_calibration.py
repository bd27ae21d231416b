"""Calibration files: txt, jsonl, csv read and tokenized; bad files get one clear error."""

import pytest

from distilforge.errors import DataFileError
from distilforge.heads import find_head
from distilforge.quantize.calibration import load_calibration

SEQ = find_head("DistilBertForSequenceClassification", "single_label_classification")
QA = find_head("DistilBertForQuestionAnswering", None)
MC = find_head("DistilBertForMultipleChoice", None)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoints["seq-single"]))


def test_shipped_default_is_varied_real_text(tokenizer):
    calib = load_calibration(None, tokenizer, SEQ, samples=64)
    assert len(calib.samples) == 64 and len(calib.sha256) == 64
    assert calib.source == "distilforge/data/calibration.txt (shipped)"  # not an install path: same manifest anywhere
    lengths = {s["input_ids"].shape[-1] for s in calib.samples}
    assert len(lengths) > 10  # varied, not one repeated shape
    padded = calib.padded(32)
    assert all(s["input_ids"].shape == (1, 32) for s in padded)


@pytest.mark.parametrize("name, content, head", [
    ("c.txt", "the market is up\nrain and snow\n", SEQ),
    ("c.jsonl", '{"text": "the market is up"}\n{"text": "rain and snow"}\n', SEQ),
    ("c.csv", "id,text\n1,the market is up\n2,rain and snow\n", SEQ),
    ("c.jsonl", '{"question": "what is up", "context": "the market is up"}\n'
                '{"question": "who won", "context": "the team won"}\n', QA),
    ("c.jsonl", '{"prompt": "the team", "choices": ["won", "lost"]}\n'
                '{"prompt": "the bank", "choices": ["is up", "is down"]}\n', MC),
])
def test_formats_are_read(tmp_path, tokenizer, name, content, head):
    path = tmp_path / name
    path.write_text(content)
    calib = load_calibration(path, tokenizer, head, samples=2)
    assert len(calib.samples) == 2
    if head is MC:
        assert calib.samples[0]["input_ids"].shape[:2] == (1, 2)
    assert calib.record()["source"] == str(path)


@pytest.mark.parametrize("name, content, needle", [
    ("empty.txt", "", "empty"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("nocol.csv", "id,body\n1,hello\n", "no 'text' field or column"),
    ("bad.jsonl", '{"text": "ok"}\n{not json\n', "bad.jsonl:2: not valid JSON"),
    ("few.txt", "only one line\n", "1 calibration samples, 2 asked for"),
    ("c.parquet", "x", "unknown file type"),
])
def test_bad_calibration_files(tmp_path, tokenizer, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataFileError) as err:
        load_calibration(path, tokenizer, SEQ, samples=2)
    message = str(err.value)
    assert needle in message and name in message and "\n" not in message
