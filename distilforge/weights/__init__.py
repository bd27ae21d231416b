"""Checkpoints whose weights TensorFlow or Flax wrote, read without TensorFlow or Flax.

A registry of weight files other than PyTorch's: file name -> reader -> framework. Each reader reads its files
with a small library (h5py for Keras' `tf_model.h5`, msgpack for Flax's `flax_model.msgpack`) and returns the
tensors under the names, in the layout and as the float32 values transformers' own TF/Flax-to-PyTorch conversion
gives them; checkpoint.py then builds the PyTorch model from that state dict through `from_pretrained`, so a
missing or wrong-shaped tensor is the same one-line error as for safetensors. Importing this package imports
nothing heavy; a reader's library is imported when a file is read. A `model.safetensors` that TensorFlow or Flax
wrote (`save_pretrained(safe_serialization=True)`; its metadata's `format` is `tf` / `flax`) is read by the same
readers (`read_safetensors`): transformers would otherwise import TensorFlow / Flax to convert it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTORCH = "pytorch"
FRAMEWORK_NAMES = {"pytorch": "PyTorch", "tensorflow": "TensorFlow", "flax": "Flax"}


@dataclass(frozen=True)
class WeightsFormat:
    framework: str  # what the manifest records: "tensorflow", "flax"
    file: str  # the one-file name save_pretrained writes
    index: str  # the shard index it writes beside shards instead
    shards: str  # glob of the shards' names
    reader: str  # module with read(files) -> {PyTorch name: float32 ndarray}


FORMATS = (
    WeightsFormat("tensorflow", "tf_model.h5", "tf_model.h5.index.json", "tf_model-*.h5",
                  "distilforge.weights.tensorflow"),
    WeightsFormat("flax", "flax_model.msgpack", "flax_model.msgpack.index.json", "flax_model-*.msgpack",
                  "distilforge.weights.flax"),
)
FILE_NAMES = tuple(name for f in FORMATS for name in (f.file, f.index))


def find(path: Path) -> tuple[WeightsFormat, Path] | None:
    """The first TF/Flax weights of a folder (an index before a single file, TensorFlow before Flax), else None."""
    for fmt in FORMATS:
        for name in (fmt.index, fmt.file):
            if (path / name).is_file():
                return fmt, path / name
    return None


SAFETENSORS_FORMATS = {"tf": "tensorflow", "flax": "flax"}  # save_pretrained(safe_serialization=True)'s metadata


def framework_of(weight_files: tuple[Path, ...]) -> str:
    """Which framework wrote the weights `weight_files` (as checkpoint.py found them) hold. A `model.safetensors`
    that TensorFlow or Flax wrote says so in its metadata (`format`: `tf`, `flax`; PyTorch's say `pt`)."""
    first = weight_files[0].name if weight_files else ""
    for fmt in FORMATS:
        if first in (fmt.file, fmt.index):
            return fmt.framework
    tensors = [f for f in weight_files if f.suffix == ".safetensors"]
    return SAFETENSORS_FORMATS.get(_safetensors_format(tensors[0]) if tensors else None, PYTORCH)


def _safetensors_format(path: Path) -> str | None:
    """The `format` of a safetensors file's metadata; None where it has none or cannot be read (checkpoint.py
    reports an unreadable file when it loads it)."""
    import json
    import struct

    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return None
            metadata = json.loads(f.read(length)).get("__metadata__") or {}
        return metadata.get("format") if isinstance(metadata, dict) else None
    except (OSError, struct.error, ValueError, AttributeError):
        return None


def foreign_files(path: Path) -> tuple[Path, ...]:
    """Every TF/Flax weight file in a folder (single files, indexes, shards), sorted."""
    found: set[Path] = set()
    for fmt in FORMATS:
        found.update(p for p in (path / fmt.file, path / fmt.index) if p.is_file())
        found.update(p for p in path.glob(fmt.shards) if p.is_file())
    return tuple(sorted(found))


def read_state_dict(framework: str, weight_files: tuple[Path, ...]) -> dict[str, Any]:
    """PyTorch-named float32 tensors from `weight_files` (an index first, then its shards; or one file).

    Raises CheckpointError naming the file that cannot be read."""
    reader = importlib.import_module(next(f.reader for f in FORMATS if f.framework == framework))
    state_dict: dict[str, Any] = {}
    for f in weight_files:
        if f.name.endswith(".index.json"):
            continue
        state_dict.update(reader.read_safetensors(f) if f.suffix == ".safetensors" else reader.read(f))
    return state_dict


def torch_state_dict(framework: str, weight_files: tuple[Path, ...]) -> dict[str, Any]:
    """read_state_dict's tensors as torch tensors (what `from_pretrained(state_dict=...)` takes)."""
    import torch

    return {name: torch.from_numpy(value) for name, value in read_state_dict(framework, weight_files).items()}


def stored_shape(state_dict: dict[str, Any], name: str, prefix: str) -> tuple[int, ...] | str:
    """A tensor's shape as read (PyTorch's layout), by the name transformers reports (a base model's lacks the
    `distilbert.` its head's files carry); '?' if absent."""
    for key in (name, f"{prefix}.{name}"):
        if key in state_dict:
            return tuple(state_dict[key].shape)
    return "?"
