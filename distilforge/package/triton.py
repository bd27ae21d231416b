"""package_triton: DIR (a build) -> a Triton Inference Server model repository, one model per validated ONNX,
OpenVINO or TorchScript artifact, its config.pbtxt written from the manifest's tensor specs.

Only what the manifest vouches for is served: artifacts that passed validation, copied byte for byte with the
manifest's sha256. With Triton's own backends ("native", each format's FormatSpec `triton` in targets.py) TFLite
and ExecuTorch are left out: none of them runs those. With backend "python" every format is served, by a model.py
that runs the artifact through distilforge's own runner for it (package/triton_python.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from distilforge.artifacts.layout import MANIFEST
from distilforge.artifacts.manifest import read_manifest
from distilforge.errors import OutputDirError, UsageError
from distilforge.package.common import (
    ArtifactFile,
    artifact_file,
    built_entry,
    check_destination,
    copy_checked,
    folder_name,
    format_of,
    passed,
    require_passed,
    staged,
)
from distilforge.package.triton_python import python_backend, write_python_files
from distilforge.targets import FORMATS, Backend

MARKER = ".distilforge-triton"  # in REPO: it was written by package_triton, so a rerun may replace it
VERSION = "1"  # the model version folder Triton loads
QUEUE_DELAY_US = 100  # dynamic batching: how long a request may wait for others to join its batch
TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
BACKENDS = ("native", "python")  # Triton's own backend for each format, or its python backend for all of them


def package_triton(out_dir: Path, repo: Path, *, max_batch_size: int = 32,
                   targets: list[str] | None = None, dynamic_batching: str = "auto", backend: str = "native",
                   say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Write REPO/<name>/config.pbtxt and REPO/<name>/1/<model files> for every validated ONNX, OpenVINO and
    TorchScript artifact of DIR (or the named `targets`); returns the model folders. With `backend` "python",
    every validated artifact, TFLite and ExecuTorch included, each served by a python-backend model.py that runs
    it through distilforge's runner for its format (the server's Python needs distilforge and the format's extra).

    The repository is written beside REPO and renamed into place: a failure leaves REPO as it was. REPO must
    be empty or missing, or hold only what an earlier package_triton wrote (its models are then replaced).
    Raises UsageError for a target that is not built, failed or has no Triton backend, and OutputDirError
    for a file whose bytes are not the manifest's.

    `dynamic_batching`: "auto" lets the server batch strangers' requests together except for a model whose
    decisions changed when validation ran its texts as one padded batch (dynamic INT8: `batch_dependence`), "on"
    and "off" for every model; `say` gets one line per model it was turned off for."""
    out, repo = Path(out_dir), Path(repo)
    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r}: give one of {', '.join(BACKENDS)}")
    if dynamic_batching not in BATCHING_MODES:
        raise UsageError(f"dynamic batching {dynamic_batching!r}: give one of {', '.join(BATCHING_MODES)}")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise UsageError(f"max batch size {max_batch_size!r}: give a whole number >= 0 (0 = no batching)")
    manifest = read_manifest(out)
    entries = chosen_entries(manifest, targets, out, python=backend == "python")
    check_repo(repo)
    with staged(repo) as staging:
        for entry in entries:
            off = batching_off(entry, dynamic_batching) if max_batch_size else None
            if off and dynamic_batching == "auto":
                say(f"{entry['target']}: dynamic batching off: {off}")
            write = write_python_model if backend == "python" else write_model
            batch = batch_within_bound(entry, max_batch_size)
            if batch != max_batch_size:
                say(f"{entry['target']}: max_batch_size {batch}: the program takes at most {batch} rows at once "
                    "(its bounds: rebuild with a larger --executorch-max-shape for more)")
            write(out, entry, staging, max_batch_size=batch, manifest=manifest, batching_off=off)
        write_marker(staging, manifest, [folder_name(e) for e in entries], backend)
    return [repo / folder_name(e) for e in entries]


def batch_within_bound(entry: dict[str, Any], max_batch_size: int) -> int:
    """`max_batch_size`, or less for an artifact whose program is bounded (ExecuTorch's `max_shape`): the server
    must not batch requests into more rows than the runtime takes."""
    bound = (entry.get("details") or {}).get("max_shape")
    return min(max_batch_size, bound[0]) if bound and max_batch_size else max_batch_size


def chosen_entries(manifest: dict[str, Any], targets: list[str] | None, out: Path, *,
                   python: bool = False) -> list[dict[str, Any]]:
    """The manifest entries to package: the named ones (each must be usable), or every usable one. `python`: for
    the python backend, which serves every format distilforge has a runner for."""
    names = list(dict.fromkeys(n.strip() for n in targets or [] if n.strip()))
    if names:
        by_target = {a["target"]: a for a in manifest["artifacts"]}
        return [_usable(by_target, name, out, python) for name in names]
    servable = _runnable if python else backend_for
    entries = [a for a in manifest["artifacts"] if servable(format_of(a)) and passed(a)]
    if not entries:
        kinds = "" if python else " ONNX, OpenVINO or TorchScript"
        raise UsageError(f"{out}: no validated{kinds} artifact to package")
    return entries


def _usable(by_target: dict[str, dict[str, Any]], name: str, out: Path, python: bool) -> dict[str, Any]:
    entry = built_entry(by_target, name, out)
    if python and not _runnable(format_of(entry)):
        raise UsageError(f"{name}: format {format_of(entry)} is unknown to this distilforge; "
                         f"package {', '.join(FORMATS)} targets")
    if not python:
        _backend(entry)  # refuses a format Triton cannot serve
    return require_passed(entry)


def _runnable(fmt: str) -> bool:
    """distilforge has a runner for `fmt` (what the python backend serves it with)."""
    return fmt in FORMATS


def backend_for(fmt: str) -> Backend | None:
    """The Triton backend that serves `fmt`'s artifacts; None for a format without one, or one this version does
    not know."""
    spec = FORMATS.get(fmt)
    return spec.triton if spec else None


def _backend(entry: dict[str, Any]) -> Backend:
    backend = backend_for(format_of(entry))
    if backend is None:
        raise UsageError(f"{entry['target']}: Triton has no backend for {format_of(entry)} artifacts; "
                         f"package {_served()} targets")
    return backend


def _served() -> str:
    """The formats Triton serves, as the error for another one lists them: "onnx, openvino or torchscript"."""
    *others, last = sorted(name for name in FORMATS if backend_for(name))
    return f"{', '.join(others)} or {last}" if others else last


def check_repo(repo: Path) -> None:
    """REPO may be missing, empty, or hold only what an earlier package_triton wrote. Creates nothing."""
    check_destination(repo, MARKER, "models", "a model repository")


def write_marker(staging: Path, manifest: dict[str, Any], models: list[str], backend: str = "native") -> None:
    marker = {"written_by": "distilforge package --format triton", "backend": backend,
              "manifest_digest": manifest.get("digest"), "models": models}
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


BATCHING_MODES = ("auto", "on", "off")


def batching_off(entry: dict[str, Any], mode: str) -> str | None:
    """Why the server must not batch this model's requests together (None: it may)."""
    if mode != "auto":
        return None if mode == "on" else "--dynamic-batching off"
    record = (entry.get("validation") or {}).get("batch_dependence")
    if not record or not record["changed"]:
        return None
    return (f"{record['changed']} of {record['decisions']} decisions on real text changed when its texts ran as one "
            "padded batch (validation.batch_dependence in manifest.json), so an answer would depend on the requests "
            "batched with it; --dynamic-batching on turns it on")


def write_model(out: Path, entry: dict[str, Any], staging: Path, *, max_batch_size: int,
                manifest: dict[str, Any], batching_off: str | None = None) -> None:
    """STAGING/<name>/: config.pbtxt, the model files in 1/, the artifact's companions (config, tokenizer, card)
    beside config.pbtxt, where Triton ignores them."""
    backend = _backend(entry)
    folder = folder_name(entry)
    model, weights, companions = split_files(entry, backend)
    dest = staging / folder
    copy_checked(out / folder / model.rel, dest / VERSION / backend.model_file, model.sha256)
    for w in weights:
        copy_checked(out / folder / w.rel, dest / VERSION / (backend.weights_file or _beside(model, w)), w.sha256)
    for c in companions:
        copy_checked(out / folder / c.rel, dest / c.rel, c.sha256)
    _write_config(dest, entry, backend, max_batch_size if backend.batches else 0, manifest, batching_off)


def write_python_model(out: Path, entry: dict[str, Any], staging: Path, *, max_batch_size: int,
                       manifest: dict[str, Any], batching_off: str | None = None) -> None:
    """STAGING/<name>/: config.pbtxt for the python backend, 1/model.py, the artifact's model files in 1/ under
    their own names with 1/artifact.json (what its runner opens), and the companions beside config.pbtxt."""
    dest = staging / folder_name(entry)
    write_python_files(out, entry, dest / VERSION)
    for c in [f for f in _files(entry) if f.role not in ("model", "weights")]:
        copy_checked(out / folder_name(entry) / c.rel, dest / c.rel, c.sha256)
    _write_config(dest, entry, python_backend(entry), max_batch_size, manifest, batching_off)


def _files(entry: dict[str, Any]) -> list[ArtifactFile]:
    """The entry's files with their roles; the suffixes do not matter here, only model and weights vs the rest."""
    return [artifact_file(entry, f, "", ()) for f in entry["files"]]


def _write_config(dest: Path, entry: dict[str, Any], backend: Backend, max_batch_size: int, manifest: dict[str, Any],
                  batching_off: str | None) -> None:
    header = f"{entry['target']} from a distilforge build (manifest digest {str(manifest.get('digest'))[:12]})"
    threads = (manifest.get("settings") or {}).get("threads")
    text = config_text(folder_name(entry), entry, backend, max_batch_size, threads, header, batching_off)
    (dest / "config.pbtxt").write_text(text, encoding="utf-8")


def split_files(entry: dict[str, Any], backend: Backend) -> tuple[ArtifactFile, list[ArtifactFile],
                                                                  list[ArtifactFile]]:
    """The model file, its weights, and the companions, from the manifest's files[]: a companion by its role (or,
    without one, by not being a model or weights file), the model file among the others by its suffix."""
    files = [artifact_file(entry, f, backend.model_suffix, backend.weights_suffixes) for f in entry["files"]]
    models = [f for f in files if f.role == "model"]
    weights = [f for f in files if f.role == "weights"]
    if len(models) != 1:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {len(models)} model files "
                             f"({backend.model_suffix}); expected one")
    if backend.weights_file and len(weights) != 1:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {len(weights)} weights files "
                             f"({', '.join(backend.weights_suffixes)}); expected one")
    return models[0], weights, [f for f in files if f.role not in ("model", "weights")]


def _beside(model: ArtifactFile, weights: ArtifactFile) -> PurePosixPath:
    """Where external weights go: at the same place relative to the model file, which records that place."""
    try:
        return weights.rel.relative_to(model.rel.parent)
    except ValueError:
        raise OutputDirError(f"{weights.rel}: not beside its model file {model.rel}") from None


def config_text(name: str, entry: dict[str, Any], backend: Backend, max_batch_size: int, threads: int | None,
                header: str, batching_off: str | None = None) -> str:
    """config.pbtxt (Triton's ModelConfig in protobuf text format). `batching_off`: why the server must not batch
    requests together (the batch axis stays: a client may still send its own batch)."""
    batching = max_batch_size > 0
    lines = [f"# {header}"] + ([f"# {backend.note}"] if backend.note else [])
    lines += [f"name: {_quote(name)}", backend.selector, f"max_batch_size: {max_batch_size}"]
    lines += _tensors("input", entry["inputs"], batching) + _tensors("output", entry["outputs"], batching)
    if batching and batching_off:
        lines += [f"# dynamic batching off: {batching_off}"]
    elif batching:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}"]
    lines += ["instance_group [", "  {", "    kind: KIND_CPU", "    count: 1", "  }", "]"]
    parameters = [(key, str(threads)) for key in backend.threads if threads] + list(backend.fixed)
    for key, value in parameters:
        lines += ["parameters {", f"  key: {_quote(key)}", f"  value: {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def _tensors(kind: str, specs: list[dict[str, Any]], batching: bool) -> list[str]:
    lines = [f"{kind} ["]
    for i, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in triton_dims(spec["shape"], batching))
        lines += ["  {", f"    name: {_quote(spec['name'])}", f"    data_type: {triton_type(spec)}",
                  f"    dims: [ {dims} ]", "  }" + ("," if i < len(specs) - 1 else "")]
    return lines + ["]"]


def triton_dims(shape: list[int | str], batching: bool) -> list[int]:
    """Fixed sizes as they are, named (dynamic) axes as -1; when Triton batches, the batch axis is its own."""
    return [d if isinstance(d, int) else -1 for d in (shape[1:] if batching else shape)]


def triton_type(spec: dict[str, Any]) -> str:
    if spec["dtype"] not in TRITON_TYPES:
        raise OutputDirError(f"{spec['name']}: dtype {spec['dtype']} has no Triton type here "
                             f"(known: {', '.join(TRITON_TYPES)})")
    return TRITON_TYPES[spec["dtype"]]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
