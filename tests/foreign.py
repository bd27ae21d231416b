"""Tiny checkpoints written by TensorFlow and by Flax (transformers' TFDistilBert* / FlaxDistilBert* classes), one per
head of tests/tiny.py, with what those frameworks say about them.

Run as a script in its own process (`python tests/foreign.py tensorflow|flax ROOT`): TensorFlow and JAX then stay
out of the test process (which runs with USE_TF=0 / USE_FLAX=0, as distilforge does), and both frameworks' imports
(seconds each) are paid once per session, side by side. For every tiny head it writes:

- ROOT/<key>/: `save_pretrained` of a model the framework initialised itself (a fixed seed; biases and LayerNorm
  parameters, which start as 0 and 1, moved by seeded noise so that a swapped tensor shows), plus the tokenizer;
- ROOT/<key>.reference.npz: a validation-like grid of inputs (batch sizes 1-3, lengths up to the model's maximum,
  rows padded with attention-mask zeros), the framework's own outputs on it (`out:<name>:<case>`), and the
  PyTorch state dict transformers' own conversion gives (`from_tf=True` / `from_flax=True`: `pt:<name>`).

and the seq-single model saved again in shards (`max_shard_size="20kB"`: ROOT/seq-single-sharded/) and as
`model.safetensors` (`safe_serialization=True`: ROOT/seq-single-safetensors/, its metadata saying `tf` / `flax`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

FRAMEWORKS = ("tensorflow", "flax")
PREFIX = {"tensorflow": "TF", "flax": "Flax"}
WEIGHTS = {"tensorflow": "tf_model.h5", "flax": "flax_model.msgpack"}
SHARDED = "seq-single-sharded"
SAFETENSORS = "seq-single-safetensors"
SEED = 0


def grid(key: str, config: Any) -> list[dict[str, np.ndarray]]:
    """Seeded inputs: (batch, length) cases with padded rows (attention-mask zeros at the end of a row)."""
    rng = np.random.default_rng(SEED)
    choices = 3 if key == "multiple-choice" else None
    cases = []
    for batch, length in ((1, 7), (2, 16), (3, config.max_position_embeddings)):
        shape = (batch, choices, length) if choices else (batch, length)
        ids = rng.integers(5, config.vocab_size, size=shape).astype(np.int32)
        mask = np.ones(shape, dtype=np.int32)
        flat = mask.reshape(-1, length)
        for row in range(flat.shape[0]):
            if row % 2 == 1 or length == config.max_position_embeddings:  # padded rows, short and long
                flat[row, rng.integers(1, length):] = 0
        ids[mask == 0] = 0  # [PAD]
        cases.append({"input_ids": ids, "attention_mask": mask})
    return cases


def outputs(framework: str, model: Any, case: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if framework == "tensorflow":
        result = model(input_ids=case["input_ids"], attention_mask=case["attention_mask"], training=False)
    else:
        result = model(case["input_ids"], attention_mask=case["attention_mask"], train=False)
    return {name: np.asarray(value) for name, value in result.items()}


def build_tensorflow(architecture: str, config: Any) -> Any:
    import tensorflow as tf
    import transformers

    tf.keras.utils.set_random_seed(SEED)
    model = getattr(transformers, "TF" + architecture)(config)
    model(model.dummy_inputs, training=False)  # builds the variables
    for variable in model.weights:
        name = variable.name.split("/")[-1]
        if name.startswith(("bias", "beta", "gamma")):
            variable.assign_add(tf.random.normal(variable.shape, stddev=0.1, seed=SEED))
    return model


def build_flax(architecture: str, config: Any) -> Any:
    import jax
    import transformers
    from flax.traverse_util import flatten_dict, unflatten_dict

    model = getattr(transformers, "Flax" + architecture)(config, seed=SEED)
    flat = flatten_dict(model.params)
    key = jax.random.PRNGKey(SEED)
    for i, path in enumerate(sorted(flat)):
        if path[-1] in ("bias", "scale"):
            flat[path] = flat[path] + 0.1 * jax.random.normal(jax.random.fold_in(key, i), flat[path].shape)
    model.params = unflatten_dict(flat)
    return model


def convert_to_pytorch(framework: str, model: Any, folder: Path) -> Any:
    """transformers' own conversion, as `from_pretrained(folder, from_tf=True)` / `from_flax=True` runs it.

    Called directly on a model built on the CPU: transformers 4.57's from_pretrained builds the model on the meta
    device, and these converters copy into it with load_state_dict (no assign), leaving every parameter on meta."""
    if framework == "tensorflow":
        from transformers.modeling_tf_pytorch_utils import load_tf2_checkpoint_in_pytorch_model

        model = load_tf2_checkpoint_in_pytorch_model(model, str(folder / WEIGHTS[framework]), allow_missing_keys=True)
    else:
        from transformers.modeling_flax_pytorch_utils import load_flax_checkpoint_in_pytorch_model

        model = load_flax_checkpoint_in_pytorch_model(model, str(folder / WEIGHTS[framework]))
    return model.eval()


def write(framework: str, root: Path) -> None:
    import transformers
    from tiny import BASE_CONFIG, TINY_MODELS, write_vocab

    root.mkdir(parents=True, exist_ok=True)
    for tiny in TINY_MODELS:
        out = root / tiny.key
        vocab = write_vocab(root / f"{tiny.key}-vocab.txt")
        settings = {**BASE_CONFIG, **tiny.config, "vocab_size": len(vocab.read_text().splitlines()),
                    "architectures": [tiny.architecture]}
        config = transformers.DistilBertConfig(**settings)
        model = (build_tensorflow if framework == "tensorflow" else build_flax)(tiny.architecture, config)
        model.save_pretrained(str(out))
        transformers.DistilBertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(out))
        if tiny.key == "seq-single":  # the same model in shards, and as model.safetensors
            model.save_pretrained(str(root / SHARDED), max_shard_size="20kB")
            model.save_pretrained(str(root / SAFETENSORS), safe_serialization=True)
            for folder in (SHARDED, SAFETENSORS):
                transformers.DistilBertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(root / folder))
        arrays: dict[str, np.ndarray] = {}
        for i, case in enumerate(grid(tiny.key, config)):
            arrays.update({f"in:{name}:{i}": value for name, value in case.items()})
            arrays.update({f"out:{name}:{i}": value for name, value in outputs(framework, model, case).items()})
        converted = convert_to_pytorch(framework, getattr(transformers, tiny.architecture)(config), out)
        arrays.update({f"pt:{name}": t.detach().numpy() for name, t in converted.state_dict().items()})
        np.savez(root / f"{tiny.key}.reference.npz", **arrays)


def main(framework: str, root: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    write(framework, Path(root))


def environment(framework: str) -> dict[str, str]:
    """The script's environment: transformers with TensorFlow (or Flax) and PyTorch both available."""
    env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_FLAX", "USE_TORCH")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
               USE_TF="AUTO" if framework == "tensorflow" else "0",
               USE_FLAX="AUTO" if framework == "flax" else "0",
               JAX_PLATFORMS="cpu", TF_ENABLE_ONEDNN_OPTS="0")
    return env


if __name__ == "__main__":
    main(*sys.argv[1:])
