import json

import pytest
from tiny import TINY_MODELS

from distilforge.checkpoint import inspect_checkpoint, load_checkpoint
from distilforge.heads import HEADS, SENTENCE_HEAD


def test_every_head_has_a_tiny_model():
    """The sentence-transformers head has its own tiny folders and builds (tests/test_sentence.py)."""
    covered = {(t.architecture, t.config.get("problem_type")) for t in TINY_MODELS}
    for head in HEADS:
        if head is SENTENCE_HEAD:
            continue
        assert (head.architecture, head.problem_type) in covered, head.key


@pytest.mark.parametrize("tiny", TINY_MODELS, ids=lambda t: t.key)
def test_head_detected_and_loaded(tiny, tiny_checkpoints):
    loaded = load_checkpoint(tiny_checkpoints[tiny.key])
    assert loaded.head.architecture == tiny.architecture
    if "problem_type" in tiny.config:
        assert loaded.head.problem_type == tiny.config["problem_type"]
    assert loaded.tokenizer is not None
    assert type(loaded.model).__name__ == tiny.architecture


def test_problem_type_inferred_from_label_count(tmp_path):
    from tiny import make_checkpoint

    path = make_checkpoint(tmp_path, "seq-regression")
    config = json.loads((path / "config.json").read_text())
    config.pop("problem_type", None)
    (path / "config.json").write_text(json.dumps(config))
    assert inspect_checkpoint(path).head.problem_type == "regression"


def test_config_without_architectures_is_the_base_model(tmp_path):
    from tiny import make_checkpoint

    path = make_checkpoint(tmp_path, "base")
    config = json.loads((path / "config.json").read_text())
    config.pop("architectures")
    (path / "config.json").write_text(json.dumps(config))
    assert inspect_checkpoint(path).head.architecture == "DistilBertModel"


@pytest.mark.parametrize("variant", [
    {"sinusoidal_pos_embds": True},
    {"n_layers": 3, "n_heads": 2},
    {"n_layers": 1, "n_heads": 8, "dim": 64},
])
def test_config_variants_load(tmp_path, variant):
    from tiny import make_checkpoint

    loaded = load_checkpoint(make_checkpoint(tmp_path, "seq-single", **variant))
    for key, value in variant.items():
        assert getattr(loaded.model.config, key) == value


def test_pytorch_bin_and_sharded_weights_load(tmp_path):
    from tiny import make_checkpoint

    bin_path = make_checkpoint(tmp_path / "bin", "token", safe_serialization=False)
    assert (bin_path / "pytorch_model.bin").is_file()
    sharded = make_checkpoint(tmp_path / "sharded", "token", max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a, b = load_checkpoint(bin_path), load_checkpoint(sharded)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=False):
        assert (x == y).all(), name


def test_checkpoint_without_tokenizer_loads(tmp_path):
    from tiny import make_checkpoint

    loaded = load_checkpoint(make_checkpoint(tmp_path, "qa", tokenizer=False))
    assert loaded.tokenizer is None
