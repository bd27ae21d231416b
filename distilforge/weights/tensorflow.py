"""Keras' `tf_model.h5` (what transformers' TF `save_pretrained` writes) as PyTorch-named tensors, with h5py.

The file is read the way transformers' `load_tf_weights_from_h5` reads it: the root's `layer_names` attribute
names the layers, each layer's `weight_names` attribute names its variables
(`tf_distil_bert_for_masked_lm/distilbert/embeddings/word_embeddings/weight:0`), each a dataset at that path
under the layer's group. A shard of a sharded checkpoint (`tf_model-00001-of-00002.h5`, beside
`tf_model.h5.index.json`) instead lists its variables, without the model's name, in the root's `layer_names`.
Names become PyTorch's and kernels are transposed by transformers' own pure-Python
`convert_tf_weight_name_to_pt_weight_name` and `apply_transpose` (transformers.modeling_tf_pytorch_utils imports no
TensorFlow), as its `from_tf=True` does. A variable stored twice (the word embeddings, which the masked-LM head's
`vocab_projector` layer lists again) keeps its last copy, as Keras' loading does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilforge.errors import CheckpointError, first_line

LFS_POINTER = b"version https://git-lfs"


def read(path: Path) -> dict[str, np.ndarray]:
    import h5py

    _check_not_lfs_pointer(path)
    try:
        handle = h5py.File(path, "r")
    except Exception as e:  # OSError for a truncated or non-HDF5 file
        raise CheckpointError(f"{path}: not a readable HDF5 file (truncated, or another format?): "
                              f"{type(e).__name__}: {first_line(e)}") from None
    with handle:
        try:
            variables = _variables(path, handle, h5py)
            return {name: value for name, value in _converted(variables)}
        except CheckpointError:
            raise
        except Exception as e:  # a damaged dataset: h5py raises OSError, KeyError, ...
            raise CheckpointError(f"{path}: not a readable Keras weights file: {type(e).__name__}: "
                                  f"{first_line(e)}") from None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """`model.safetensors` that TF's save_pretrained(safe_serialization=True) wrote: the variables' names less the
    model's level (`distilbert/embeddings/word_embeddings/weight:0`)."""
    from safetensors.numpy import load_file

    variables = [(f"model/{name}", _float32(value)) for name, value in load_file(str(path)).items()]
    return dict(_converted(variables))


def _float32(value: np.ndarray) -> np.ndarray:
    return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value


def _variables(path: Path, handle: Any, h5py: Any) -> list[tuple[str, np.ndarray]]:
    """(TF variable name with a leading model level, value) for every variable the file stores, in file order."""
    layer_names = _attribute(handle, "layer_names")
    if not layer_names:
        raise CheckpointError(f"{path}: not a Keras weights file (no layer_names attribute at its root)")
    out = []
    for layer in layer_names:
        node = handle.get(layer)
        if isinstance(node, h5py.Dataset):  # a shard: the variable itself, named without the model's level
            out.append((f"model/{layer}", _array(node)))
        elif isinstance(node, h5py.Group):
            for weight in _attribute(node, "weight_names"):
                dataset = node.get(weight)
                if not isinstance(dataset, h5py.Dataset):
                    raise CheckpointError(f"{path}: layer {layer!r} names a weight {weight!r} it does not hold")
                out.append((weight, _array(dataset)))
        else:
            raise CheckpointError(f"{path}: layer_names names {layer!r}, which the file does not hold")
    return out


def _attribute(node: Any, name: str) -> list[str]:
    """A list-of-names attribute, also when Keras split it into `name0`, `name1`, ... (HDF5's header limit)."""
    if name in node.attrs:
        values = list(node.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in node.attrs:
            values.extend(node.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if hasattr(v, "decode") else str(v) for v in values]


def _array(dataset: Any) -> np.ndarray:
    return _float32(np.asarray(dataset[()]))


def _converted(variables: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    from transformers.modeling_tf_pytorch_utils import apply_transpose, convert_tf_weight_name_to_pt_weight_name

    out = []
    for tf_name, value in variables:
        name, transpose = convert_tf_weight_name_to_pt_weight_name(tf_name, tf_weight_shape=value.shape)
        out.append((name, np.ascontiguousarray(apply_transpose(transpose, value, pt_to_tf=False))))
    return out


def _check_not_lfs_pointer(path: Path) -> None:
    try:
        with path.open("rb") as f:
            start = f.read(len(LFS_POINTER))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    if start == LFS_POINTER:
        raise CheckpointError(f"{path}: a Git LFS pointer, not the weights (run 'git lfs pull' in the folder)")
