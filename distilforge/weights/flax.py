"""Flax's `flax_model.msgpack` (what transformers' Flax `save_pretrained` writes) as PyTorch-named tensors, with
msgpack alone.

The file is `flax.serialization.to_bytes(params)`: a msgpack map of maps whose leaves are msgpack extension types.
Code 1 is an ndarray, itself msgpack-packed as (shape, dtype name, C-order bytes); code 3 a numpy scalar the same
way; code 2 a complex number. An array over 1 GiB is stored as a map `{"__msgpack_chunked_array__": true, "shape":
{...}, "chunks": {...}}` of flat pieces. (flax/serialization.py.) A shard (`flax_model-00001-of-00002.msgpack`,
beside `flax_model.msgpack.index.json`) is the same format holding part of the tree.

Names and layouts then follow transformers' `load_flax_weights_in_pytorch_model`: bfloat16 becomes float32, a
`kernel` becomes `weight` transposed (axes (3, 2, 0, 1) for a 4-d convolution kernel), `scale` and `embedding`
become `weight`, batch-norm `mean`/`var` become `running_mean`/`running_var`, and the path's keys are joined with
dots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilforge.errors import CheckpointError, first_line
from distilforge.weights.tensorflow import _check_not_lfs_pointer

NDARRAY, COMPLEX, NPSCALAR = 1, 2, 3
CHUNKED = "__msgpack_chunked_array__"


class _Leaf:
    """An array leaf as the file stores it; decoded (and checked) once the tree is read."""

    def __init__(self, data: bytes, scalar: bool) -> None:
        self.data, self.scalar = data, scalar


def read(path: Path) -> dict[str, np.ndarray]:
    import msgpack

    _check_not_lfs_pointer(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None

    def ext_hook(code: int, data: bytes) -> Any:
        if code in (NDARRAY, NPSCALAR):
            return _Leaf(data, scalar=code == NPSCALAR)
        if code == COMPLEX:
            return complex(*msgpack.unpackb(data))
        raise ValueError(f"unknown msgpack extension type {code}")

    try:
        tree = msgpack.unpackb(raw, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except Exception as e:  # truncated ("incomplete input"), extra data, not msgpack at all
        raise CheckpointError(f"{path}: not a readable Flax msgpack file (truncated, or another format?): "
                              f"{type(e).__name__}: {first_line(e)}") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path}: not a Flax parameter tree (the file holds a {type(tree).__name__}, "
                              "not a map of names)")
    state_dict = {}
    for keys, leaf in _leaves(path, tree, ()):
        name, value = _pytorch_name(keys, _decode(path, keys, leaf))
        state_dict[name] = value
    return state_dict


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """`model.safetensors` that Flax's save_pretrained(safe_serialization=True) wrote: the tree flattened with dots
    (`distilbert.embeddings.LayerNorm.scale`), bfloat16 kept as such (read through torch, which has it)."""
    import torch
    from safetensors.torch import load_file

    state_dict = {}
    for name, tensor in load_file(str(path)).items():
        value = tensor.to(torch.float32) if tensor.is_floating_point() else tensor
        key, array = _pytorch_name(tuple(name.split(".")), value.numpy())
        state_dict[key] = array
    return state_dict


def _leaves(path: Path, node: dict, keys: tuple[str, ...]) -> Any:
    for key, value in node.items():
        here = (*keys, str(key))
        if isinstance(value, dict) and value.get(CHUNKED):
            yield here, value
        elif isinstance(value, dict):
            yield from _leaves(path, value, here)
        else:
            yield here, value


def _decode(path: Path, keys: tuple[str, ...], leaf: Any) -> np.ndarray:
    import msgpack

    try:
        if isinstance(leaf, dict):  # chunked: flat pieces in order, then the shape
            shape = tuple(leaf["shape"][str(i)] for i in range(len(leaf["shape"])))
            pieces = [_decode(path, keys, leaf["chunks"][str(i)]) for i in range(len(leaf["chunks"]))]
            return np.concatenate(pieces).reshape(shape)
        if not isinstance(leaf, _Leaf):
            raise ValueError(f"a {type(leaf).__name__}, not an array")
        shape, dtype_name, buffer = msgpack.unpackb(leaf.data, raw=True)
        dtype_name = dtype_name.decode() if isinstance(dtype_name, bytes) else str(dtype_name)
        if dtype_name == "bfloat16":  # numpy has no bfloat16: its bits are a float32's upper half
            bits = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(buffer, dtype=np.dtype(dtype_name))
        array = array.reshape(tuple(shape), order="C")
    except Exception as e:
        raise CheckpointError(f"{path}: {'/'.join(keys)} is not a readable array ({type(e).__name__}: "
                              f"{first_line(e)})") from None
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)  # a copy: frombuffer's arrays are read-only views of the file's bytes
    return array.copy()


def _pytorch_name(keys: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    """transformers' load_flax_weights_in_pytorch_model renaming (DistilBERT has no parameter named `kernel`)."""
    last = keys[-1]
    if last == "kernel" and value.ndim == 4:
        keys, value = (*keys[:-1], "weight"), np.ascontiguousarray(np.transpose(value, (3, 2, 0, 1)))
    elif last == "kernel":
        keys, value = (*keys[:-1], "weight"), np.ascontiguousarray(value.T)
    elif last in ("scale", "embedding"):
        keys = (*keys[:-1], "weight")
    elif "mean" in last:
        keys = (*keys[:-1], "running_mean")
    elif "var" in last:
        keys = (*keys[:-1], "running_var")
    return ".".join(keys), value
