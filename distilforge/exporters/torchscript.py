"""TorchScript through torch.jit.trace. torch 2.13 warns that tracing is deprecated; deployers
still load `.pt` files, so the target stays and the warning goes into the manifest."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    def trace_and_save() -> bytes:
        with torch.inference_mode():
            traced = torch.jit.trace(module, inputs, strict=False, check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer)
            return without_debug_info(buffer.getvalue())

    with quiet() as captured:
        try:
            data = _in_a_new_thread(trace_and_save)
        except Exception as e:
            raise ExportError(f"{target}: torch.jit.trace failed: {type(e).__name__}: {first_line(e)}") from e
    # Written by Python, not by torch.jit.save: libtorch aborts the whole process (std::terminate in a
    # destructor) when the disk fills up under its file writer; here it is an OSError like any other.
    (folder / MODEL_FILE).write_bytes(data)
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


def _in_a_new_thread(fn: Callable[[], bytes]) -> bytes:
    """fn() in a thread of its own. torch.jit.trace keeps the whole Python call stack of every traced op in the
    file's debug info, so the caller's frames (the CLI, the Python API, a build-many task) would change the bytes;
    a new thread's stack starts at threading's bootstrap, the same whoever calls."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e

    thread = threading.Thread(target=run, name="distilforge-trace")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


# written by the archive writer itself, not copied
_WRITER_RECORDS = {".data/version", "version", "byteorder", ".data/serialization_id"}


def without_debug_info(data: bytes) -> bytes:
    """The TorchScript archive without its `*.debug_pkl` records: the source text and absolute file paths of the
    traced code (torch's and transformers' in the venv, Python's threading.py), which made the same model saved
    from another install path other bytes. torch.jit.save has no switch for them; torch.jit.load reads them only
    when present (for error messages' source ranges). The rest is copied record by record in the archive's order
    with torch's own writer: same code, same tensors, bit-identical outputs."""
    import torch

    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    version = next(n for n in (".data/version", "version") if reader.has_record(n))
    writer.set_min_version(int(bytes(reader.get_record(version)).decode()))  # keeps ".data/version" where it was
    for name in reader.get_all_records():
        if name.endswith(".debug_pkl") or name in _WRITER_RECORDS:
            continue
        record = reader.get_record(name)
        writer.write_record(name, record, len(record))
    writer.write_end_of_file()
    return out.getvalue()
