"""Triton's python backend for any format: REPO/<name>/1/model.py (a copy of triton_served_model.py) opens the
artifact copied beside it with distilforge's own runner for its format, the one validation used, so the server
runs TFLite and ExecuTorch artifacts too, exactly as they were validated.

The server's Python environment must have distilforge and the format's extra installed (`pip install
'distilforge[tflite]'`): model.py imports them.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from distilforge.package.common import artifact_file, copy_checked, folder_name, format_of
from distilforge.targets import FORMATS, Backend
from distilforge.validate.runners import Runner

ARTIFACT_JSON = "artifact.json"  # in REPO/<name>/1/: the manifest entry, its files' paths relative to 1/
MODEL_PY = Path(__file__).with_name("triton_served_model.py")
THREADS = "threads"  # the config parameter model.py reads: the thread count the build validated with

PYTHON = Backend('backend: "python"', "", "model.py", (), None, True, (THREADS,))


def python_backend(entry: dict[str, Any]) -> Backend:
    """The python backend, its config comment naming what the server's Python must have for this entry."""
    extra = FORMATS[format_of(entry)].extra
    return dataclasses.replace(PYTHON, note=f"1/model.py runs it with distilforge's runner: the server's Python "
                                            f"needs distilforge[{extra}] (see docs/triton.md)")


def write_python_files(out: Path, entry: dict[str, Any], version_dir: Path) -> None:
    """VERSION_DIR: model.py, the entry's model and weights files (sha256 checked) under their own names, and
    artifact.json, the entry as its runner reads it."""
    folder = folder_name(entry)
    files = [(artifact_file(entry, f, "", ()), f) for f in entry["files"]]
    kept = []
    for file, record in files:
        if file.role in ("model", "weights"):
            copy_checked(out / folder / file.rel, version_dir / file.rel, file.sha256)
            kept.append({**record, "path": file.rel.as_posix()})
    (version_dir / ARTIFACT_JSON).write_text(json.dumps({**entry, "files": kept}, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(MODEL_PY, version_dir / "model.py")


def open_copied(version_dir: Path, threads: int) -> tuple[Runner, dict[str, Any]]:
    """The runner of the artifact in VERSION_DIR (what model.py serves), and its manifest entry."""
    from distilforge.artifacts.records import ExportedArtifact

    record = json.loads((Path(version_dir) / ARTIFACT_JSON).read_text(encoding="utf-8"))
    spec = FORMATS[format_of(record)]
    return spec.open_runner(Path(version_dir), ExportedArtifact.from_dict(record), threads), record


def threads_of(model_config: dict[str, Any], default: int = 1) -> int:
    """The `threads` parameter of a config.pbtxt as Triton hands it to model.py (its JSON form)."""
    value = ((model_config.get("parameters") or {}).get(THREADS) or {}).get("string_value")
    return int(value) if value else default
