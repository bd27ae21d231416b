"""Checkpoints whose weights TensorFlow or Flax wrote, read without TensorFlow or Flax.

A registry of weight files other than PyTorch's: file name -> reader -> framework. Each reader reads its files
with a small library (h5py for Keras' `tf_model.h5`, msgpack for Flax's `flax_model.msgpack`) and returns the
tensors under the names, in the layout and as the float32 values transformers' own TF/Flax-to-PyTorch conversion
gives them; checkpoint.py then builds the PyTorch model from that state dict through `from_pretrained`, so a
missing or wrong-shaped tensor is the same one-line error as for safetensors. Importing this package imports
nothing heavy; a reader's library is imported when a file is read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTORCH = "pytorch"


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


def framework_of(weight_files: tuple[Path, ...]) -> str:
    """Which framework wrote the weights `weight_files` (as checkpoint.py found them) hold."""
    first = weight_files[0].name if weight_files else ""
    for fmt in FORMATS:
        if first in (fmt.file, fmt.index):
            return fmt.framework
    return PYTORCH


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
    fmt = next(f for f in FORMATS if f.framework == framework)
    files = weight_files[1:] if weight_files[0].name == fmt.index else weight_files[:1]
    state_dict: dict[str, Any] = {}
    for f in files:
        state_dict.update(importlib.import_module(fmt.reader).read(f))
    return state_dict


def torch_state_dict(framework: str, weight_files: tuple[Path, ...]) -> dict[str, Any]:
    """read_state_dict's tensors as torch tensors (what `from_pretrained(state_dict=...)` takes)."""
    import torch

    return {name: torch.from_numpy(value) for name, value in read_state_dict(framework, weight_files).items()}
