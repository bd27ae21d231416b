"""ExecuTorch programs under ExecuTorch's own runtime (`executorch.runtime`, the pybindings of the C++ runtime
with the XNNPACK delegate and the portable and quantized kernels), method `forward`.

The runtime only checks an input's element count against its planned memory, so a shape outside the exported
bounds could run and return garbage: the runner refuses it first, with the bounds in the message.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from distilforge.artifacts.records import ExportedArtifact
from distilforge.errors import UsageError
from distilforge.validate.runners import cast_inputs


class InputOutOfBounds(UsageError):
    """An input shape the program was not exported for."""


def check_bounds(artifact: ExportedArtifact, shape: tuple[int, ...]) -> None:
    bounds = artifact.details["bounds"]
    if len(shape) != len(bounds) or any(not lo <= size <= hi for size, (lo, hi) in zip(shape, bounds.values(),
                                                                                          strict=False)):
        allowed = ", ".join(f"{axis} {lo}-{hi}" for axis, (lo, hi) in bounds.items())
        raise InputOutOfBounds(f"{artifact.target}: input shape {'x'.join(map(str, shape))} is outside the bounds "
                               f"it was exported with ({allowed}); rebuild with a larger --executorch-max-shape")


def preload() -> None:
    """What opening an artifact imports (validation starts this ahead: runners/isolated.py `prestart`)."""
    with _native_stderr_muted(), _without_the_compiler():
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime  # noqa: F401


class ExecuTorchRunner:
    def __init__(self, model_path: Path, artifact: ExportedArtifact, threads: int) -> None:
        with _native_stderr_muted(), _without_the_compiler():  # the C++ runtime logs its CPU probing on stderr
            import executorch.kernels.quantized  # noqa: F401  the quantized embedding kernels
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
            from executorch.runtime import Runtime

            _unsafe_reset_threadpool(threads)  # XNNPACK's threads (the only setter the Python runtime has)
            self.program = Runtime.get().load_program(str(model_path))
            self.method = self.program.load_method(artifact.details["method"])
            self._warm_up(artifact)  # the first run probes the CPU (and logs it)
        self.artifact = artifact
        self.output_names = tuple(o.name for o in artifact.outputs)

    def _warm_up(self, artifact: ExportedArtifact) -> None:
        import torch

        shape = tuple(1 for _ in artifact.details["bounds"])
        self.method.execute([torch.ones(shape, dtype=torch.int64) for _ in artifact.inputs])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        fed = cast_inputs(self.artifact, inputs)
        check_bounds(self.artifact, fed["input_ids"].shape)
        out = self.method.execute([torch.from_numpy(fed[s.name]) for s in self.artifact.inputs])
        return {name: t.numpy().astype(np.float32, copy=True) for name, t in zip(self.output_names, out, strict=True)}


@contextlib.contextmanager
def _without_the_compiler() -> Iterator[None]:
    """The runtime's pybindings (`portable_lib`) import `executorch.exir._warnings`, one small module of the
    compiler package, and so run `executorch/exir/__init__.py`, which imports the whole compiler (5.4 of the
    runtime's 7.3 s import, measured; every validation starts a runtime process). While the runtime is imported,
    `executorch.exir` is an empty package on the same path: `_warnings` loads from it alone. The stand-in is
    removed afterwards, so a later `import executorch.exir` (an export in the same process) runs the real one."""
    import importlib.util
    import types

    if "executorch.exir" in sys.modules:
        yield
        return
    spec = importlib.util.find_spec("executorch")
    stand_in = types.ModuleType("executorch.exir")
    stand_in.__path__ = [os.path.join(p, "exir") for p in (spec.submodule_search_locations or [])]
    sys.modules["executorch.exir"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("executorch.exir") is stand_in:
            del sys.modules["executorch.exir"]


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def open_runner(out_dir: Path, artifact: ExportedArtifact, threads: int) -> ExecuTorchRunner:
    model_file = next(f for f in artifact.files if f.path.endswith(".pte"))
    return ExecuTorchRunner(out_dir / model_file.path, artifact, threads)
