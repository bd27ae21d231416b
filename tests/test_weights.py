"""Checkpoints whose weights TensorFlow or Flax wrote (distilforge/weights/): every head loads, bit for bit what
transformers' own conversion gives, computing what the framework itself computes; the manifest says which
framework wrote them; a folder with PyTorch weights too uses those and says so.

The checkpoints are written by transformers' TFDistilBert* / FlaxDistilBert* classes in their own processes, once
per session (the `foreign_checkpoints` fixture, tests/foreign.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
from foreign import FRAMEWORKS, SAFETENSORS, SHARDED
from tiny import TINY_MODELS

from distilforge.checkpoint import inspect_checkpoint, load_checkpoint
from distilforge.weights import flax as flax_reader
from distilforge.weights import tensorflow as tf_reader

KEYS = [t.key for t in TINY_MODELS]
WEIGHT_FILE = {"tensorflow": "tf_model.h5", "flax": "flax_model.msgpack"}
ATOL = 1e-5
# `distilforge build` of each head on two cheap targets, heads shared between the frameworks (8 builds, not 16);
# the exhaustive test builds every target for both
BUILT_FROM = {key: FRAMEWORKS[i % 2] for i, key in enumerate(KEYS)}
CHEAP_TARGETS = "onnx:fp32,torchscript:fp32"


def reference(root: Path, key: str) -> dict[str, np.ndarray]:
    with np.load(root / f"{key.removesuffix('-sharded').removesuffix('-safetensors')}.reference.npz") as ref:
        return {name: ref[name] for name in ref.files}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distilforge", *args], capture_output=True, text=True, timeout=1200)


@pytest.mark.parametrize("key", [*KEYS, SHARDED, SAFETENSORS])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loads_as_transformers_converts_it_and_computes_what_the_framework_computes(framework, key,
                                                                                   foreign_checkpoints):
    import torch

    folder = foreign_checkpoints[framework] / key
    ckpt = load_checkpoint(folder)
    ref = reference(foreign_checkpoints[framework], key)
    assert ckpt.info.framework == framework and ckpt.info.ignored_files == ()
    if key == SHARDED:
        assert ckpt.info.weight_files[0].name == WEIGHT_FILE[framework] + ".index.json"
        assert len(ckpt.info.weight_files) > 2
    if key == SAFETENSORS:  # save_pretrained(safe_serialization=True): its metadata names the framework
        assert [f.name for f in ckpt.info.weight_files] == ["model.safetensors"]

    # the state dict: transformers' own from_tf / from_flax conversion, bit for bit
    ours = {name: t.detach().numpy() for name, t in ckpt.model.state_dict().items()}
    theirs = {name.removeprefix("pt:"): v for name, v in ref.items() if name.startswith("pt:")}
    assert sorted(ours) == sorted(theirs)
    differ = [name for name in ours if ours[name].dtype != theirs[name].dtype or
              not np.array_equal(ours[name], theirs[name])]
    assert not differ, f"{len(differ)} tensor(s) differ from transformers' conversion, e.g. {differ[0]}"
    if key == "masked-lm":  # tied, as a PyTorch masked-LM checkpoint loads
        model = ckpt.model
        assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight

    # the outputs: the framework's own, on a padded grid (positions the mask drops are not compared)
    cases = sorted({int(name.rsplit(":", 1)[1]) for name in ref if name.startswith("in:")})
    assert len(cases) >= 3 and any((ref[f"in:attention_mask:{i}"] == 0).any() for i in cases)
    for i in cases:
        ids, mask = ref[f"in:input_ids:{i}"], ref[f"in:attention_mask:{i}"]
        with torch.no_grad():
            out = ckpt.model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
        names = [n.split(":")[1] for n in ref if n.startswith("out:") and n.endswith(f":{i}")]
        assert sorted(names) == sorted(out.keys())
        for name in names:
            got, want = out[name].numpy(), ref[f"out:{name}:{i}"]
            assert got.shape == want.shape, (name, got.shape, want.shape)
            if got.shape[:mask.ndim] == mask.shape:  # per token: only the positions the mask keeps
                got, want = got[mask.astype(bool)], want[mask.astype(bool)]
            diff = float(np.abs(got - want).max())
            assert diff <= ATOL, f"{framework} {key} {name} case {i} {ids.shape}: max abs diff {diff:.2e}"


def test_the_run_time_path_needs_neither_tensorflow_nor_flax(foreign_checkpoints):
    """Loading in a process where TensorFlow, Keras, JAX and Flax cannot be imported (as if not installed: what
    importlib finds for them is None); h5py and msgpack are what it reads with."""
    code = f"""
import sys
HIDDEN = ("tensorflow", "tf_keras", "keras", "jax", "jaxlib", "flax")
sys.modules.update(dict.fromkeys(HIDDEN))  # None: import raises ImportError, importlib.util.find_spec says None
from distilforge.checkpoint import load_checkpoint
for folder in {[str(foreign_checkpoints[fw] / "qa") for fw in FRAMEWORKS]!r}:
    assert load_checkpoint(folder).info.framework in ("tensorflow", "flax")
assert "h5py" in sys.modules and "msgpack" in sys.modules
"""
    env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_FLAX")}  # transformers' own lookup
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("key", KEYS)
def test_build_records_the_framework(key, foreign_checkpoints, tmp_path):
    from distilforge.pipeline import build

    framework = BUILT_FROM[key]
    out = tmp_path / "out"
    result = build(foreign_checkpoints[framework] / key, out, targets=CHEAP_TARGETS.split(","))
    assert result.passed, result.failures
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["checkpoint"]["framework"] == framework
    assert manifest["checkpoint"]["ignored_files"] == []
    assert WEIGHT_FILE[framework] in {f["path"] for f in manifest["checkpoint"]["files"]}
    assert sorted(a["target"] for a in manifest["artifacts"]) == sorted(CHEAP_TARGETS.split(","))


def test_a_folder_with_pytorch_weights_too_uses_those_and_says_so(foreign_checkpoints, tiny_checkpoints, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_checkpoints["seq-single"], folder)
    for fw in FRAMEWORKS:
        shutil.copy(foreign_checkpoints[fw] / "seq-single" / WEIGHT_FILE[fw], folder)
    info = inspect_checkpoint(folder)
    assert info.framework == "pytorch" and [p.name for p in info.weight_files] == ["model.safetensors"]
    assert [p.name for p in info.ignored_files] == ["flax_model.msgpack", "tf_model.h5"]

    out = tmp_path / "out"
    result = run_cli("build", str(folder), "--out", str(out), "--targets", "torchscript:fp32")
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if "ignoring" in line]
    assert len(notes) == 1 and notes[0].startswith("[distilforge] "), result.stderr
    assert notes[0].endswith(f"{folder.resolve()}: using the PyTorch weights (model.safetensors); "
                             "ignoring flax_model.msgpack, tf_model.h5"), notes[0]
    record = json.loads((out / "manifest.json").read_text())["checkpoint"]
    assert record["framework"] == "pytorch"
    assert record["ignored_files"] == ["flax_model.msgpack", "tf_model.h5"]

    # TensorFlow's and Flax's but no PyTorch weights: TensorFlow's, the other listed as ignored
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).unlink()
    info = inspect_checkpoint(folder)
    assert info.framework == "tensorflow" and [p.name for p in info.weight_files] == ["tf_model.h5"]
    assert [p.name for p in info.ignored_files] == ["flax_model.msgpack"]

    # docs/manifest.md lists the checkpoint record's keys
    from test_readme import DOCS, documented_keys, section, table_rows

    table = {row[0].strip("`"): row[1] for row in table_rows(section(DOCS / "manifest.md", "The manifest"))}
    assert documented_keys(table["checkpoint"]) == set(record)


def test_a_base_models_wrong_shape_names_both_shapes(foreign_checkpoints, tmp_path):
    """transformers names a base model's tensors without the `distilbert.` its TF/Flax files carry."""
    import h5py

    from distilforge.errors import CheckpointError

    folder = tmp_path / "base"
    shutil.copytree(foreign_checkpoints["tensorflow"] / "base", folder)
    with h5py.File(folder / "tf_model.h5", "r+") as f:
        group = f["distilbert"]
        name = next(n for n in group.attrs["weight_names"] if n.endswith("layer_._1/ffn/lin1/kernel:0"))
        value = group[name][()]
        del group[name]
        group.create_dataset(name, data=value[:, :48])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(folder)
    assert str(error.value) == (f"{folder.resolve()}/tf_model.h5: weights do not match config.json: 1 tensor(s) of "
                                "the wrong shape, e.g. transformer.layer.1.ffn.lin1.weight: (48, 32) in the file, "
                                "(64, 32) for config.json")


# A tiny random QA head's start logits lie within 1e-4 of each other: on the TF-written one openvino:fp16 flipped
# 1 of 109 start decisions (agreement 99.08 % < 99.5 %) at max abs diff 1.1e-4 and cosine 0.9999999, a near-tie
# that fp16 rounding alone decides (as tests/tiny.py says of multiple choice). fp16 is held to 99 % here.
FP16_TIES = ["fp16.min_agreement=0.99"]


@pytest.mark.exhaustive
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_installed_target_builds_from_tf_and_flax_weights(framework, key, foreign_checkpoints, tmp_path):
    """`distilforge build` with no --targets (every installed one, as `built` picks them) on each TF- and
    Flax-written head: over an hour, so `make test` deselects it (`make test-all` runs it)."""
    from conftest import TINY_TOLERANCES, targets_for

    from distilforge.options import BuildOptions
    from distilforge.pipeline import build
    from distilforge.validate.tolerances import parse_overrides

    result = build(foreign_checkpoints[framework] / key, tmp_path / "out", targets=targets_for(key),
                   options=BuildOptions(tolerances=parse_overrides(TINY_TOLERANCES + FP16_TIES)), keep_going=True)
    assert result.passed, result.failures
    assert result.manifest["checkpoint"]["framework"] == framework
    assert sorted(a["target"] for a in result.manifest["artifacts"]) == sorted(targets_for(key))


# ---- the readers on their own: what the tiny models' files do not hold ----------------------------------


def _pack_array(array: np.ndarray, dtype_name: str | None = None) -> msgpack.ExtType:
    data = msgpack.packb((array.shape, dtype_name or array.dtype.name, array.tobytes("C")), use_bin_type=True)
    return msgpack.ExtType(flax_reader.NDARRAY, data)


def test_flax_reader_widens_bfloat16_and_joins_chunked_arrays(tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 2.0 ** -10, -65280.0]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # exact in bfloat16: its upper 16 bits
    kernel = np.arange(12, dtype=np.float32).reshape(3, 4)
    tree = {"a": {"LayerNorm": {"scale": _pack_array(bf16, "bfloat16")},
                  "lin": {"kernel": {flax_reader.CHUNKED: True, "shape": {"0": 3, "1": 4},
                                     "chunks": {"0": _pack_array(kernel.reshape(-1)[:5]),
                                                "1": _pack_array(kernel.reshape(-1)[5:])}}},
                  "emb": {"embedding": _pack_array(np.ones((2, 2), dtype=np.float16))}}}
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(msgpack.packb(tree, use_bin_type=True))
    state = flax_reader.read(path)
    assert sorted(state) == ["a.LayerNorm.weight", "a.emb.weight", "a.lin.weight"]
    assert state["a.LayerNorm.weight"].dtype == np.float32 and np.array_equal(state["a.LayerNorm.weight"], values)
    assert np.array_equal(state["a.lin.weight"], kernel.T)  # a kernel is (in, out); PyTorch's weight (out, in)
    assert state["a.emb.weight"].dtype == np.float32


def test_tensorflow_reader_reads_attributes_keras_split_in_chunks(tmp_path):
    """Keras splits an attribute over HDF5's 64 kB header limit into layer_names0, layer_names1, ..."""
    import h5py

    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = np.array([b"distilbert"], dtype=object)
        f.attrs["layer_names1"] = np.array([b"classifier"], dtype=object)
        names = {"distilbert": ["m/distilbert/embeddings/word_embeddings/weight:0", "m/distilbert/x/gamma:0"],
                 "classifier": ["m/classifier/kernel:0"]}
        for layer, weights in names.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([w.encode() for w in weights], dtype=object)
            for i, w in enumerate(weights):
                group.create_dataset(w, data=np.full((2, 3), i, dtype=np.float32))
    state = tf_reader.read(path)
    assert sorted(state) == ["classifier.weight", "distilbert.embeddings.word_embeddings.weight",
                             "distilbert.x.weight"]
    assert state["classifier.weight"].shape == (3, 2)  # a kernel, transposed
    assert state["distilbert.embeddings.word_embeddings.weight"].shape == (2, 3)  # an embedding, not
