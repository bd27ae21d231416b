"""What every exporter shares: the traced wrapper, example inputs, tensor specs, quiet capture, and the
conversions a format's targets share within one build."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from distilforge.artifacts.records import FileRecord, TensorSpec
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.heads import HeadSpec
from distilforge.shapes import EXPORT_BATCH, EXPORT_CHOICES, EXPORT_SEQUENCE, padded_mask


def head_module(ckpt: LoadedCheckpoint) -> Any:
    """A torch module `forward(input_ids, attention_mask) -> tuple of the head's outputs`.

    Converters want positional tensors in and a flat tuple out; the names are set by each
    exporter from the head spec, so runners can bind by name."""
    import torch

    names = ckpt.head.output_names

    class HeadModule(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
            return tuple(out[n] for n in names)

    return HeadModule(ckpt.model).eval()


def example_shape(head: HeadSpec) -> tuple[int, ...]:
    if head.multiple_choice:
        return (EXPORT_BATCH, EXPORT_CHOICES, EXPORT_SEQUENCE)
    return (EXPORT_BATCH, EXPORT_SEQUENCE)


def example_inputs(ckpt: LoadedCheckpoint, shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Seeded token ids with a padded row, int64."""
    shape = shape or example_shape(ckpt.head)
    rng = np.random.default_rng(1234)
    ids = rng.integers(min(1, ckpt.info.vocab_size - 1), ckpt.info.vocab_size, size=shape, dtype=np.int64)
    return {"input_ids": ids, "attention_mask": padded_mask(shape)}


def input_specs(head: HeadSpec, dtype: str = "int64", shape: tuple[int, ...] | None = None) -> list[TensorSpec]:
    dims = shape or head.input_axes
    return [TensorSpec(name, dtype, tuple(dims)) for name in head.input_names]


def output_specs(ckpt: LoadedCheckpoint, dtype: str = "float32",
                 shape: tuple[int, ...] | None = None) -> list[TensorSpec]:
    """Output specs with axis names (or the sizes of a fixed input shape)."""
    head, config = ckpt.head, ckpt.info.config
    batch_seq: tuple[int | str, ...] = tuple(shape) if shape else head.input_axes
    if head.multiple_choice:
        return [TensorSpec("logits", dtype, (batch_seq[0], batch_seq[1]))]
    specs = []
    for out in head.outputs:
        dims: tuple[int | str, ...] = batch_seq if out.per_token else batch_seq[:1]
        last = _last_dim(head.task, config)
        if out.name == "sentence_embedding" and ckpt.info.sentence:
            last = ckpt.info.sentence.embedding_dimension
        specs.append(TensorSpec(out.name, dtype, dims + ((last,) if last else ())))
    return specs


def _last_dim(task: str, config: dict[str, Any]) -> int | None:
    if task in ("feature-extraction", "sentence-similarity"):
        return int(config.get("dim", 768))
    if task == "fill-mask":
        return int(config["vocab_size"])
    if task in ("text-classification", "token-classification"):
        return len(config["id2label"]) if "id2label" in config else int(config.get("num_labels", 2))
    return None  # QA start/end logits are (B, S)


def file_records(folder: Path) -> list[FileRecord]:
    """Every file under `folder`, sorted, with paths relative to it."""
    return [FileRecord.of(folder, f) for f in sorted(folder.rglob("*")) if f.is_file()]


@dataclass
class Captured:
    """Library noise captured during a conversion: kept for the manifest, off the user's terminal."""

    warnings: list[str] = field(default_factory=list)
    output: str = ""


@contextlib.contextmanager
def quiet() -> Iterator[Captured]:
    """Capture Python warnings, stdout and stderr, and mute chatty library loggers.

    What is recorded must not depend on what ran before in the process (a sequential build and a build-many task
    give the same manifest): torch's warn-once warnings are raised every time; left out are warnings raised while a
    module is being imported (which only the first importer sees) and the standard library's own deprecation
    notices to a library (e.g. importlib.resources.read_binary, which ExecuTorch calls once behind a cache)."""
    captured = Captured()
    buffer = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "onnxscript", "nncf",
                                              "openvino", "absl", "tensorflow", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if not _importing() and not _from_the_standard_library():
            caught.append(warnings.WarningMessage(message, category, filename, lineno, file, line))

    with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), \
            _torch_warn_always():
        warnings.simplefilter("always")
        warnings.showwarning = record
        try:
            yield captured
        finally:
            for lg, level in zip(loggers, levels, strict=False):
                lg.setLevel(level)
            captured.output = buffer.getvalue()
            captured.warnings = _unique_messages(caught)


def _importing() -> bool:
    """Whether the current call stack is inside an import."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_STDLIB = sysconfig.get_paths()["stdlib"]
_INSTALLED = tuple({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})  # may lie under _STDLIB


def _from_the_standard_library() -> bool:
    """Whether the code that called warnings.warn is the standard library's (not a library in site-packages)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in (__file__, warnings.__file__):
        frame = frame.f_back
    name = frame.f_code.co_filename if frame is not None else ""
    return name.startswith(_STDLIB) and not name.startswith(_INSTALLED) and "-packages" not in name


@contextlib.contextmanager
def _torch_warn_always() -> Iterator[None]:
    """torch.set_warn_always(True): torch's TORCH_WARN_ONCE warnings are raised every time, not once a process."""
    import torch

    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        yield
    finally:
        torch.set_warn_always(before)


def _unique_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    seen: dict[str, None] = {}
    for w in caught:
        first = str(w.message).strip().splitlines()[0][:240] if str(w.message).strip() else ""
        seen.setdefault(f"{w.category.__name__}: {first}", None)
    return list(seen)


T = TypeVar("T")

# (format, options) -> (checkpoint, value, warnings raised while making it). Entries hold the checkpoint itself,
# not its id(), which a later checkpoint object may reuse; a new checkpoint clears the others.
_shared: dict[tuple[Any, ...], tuple[LoadedCheckpoint, Any, list[tuple[type[Warning], str]]]] = {}


def shared_conversion(ckpt: LoadedCheckpoint, key: tuple[Any, ...], make: Callable[[], T],
                      copy: Callable[[T], T] = lambda value: value) -> T:
    """`make()` once per checkpoint and key within a process; every caller gets `copy` of it.

    A format's targets (and each INT8 recipe the ladder tries) start from the same conversion of the same
    model (torch.onnx.export, ov.convert_model, litert_torch.convert): converting once per build is the
    build's largest saving. The warnings `make` raised are raised again for each caller, so an artifact's
    recorded warnings do not depend on which targets were built before it."""
    entry = _shared.get(key)
    if entry is None or entry[0] is not ckpt:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = make()
        for stale in [k for k, e in _shared.items() if e[0] is not ckpt]:
            del _shared[stale]
        entry = _shared[key] = (ckpt, value, [(w.category, str(w.message)) for w in caught])
    for category, message in entry[2]:
        warnings.warn(message, category, stacklevel=2)
    return copy(entry[1])
