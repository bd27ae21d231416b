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


@pytest.mark.slow
def test_default_checkpoint_is_the_same_bytes_with_another_cpus_kernels(default_checkpoint, tmp_path):
    """Built with torch's portable kernels and MKL/oneDNN held to SSE4 (what an older CPU runs; float32 rounding
    differs from AVX2/AVX-512 kernels), the default model's weights are the same bytes: every artifact and verdict
    built from it then starts from the same checkpoint on every CPU class (before float64 training and a seeded
    head, 1781 pre_classifier weights moved)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41", "HF_HUB_OFFLINE": "1"}
    code = "import sys; from pathlib import Path; from distilforge.default_model import build_default_model; " \
           "build_default_model(Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=True, capture_output=True, timeout=600)
    path, _ = default_checkpoint
    assert (tmp_path / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
