"""sentence-transformers folders (distilforge/sentence.py): read as sentence-transformers reads them, embedded as
`SentenceTransformer.encode` embeds, built into every target with `sentence_embedding` beside `last_hidden_state`,
scored on similarity pairs and run by `predict`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import installed_targets
from scipy.stats import spearmanr
from test_bad_input import run_cli
from tiny import WORDS, make_checkpoint, save_sentence_transformer, write_legacy_sentence_folder

import distilforge
from distilforge.checkpoint import load_checkpoint

# what this module's fixtures build is built once: one xdist worker runs the whole module (a module-scoped
# fixture is per worker process)
pytestmark = pytest.mark.xdist_group("sentence")

TEXTS = ["the market is up", "rain and snow on the old bank", "a", " ".join(WORDS * 2), "what is the new phone app",
         "the team won the game", "cheese soup and bread"]


@pytest.fixture(scope="module")
def sentence_models(tmp_path_factory):
    """Three folders over one tiny DistilBertModel: mean + Normalize and cls + max (written by sentence-transformers
    itself), and 2.x's layout with the transformer in 0_Transformer/ (mean, max and mean_sqrt_len, max 24 tokens)."""
    root = tmp_path_factory.mktemp("sentence")
    base = make_checkpoint(root, "base", n_layers=1)  # ExecuTorch's lowering, most of the build, costs per layer
    return {"mean-normalize": save_sentence_transformer(base, root / "mean-normalize"),
            "cls-max": save_sentence_transformer(base, root / "cls-max", ["cls", "max"], normalize=False),
            "legacy-subfolder": write_legacy_sentence_folder(base, root / "legacy-subfolder",
                                                             ("mean", "max", "mean_sqrt_len_tokens"))}


def _encode(folder, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True, batch_size=len(texts))


@pytest.mark.parametrize("name", ["mean-normalize", "cls-max", "legacy-subfolder"])
def test_reference_embeds_as_sentence_transformers_encode(sentence_models, name):
    folder = sentence_models[name]
    ckpt = load_checkpoint(folder)
    enc = ckpt.tokenizer(TEXTS, padding=True, truncation=True, max_length=ckpt.info.max_length, return_tensors="pt")
    with torch.inference_mode():
        ours = ckpt.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    want = _encode(folder, TEXTS)
    assert ours["sentence_embedding"].shape == want.shape
    np.testing.assert_allclose(ours["sentence_embedding"].numpy(), want, atol=1e-5, rtol=0)
    assert ours["last_hidden_state"].shape[:2] == enc["input_ids"].shape
    if name == "legacy-subfolder":  # sentence_bert_config.json's max_seq_length cuts the long text as encode() does
        assert ckpt.info.max_length == 24 and enc["input_ids"].shape[1] == 24


def test_folder_record_names_pooling_and_files(sentence_models):
    info = load_checkpoint(sentence_models["legacy-subfolder"]).info
    assert info.head.task == "sentence-similarity"
    assert info.summary()["sentence_transformers"] == {
        "pooling": ["max", "mean", "mean_sqrt_len_tokens"], "normalize": True, "transformer": "0_Transformer",
        "embedding_dimension": 96, "max_seq_length": 24}
    paths = {f["path"] for f in info.file_hashes()}
    assert {"modules.json", "1_Pooling/config.json", "0_Transformer/model.safetensors"} <= paths


@pytest.fixture(scope="module")
def built_sentence(sentence_models, tmp_path_factory):
    """mean + Normalize, every installed target, the default (real) tolerances, with STS-style pairs to score."""
    from distilforge.options import BuildOptions
    from distilforge.pipeline import build

    root = tmp_path_factory.mktemp("sentence-built")
    eval_file = root / "sts.jsonl"
    rng = np.random.default_rng(0)
    pairs = [(TEXTS[i % len(TEXTS)], TEXTS[(i * 3 + 1) % len(TEXTS)], float(rng.uniform(0, 5))) for i in range(20)]
    eval_file.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in pairs))
    result = build(sentence_models["mean-normalize"], root / "out", targets=sorted(installed_targets()),
                   options=BuildOptions(), eval_file=eval_file, force=True, keep_going=True)
    return result, pairs


def test_every_target_builds_with_both_outputs_and_passes(built_sentence):
    result, _ = built_sentence
    entries = result.manifest["artifacts"]
    assert {e["target"] for e in entries} == installed_targets()
    for entry in entries:
        assert entry["validation"] and entry["validation"]["passed"], (entry["target"], result.failures)
        assert [o["name"] for o in entry["outputs"]] == ["last_hidden_state", "sentence_embedding"]
        embedding = [m for m in entry["validation"]["cases"] if m["output"] == "sentence_embedding"]
        assert sum(m["decisions"] for m in embedding) >= 100  # nearest neighbours among real texts
        if entry["precision"] == "fp32":
            assert max(m["max_abs"] for m in embedding) <= 1e-4
        record = entry["validation"]["embedding"]["sentence_embedding"]  # what an embedding rule is chosen from
        assert record["texts"] >= 16 and 0 <= record["agreement"] <= record["agreement_within"]["0.01"] <= 1
        assert record["min_cosine"] <= record["mean_cosine"] and -1 <= record["pairwise_spearman"] <= 1
        assert sum(record["differing_margins"].values()) == round((1 - record["agreement"]) * record["texts"])


def test_reference_scores_pairs_as_sentence_transformers(built_sentence, sentence_models):
    result, pairs = built_sentence
    task = result.manifest["reference"]["task"]
    assert task["metric"] == "spearman"
    a = _encode(sentence_models["mean-normalize"], [p[0] for p in pairs])
    b = _encode(sentence_models["mean-normalize"], [p[1] for p in pairs])
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert task["value"] == pytest.approx(spearmanr([p[2] for p in pairs], cosine).statistic * 100, abs=1e-6)
    for entry in result.manifest["artifacts"]:
        assert entry["validation"]["task"]["metric"] == "spearman"


def test_predict_prints_norm_and_cosine(built_sentence, sentence_models):
    result, _ = built_sentence
    first, second = TEXTS[0], TEXTS[1]
    results = distilforge.load(result.out, "onnx:fp32")(first, second)
    want = _encode(sentence_models["mean-normalize"], [first, second])
    assert [r["norm"] for r in results[:2]] == pytest.approx([1.0, 1.0], abs=1e-5)
    np.testing.assert_allclose(results[0]["embedding"], want[0], atol=1e-5)
    assert results[2]["cosine"] == pytest.approx(float(want[0] @ want[1]), abs=1e-5)
    cli = run_cli("predict", str(result.out), "--target", "onnx:fp32", first, second)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].startswith("sentence_embedding 32 dims, norm 1.0000\t")
    assert lines[2] == f"cosine {float(want[0] @ want[1]):.4f}\t{first} | {second}"


def test_ordinary_build_does_not_import_sentence_transformers(sentence_models, tmp_path):
    code = ("import sys; from distilforge import cli; "
            f"code = cli.main(['build', {str(sentence_models['cls-max'])!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'--targets', 'onnx:fp32', '--quiet']); assert 'sentence_transformers' not in sys.modules; sys.exit(code)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize("target,backend", [("onnx:fp32", "onnx"), ("onnx:int8-dynamic", "onnx"),
                                            ("openvino:fp32", "openvino")])
def test_folder_loads_in_sentence_transformers(built_sentence, sentence_models, target, backend):
    """The folder carries modules.json and the pooling config: sentence-transformers' own ONNX and OpenVINO
    backends load it as it is and embed as the checkpoint does."""
    from sentence_transformers import SentenceTransformer

    result, _ = built_sentence
    folder = result.out / target.replace(":", "-")
    model = SentenceTransformer(str(folder), backend=backend, device="cpu")
    got = model.encode(TEXTS, convert_to_numpy=True)
    want = _encode(sentence_models["mean-normalize"], TEXTS)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() > (0.999999 if target.endswith("fp32") else 0.99), cosine


def test_optimum_sentence_export_is_validated_as_a_peer(built_sentence, sentence_models, tmp_path):
    """Optimum exports a sentence-transformers folder with `token_embeddings` (sentence-transformers' name); the
    peer's runner reads it as last_hidden_state, so both outputs are held to our reference and rules."""
    from distilforge.artifacts.manifest import read_manifest
    from distilforge.bench.peer import peer_options, run_peer_commands, validate_peer
    from distilforge.pipeline.source import source_for

    result, _ = built_sentence
    manifest = read_manifest(result.out)
    models = run_peer_commands(tmp_path / "peer", sentence_models["mean-normalize"], "sentence-similarity", "--avx2",
                               lambda _: None)
    assert models[0].artifact.details["output_names_as"] == {"token_embeddings": "last_hidden_state"}
    validate_peer(tmp_path, models, source_for(manifest), peer_options(manifest, 1), lambda _: None)
    for model in models:
        assert model.error is None and model.entry.validation.passed, (model.error, model.entry)
