"""package_triton: DIR (a build) -> a Triton Inference Server model repository, one model per validated ONNX,
OpenVINO or TorchScript artifact, its config.pbtxt written from the manifest's tensor specs.

Only what the manifest vouches for is served: artifacts that passed validation, copied byte for byte with the
manifest's sha256. TFLite and ExecuTorch are left out: none of Triton's own backends runs them. Each format's
backend is its FormatSpec's `triton` (targets.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from distilforge.artifacts.layout import MANIFEST, first_missing, move_into_place, staging_dir
from distilforge.artifacts.manifest import read_manifest
from distilforge.errors import OutputDirError, UsageError
from distilforge.targets import FORMATS, Backend

MARKER = ".distilforge-triton"  # in REPO: it was written by package_triton, so a rerun may replace it
VERSION = "1"  # the model version folder Triton loads
QUEUE_DELAY_US = 100  # dynamic batching: how long a request may wait for others to join its batch
TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactFile:
    rel: PurePosixPath  # inside the artifact folder
    sha256: str
    role: str  # "model" (the file the backend loads), "weights" (beside it) or a companion's ("config", "card", ...)


def package_triton(out_dir: Path, repo: Path, *, max_batch_size: int = 32,
                   targets: list[str] | None = None, dynamic_batching: str = "auto",
                   say: Callable[[str], None] = lambda line: None) -> list[Path]:
    """Write REPO/<name>/config.pbtxt and REPO/<name>/1/<model files> for every validated ONNX, OpenVINO and
    TorchScript artifact of DIR (or the named `targets`); returns the model folders.

    The repository is written beside REPO and renamed into place: a failure leaves REPO as it was. REPO must
    be empty or missing, or hold only what an earlier package_triton wrote (its models are then replaced).
    Raises UsageError for a target that is not built, failed or has no Triton backend, and OutputDirError
    for a file whose bytes are not the manifest's.

    `dynamic_batching`: "auto" lets the server batch strangers' requests together except for a model whose
    decisions changed when validation ran its texts as one padded batch (dynamic INT8: `batch_dependence`), "on"
    and "off" for every model; `say` gets one line per model it was turned off for."""
    out, repo = Path(out_dir), Path(repo)
    if dynamic_batching not in BATCHING_MODES:
        raise UsageError(f"dynamic batching {dynamic_batching!r}: give one of {', '.join(BATCHING_MODES)}")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise UsageError(f"max batch size {max_batch_size!r}: give a whole number >= 0 (0 = no batching)")
    manifest = read_manifest(out)
    entries = chosen_entries(manifest, targets, out)
    check_repo(repo)
    created = first_missing(repo.parent)
    staging = staging_dir(repo.parent, repo.name)
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700, and the server may run as another user
        for entry in entries:
            off = batching_off(entry, dynamic_batching) if max_batch_size else None
            if off and dynamic_batching == "auto":
                say(f"{entry['target']}: dynamic batching off: {off}")
            write_model(out, entry, staging, max_batch_size=max_batch_size, manifest=manifest, batching_off=off)
        write_marker(staging, manifest, [_folder(e) for e in entries])
        move_into_place(staging, repo)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return [repo / _folder(e) for e in entries]


def chosen_entries(manifest: dict[str, Any], targets: list[str] | None, out: Path) -> list[dict[str, Any]]:
    """The manifest entries to package: the named ones (each must be usable), or every usable one."""
    names = list(dict.fromkeys(n.strip() for n in targets or [] if n.strip()))
    if names:
        by_target = {a["target"]: a for a in manifest["artifacts"]}
        return [_usable(by_target, name, out) for name in names]
    entries = [a for a in manifest["artifacts"] if backend_for(_format(a)) and _passed(a)]
    if not entries:
        raise UsageError(f"{out}: no validated ONNX, OpenVINO or TorchScript artifact to package")
    return entries


def _usable(by_target: dict[str, dict[str, Any]], name: str, out: Path) -> dict[str, Any]:
    entry = by_target.get(name)
    if entry is None:
        raise UsageError(f"{name}: not built in {out}; its {MANIFEST} lists {', '.join(by_target) or 'nothing'}")
    _backend(entry)  # refuses a format Triton cannot serve
    if not _passed(entry):
        reasons = [entry.get("error"), *((entry.get("validation") or {}).get("failures") or [])]
        why = next((r.strip().splitlines()[0] for r in reasons if r and r.strip()), "it did not pass validation")
        raise UsageError(f"{name}: failed in the build ({why}); only validated artifacts are packaged")
    return entry


def backend_for(fmt: str) -> Backend | None:
    """The Triton backend that serves `fmt`'s artifacts; None for a format without one, or one this version does
    not know."""
    spec = FORMATS.get(fmt)
    return spec.triton if spec else None


def _backend(entry: dict[str, Any]) -> Backend:
    backend = backend_for(_format(entry))
    if backend is None:
        raise UsageError(f"{entry['target']}: Triton has no backend for {_format(entry)} artifacts; "
                         f"package {_served()} targets")
    return backend


def _served() -> str:
    """The formats Triton serves, as the error for another one lists them: "onnx, openvino or torchscript"."""
    *others, last = sorted(name for name in FORMATS if backend_for(name))
    return f"{', '.join(others)} or {last}" if others else last


def _format(entry: dict[str, Any]) -> str:
    return entry.get("format") or entry["target"].split(":")[0]


def _folder(entry: dict[str, Any]) -> str:
    return entry["target"].replace(":", "-")


def _passed(entry: dict[str, Any]) -> bool:
    return not entry.get("error") and bool((entry.get("validation") or {}).get("passed"))


def check_repo(repo: Path) -> None:
    """REPO may be missing, empty, or hold only what an earlier package_triton wrote. Creates nothing."""
    if repo.exists() and not repo.is_dir():
        raise OutputDirError(f"{repo}: exists and is not a directory")
    names = {p.name for p in repo.iterdir()} if repo.is_dir() else set()
    ours = _marked_models(repo)
    if names and (ours is None or not names <= ours | {MARKER}):
        raise OutputDirError(f"{repo}: not empty and not a model repository written by distilforge alone; "
                             "choose another --out or empty it")


def _marked_models(repo: Path) -> set[str] | None:
    """The model folders an earlier package_triton wrote into REPO; None when it wrote none of REPO."""
    try:
        return set(json.loads((repo / MARKER).read_text(encoding="utf-8"))["models"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(staging: Path, manifest: dict[str, Any], models: list[str]) -> None:
    marker = {"written_by": "distilforge package --format triton", "manifest_digest": manifest.get("digest"),
              "models": models}
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
    folder = _folder(entry)
    model, weights, companions = split_files(entry, backend)
    dest = staging / folder
    copy_checked(out / folder / model.rel, dest / VERSION / backend.model_file, model.sha256)
    for w in weights:
        copy_checked(out / folder / w.rel, dest / VERSION / (backend.weights_file or _beside(model, w)), w.sha256)
    for c in companions:
        copy_checked(out / folder / c.rel, dest / c.rel, c.sha256)
    batch = max_batch_size if backend.batches else 0
    header = f"{entry['target']} from a distilforge build (manifest digest {str(manifest.get('digest'))[:12]})"
    threads = (manifest.get("settings") or {}).get("threads")
    (dest / "config.pbtxt").write_text(config_text(folder, entry, backend, batch, threads, header, batching_off),
                                       encoding="utf-8")


def split_files(entry: dict[str, Any], backend: Backend) -> tuple[ArtifactFile, list[ArtifactFile],
                                                                  list[ArtifactFile]]:
    """The model file, its weights, and the companions, from the manifest's files[]: a companion by its role (or,
    without one, by not being a model or weights file), the model file among the others by its suffix."""
    files = [_artifact_file(entry, f, backend) for f in entry["files"]]
    models = [f for f in files if f.role == "model"]
    weights = [f for f in files if f.role == "weights"]
    if len(models) != 1:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {len(models)} model files "
                             f"({backend.model_suffix}); expected one")
    if backend.weights_file and len(weights) != 1:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {len(weights)} weights files "
                             f"({', '.join(backend.weights_suffixes)}); expected one")
    return models[0], weights, [f for f in files if f.role not in ("model", "weights")]


def _artifact_file(entry: dict[str, Any], record: dict[str, Any], backend: Backend) -> ArtifactFile:
    path = PurePosixPath(record["path"])
    folder = _folder(entry)
    if path.parts[:1] != (folder,) or ".." in path.parts:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {record['path']}, outside its folder {folder}/")
    rel = path.relative_to(folder)
    role = record.get("role")
    if role in (None, "model", "weights"):  # the model's own files ("model" covers weights too) or an older build's
        role = ("model" if rel.name.endswith(backend.model_suffix) else
                "weights" if role or rel.name.endswith(backend.weights_suffixes) else "companion")
    return ArtifactFile(rel, record["sha256"], role)


def _beside(model: ArtifactFile, weights: ArtifactFile) -> PurePosixPath:
    """Where external weights go: at the same place relative to the model file, which records that place."""
    try:
        return weights.rel.relative_to(model.rel.parent)
    except ValueError:
        raise OutputDirError(f"{weights.rel}: not beside its model file {model.rel}") from None


def copy_checked(src: Path, dst: Path, sha256: str) -> None:
    """Copy `src` to `dst`, hashing the bytes as they are copied: they must be the ones the manifest lists."""
    if not src.is_file():
        raise OutputDirError(f"{src}: missing, though {MANIFEST} lists it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with src.open("rb") as source, dst.open("wb") as copy:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
            copy.write(chunk)
    if digest.hexdigest() != sha256:
        raise OutputDirError(f"{src}: changed since the build (sha256 differs from {MANIFEST}); nothing was written")


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
