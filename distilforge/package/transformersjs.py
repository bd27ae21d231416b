"""package_transformersjs: DIR (a build) -> one folder that Transformers.js (the npm package
`@huggingface/transformers`, v3 and v4) loads with `pipeline(task, folder, {dtype})`, from DIR's validated ONNX
artifacts.

The layout follows the package's source (checked in 4.3.2): a model's files are `onnx/model{suffix}.onnx`, the
suffix chosen by the dtype asked for (`DEFAULT_DTYPE_SUFFIX_MAPPING` in src/utils/dtypes.js: fp32 '', fp16
'_fp16', q8 '_quantized', int8 '_int8'); external data is `<file>_data` (then `_data_1`, ... for more chunks;
`getExternalDataChunkNames` in src/utils/model-loader.js), fetched only for a file that config.json's
`transformers.js_config.use_external_data_format` names: keyed by the full file name (or the base name "model"),
the value the number of chunks (true = 1). In Node, ONNX Runtime reads the external data itself, from the
`location` the model records, so that is rewritten to the new name; the weights' bytes are copied as they are.

onnx:fp32-optimized becomes `model.onnx` (dtype fp32) only when onnx:fp32 is not packaged: Transformers.js has
one file per dtype, and onnx:fp32 is the exporter's graph in standard ONNX operators alone, while the optimized
graph is fused for ONNX Runtime's CPU provider (com.microsoft Attention, EmbedLayerNormalization), which the
WebGPU and WebNN devices may lack; both passed the same fp32 rule. (The INT8 files are quantized from the
optimized graph, so they carry those operators too.) Validated artifacts only, copied with the manifest's sha256
checked; config.json and tokenizer files from their folders (the checkpoint's own bytes; config.json gains
`transformers.js_config` when needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from distilforge.artifacts.folder import CONFIG, TOKENIZER_FILES
from distilforge.artifacts.layout import MANIFEST
from distilforge.artifacts.manifest import read_manifest
from distilforge.errors import MissingBackendError, OutputDirError, UsageError, first_line
from distilforge.heads import SENTENCE_TRANSFORMER
from distilforge.package.common import (
    ArtifactFile,
    artifact_file,
    built_entry,
    check_destination,
    copy_checked,
    folder_name,
    passed,
    read_checked,
    require_passed,
    staged,
)

MARKER = ".distilforge-transformersjs"  # in the folder: it was written by package_transformersjs
SUBFOLDER = "onnx"  # where Transformers.js looks for model files (its `subfolder` default)
# target -> Transformers.js dtype, in the order they are listed
DTYPES = {"onnx:fp32": "fp32", "onnx:fp16": "fp16", "onnx:int8-dynamic": "q8", "onnx:int8-static": "int8"}
SUFFIXES = {"fp32": "", "fp16": "_fp16", "q8": "_quantized", "int8": "_int8"}
STAND_IN = {"onnx:fp32-optimized": "onnx:fp32"}  # packaged under the other's dtype when that one is not packaged
DATA_SUFFIX = "_data"  # external data of model_fp16.onnx: model_fp16.onnx_data
WEIGHTS_SUFFIXES = (".onnx_data", ".data")  # external data in an artifact folder (older builds: model.onnx.data)
# what Transformers.js loads with no dtype: fp32, and q8 on the browser's wasm device (src/utils/dtypes.js)
DEVICE_DEFAULTS = ("fp32", "q8")
DEFAULT_PREFERENCE = ("fp32", "q8", "int8", "fp16")  # the config's dtype when a device default is not packaged
# the DistilBERT heads Transformers.js has a class for (src/models/registry.js); a sentence-transformers folder
# is a DistilBertModel to it
HEADS = ("DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
         "DistilBertForTokenClassification", "DistilBertForQuestionAnswering", SENTENCE_TRANSFORMER)


def package_transformersjs(out_dir: Path, dest: Path, *, targets: list[str] | None = None) -> list[Path]:
    """Write DEST/config.json, the tokenizer files and DEST/onnx/model{_fp16,_quantized,_int8}.onnx from DIR's
    validated ONNX artifacts (or the named `targets`); returns the model files written.

    DEST is written beside itself and renamed into place: a failure leaves it as it was. It must be empty or
    missing, or hold only what an earlier package_transformersjs wrote (it is then replaced). Raises UsageError
    for a target that is not built, failed or is not ONNX, and OutputDirError for a file whose bytes are not the
    manifest's."""
    out, dest = Path(out_dir), Path(dest)
    manifest = read_manifest(out)
    check_head(manifest, out)
    chosen = chosen_entries(manifest, targets, out)
    companions = companion_files(out, manifest, list(chosen.values()))
    check_destination(dest, MARKER, "entries", "a Transformers.js model folder")
    with staged(dest) as staging:
        external = []  # the model files with external data
        for dtype, entry in chosen.items():
            if write_model(out, entry, staging / SUBFOLDER / model_file(dtype)):
                external.append(model_file(dtype))
        for src, rel, sha256 in companions:
            copy_checked(src, staging / rel, sha256)
        write_config(staging / CONFIG, external, list(chosen))
        write_marker(staging, manifest, chosen)
    return [dest / SUBFOLDER / model_file(dtype) for dtype in chosen]


def model_file(dtype: str) -> str:
    return f"model{SUFFIXES[dtype]}.onnx"


def check_head(manifest: dict[str, Any], out: Path) -> None:
    head = manifest["checkpoint"].get("head")
    if head not in HEADS:
        raise UsageError(f"{out}: Transformers.js has no class for a {head} model; it runs the DistilBERT heads "
                         f"{', '.join(h for h in HEADS if h != SENTENCE_TRANSFORMER)}")


def chosen_entries(manifest: dict[str, Any], targets: list[str] | None, out: Path) -> dict[str, dict[str, Any]]:
    """dtype -> the manifest entry packaged under it: the named targets (each must be usable), or every validated
    ONNX artifact that has a dtype."""
    by_target = {a["target"]: a for a in manifest["artifacts"]}
    names = list(dict.fromkeys(n.strip() for n in targets or [] if n.strip()))
    if names:
        entries = [require_passed(_with_dtype(built_entry(by_target, name, out))) for name in names]
    else:
        usable = {t: a for t, a in by_target.items() if passed(a) and (t in DTYPES or t in STAND_IN)}
        entries = [a for t, a in usable.items() if STAND_IN.get(t) not in usable]
        if not entries:
            raise UsageError(f"{out}: no validated ONNX artifact to package for Transformers.js "
                             f"(built: {', '.join(by_target) or 'nothing'})")
    chosen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        dtype = dtype_of(entry["target"])
        if dtype in chosen:
            raise UsageError(f"{chosen[dtype]['target']} and {entry['target']}: both would be "
                             f"{SUBFOLDER}/{model_file(dtype)} (dtype {dtype}); name one of them")
        chosen[dtype] = entry
    return {dtype: chosen[dtype] for dtype in SUFFIXES if dtype in chosen}


def dtype_of(target: str) -> str:
    return DTYPES[STAND_IN.get(target, target)]


def _with_dtype(entry: dict[str, Any]) -> dict[str, Any]:
    target = entry["target"]
    if target not in DTYPES and target not in STAND_IN:
        known = ", ".join([*DTYPES, *STAND_IN])
        raise UsageError(f"{target}: Transformers.js runs ONNX files of a dtype it names; package {known}")
    return entry


def write_model(out: Path, entry: dict[str, Any], dest: Path) -> bool:
    """DEST (onnx/model*.onnx) and, when the model keeps its weights as external data, DEST + "_data" beside it,
    the model's record of their location rewritten to that name. Returns whether it has external data."""
    model, weights = model_files(entry)
    src = out / folder_name(entry) / model.rel
    if weights is None:
        copy_checked(src, dest, model.sha256)
        return False
    data = dest.with_name(dest.name + DATA_SUFFIX)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_relocated(read_checked(src, model.sha256), src, _beside(model, weights), dest, data.name)
    copy_checked(out / folder_name(entry) / weights.rel, data, weights.sha256)
    return True


def model_files(entry: dict[str, Any]) -> tuple[ArtifactFile, ArtifactFile | None]:
    """The .onnx file and its external data file (None: the weights are inside it), from the manifest."""
    files = [artifact_file(entry, f, ".onnx", WEIGHTS_SUFFIXES) for f in entry["files"]]
    models = [f for f in files if f.role == "model"]
    weights = [f for f in files if f.role == "weights"]
    if len(models) != 1 or len(weights) > 1:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {len(models)} .onnx file(s) and {len(weights)} "
                             "external data file(s); expected one and at most one")
    return models[0], (weights[0] if weights else None)


def _beside(model: ArtifactFile, weights: ArtifactFile) -> str:
    if weights.rel.parent != model.rel.parent:
        raise OutputDirError(f"{weights.rel}: not beside its model file {model.rel}")
    return weights.rel.name


def write_relocated(model_bytes: bytes, src: Path, location: str, dest: Path, new_location: str) -> None:
    """Save the ONNX model of `model_bytes` (read from `src`) as DEST, its external data's location `location`
    changed to `new_location`; the weights themselves are not read."""
    onnx = _import_onnx(src)
    try:
        model = onnx.load_model_from_string(model_bytes)
    except Exception as e:  # protobuf's DecodeError and onnx's own
        raise OutputDirError(f"{src}: not a readable ONNX model ({type(e).__name__}: {first_line(e)})") from None
    external = [t for t in all_tensors(model.graph) if onnx.external_data_helper.uses_external_data(t)]
    found = sorted({_location(t) for t in external})
    if found != [location]:
        raise OutputDirError(f"{src}: keeps its weights in {', '.join(found) or 'no external file'}, but {MANIFEST} "
                             f"lists {location} beside it")
    if location == new_location:
        dest.write_bytes(model_bytes)
        return
    for tensor in external:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = new_location
    onnx.save_model(model, str(dest))


def _import_onnx(src: Path) -> Any:
    try:
        import onnx
        import onnx.external_data_helper
    except ImportError:
        raise MissingBackendError(f"{src}: renaming its external data needs the onnx package: "
                                  "pip install 'distilforge[onnx]'") from None
    return onnx


def all_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from all_tensors(subgraph)


def _location(tensor: Any) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def companion_files(out: Path, manifest: dict[str, Any],
                    entries: list[dict[str, Any]]) -> list[tuple[Path, PurePosixPath, str]]:
    """(source, path in the package, sha256) of config.json and the tokenizer files: from the first artifact folder
    that holds them, else (a build from before folders carried them) from the checkpoint the manifest names.
    Transformers.js's tokenizer needs tokenizer.json and tokenizer_config.json."""
    found = next((files for e in entries if (files := _folder_companions(out, e))), None)
    if found is None:
        found = _checkpoint_companions(manifest, out)
    names = {rel.as_posix() for _, rel, _ in found}
    for needed in (CONFIG, "tokenizer.json", "tokenizer_config.json"):
        if needed not in names:
            raise UsageError(f"{found[0][0].parent}: no {needed}; Transformers.js needs "
                             f"{CONFIG}, tokenizer.json and tokenizer_config.json (a fast tokenizer: save it with "
                             "AutoTokenizer.from_pretrained(CHECKPOINT).save_pretrained(CHECKPOINT), then rebuild)")
    return found


def _folder_companions(out: Path, entry: dict[str, Any]) -> list[tuple[Path, PurePosixPath, str]]:
    files = [artifact_file(entry, f, ".onnx", WEIGHTS_SUFFIXES) for f in entry["files"]]
    if not any(f.role == "config" and f.rel.as_posix() == CONFIG for f in files):
        return []
    return [(out / folder_name(entry) / f.rel, f.rel, f.sha256) for f in files if f.role in ("config", "tokenizer")]


def _checkpoint_companions(manifest: dict[str, Any], out: Path) -> list[tuple[Path, PurePosixPath, str]]:
    checkpoint = manifest["checkpoint"]
    source = Path(checkpoint.get("path") or "")
    records = [r for r in checkpoint.get("files") or [] if r.get("path") in (CONFIG, *TOKENIZER_FILES)]
    if not records or not (source / CONFIG).is_file():
        raise OutputDirError(f"{out}: its ONNX folders hold no {CONFIG}, and the checkpoint it was built from "
                             f"({source}) is gone")
    return [(source / r["path"], PurePosixPath(r["path"]), r["sha256"]) for r in records]


def write_config(path: Path, external: list[str], dtypes: list[str]) -> None:
    """config.json as copied, plus `transformers.js_config`: `use_external_data_format` naming every model file
    with external data (one chunk each), and `dtype` when a dtype Transformers.js loads by default is not here."""
    extra: dict[str, Any] = {}
    if external:
        extra["use_external_data_format"] = {name: 1 for name in external}
    if not set(DEVICE_DEFAULTS) <= set(dtypes):
        extra["dtype"] = next(d for d in DEFAULT_PREFERENCE if d in dtypes)
    if not extra:
        return
    config = json.loads(path.read_text(encoding="utf-8"))  # the checkpoint's, which the build read
    config["transformers.js_config"] = {**(config.get("transformers.js_config") or {}), **extra}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_marker(staging: Path, manifest: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> None:
    models = {f"{SUBFOLDER}/{model_file(d)}": {"dtype": d, "target": e["target"]} for d, e in chosen.items()}
    marker = {"written_by": "distilforge package --format transformers.js",
              "manifest_digest": manifest.get("digest"), "models": models,
              "entries": sorted(p.name for p in staging.iterdir())}
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
