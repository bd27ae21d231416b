"""TorchScript through torch.jit.trace. torch 2.13 warns that tracing is deprecated; deployers
still load `.pt` files, so the target stays and the warning goes into the manifest."""

from __future__ import annotations

import io
from pathlib import Path

from distilforge.artifacts.records import ExportedArtifact
from distilforge.checkpoint import LoadedCheckpoint
from distilforge.errors import ExportError, first_line
from distilforge.exporters.common import example_inputs, file_records, head_module, input_specs, output_specs, quiet
from distilforge.options import BuildOptions

MODEL_FILE = "model.pt"


def export_fp32(ckpt: LoadedCheckpoint, folder: Path, options: BuildOptions) -> ExportedArtifact:
    return trace(head_module(ckpt), ckpt, folder, "torchscript:fp32", {})


def trace(module: object, ckpt: LoadedCheckpoint, folder: Path, target: str, details: dict) -> ExportedArtifact:
    """Trace `module` with the example inputs (a padded batch) and save it with torch.jit.save."""
    import torch

    inputs = tuple(torch.from_numpy(v) for v in example_inputs(ckpt).values())
    _fresh_compilation_unit()
    with quiet() as captured, torch.inference_mode():
        try:
            traced = torch.jit.trace(module, inputs, strict=False, check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
        except Exception as e:
            raise ExportError(f"{target}: torch.jit.trace failed: {type(e).__name__}: {first_line(e)}") from e
    # Written by Python, not by torch.jit.save: libtorch aborts the whole process (std::terminate in a
    # destructor) when the disk fills up under its file writer; here it is an OSError like any other.
    (folder / MODEL_FILE).write_bytes(buffer.getvalue())
    return ExportedArtifact(
        target=target, files=file_records(folder), inputs=input_specs(ckpt.head), outputs=output_specs(ckpt),
        details={"exporter": "torch.jit.trace", "torch": torch.__version__, **details},
        warnings=captured.warnings,
    )


def _fresh_compilation_unit() -> None:
    """Trace into a new TorchScript compilation unit. The process-wide one numbers each class compiled again
    (`___torch_mangle_N`), and those names are in the saved file: without this, the bytes would depend on what
    was traced earlier in the same process (another target, another build-many task on the same worker)."""
    import torch

    torch.jit._state._python_cu = torch._C.CompilationUnit()
    torch.jit._recursive.concrete_type_store = torch.jit._recursive.ConcreteTypeStore()
    torch.jit._state._clear_class_state()
