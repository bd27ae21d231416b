"""The built-in default model: the exact BERT -> DistilBERT mapping and the trained head."""

import json

import pytest
import torch


def test_minilm_maps_exactly_onto_distilbert():
    from transformers import AutoTokenizer, BertModel

    from distilforge.default_model import load_mapped_encoder, source_dir

    distil, _ = load_mapped_encoder()
    bert = BertModel.from_pretrained(str(source_dir()), local_files_only=True, add_pooling_layer=False).eval()
    tok = AutoTokenizer.from_pretrained(str(source_dir()), local_files_only=True)
    batch = tok(["The market rallied after the rate cut.", "Snow is expected tonight in the hills, a lot."],
                padding=True, return_tensors="pt")
    with torch.inference_mode():
        a = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        b = distil(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["attention_mask"].bool()
    assert (a[keep] - b[keep]).abs().max().item() < 1e-4


def test_topic_data_is_shipped_and_split():
    from distilforge.default_model import load_topics, sample_texts

    data = load_topics()
    assert len(data.labels) == 5
    assert len(data.train) == 375 and len(data.test) == 125
    assert not {r.text for r in data.train} & {r.text for r in data.test}
    assert len(sample_texts()) == 128


@pytest.mark.slow
def test_default_checkpoint_is_trained_and_cached(default_checkpoint):
    path, provenance = default_checkpoint
    assert provenance["test_accuracy"] >= 0.85
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForSequenceClassification"]
    assert config["dim"] == 384 and config["n_layers"] == 6
