"""What makes an artifact folder deployable as it is: the checkpoint's `config.json` (labels included) and its
tokenizer files beside the model, and `distilforge.json`, the folder's own card: what it is, how to feed it, how it
validated and on which CPU, and the sha256 of every other file in it.

The card is a pure function of the folder's manifest entry and the manifest's checkpoint record, so `validate` can
rebuild it and catch a card that no longer says what the manifest says.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.records import FileRecord
from distilforge.sentence import SentencePooling, sentence_module_files
from distilforge.version import __version__

CARD = "distilforge.json"
CARD_VERSION = 1
CONFIG = "config.json"
# What AutoTokenizer reads from a folder (the checkpoint's own bytes are copied, never re-serialised)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json")

@dataclass(frozen=True)
class Loader:
    """How a format's folder loads in the runtime its users already run (each format's FormatSpec in targets.py
    gives one; README "Use an artifact" and docs/artifact-folders.md show the lines; tests/test_readme.py runs
    them): a line with `{head}` (Optimum's class suffix for the head) and `{hint}` (the OpenVINO precision hint the
    artifact was validated with), and the Optimum heads its library has no class for."""

    line: str
    heads_without_class: tuple[str, ...] = ()

    def line_for(self, architecture: str | None, hint: str = "f32") -> str | None:
        head = OPTIMUM_HEADS.get(architecture or "", "")
        if "{head}" in self.line and (not head or head in self.heads_without_class):
            return None
        return self.line.format(head=head, hint=hint)


OPTIMUM_HEADS = {
    "DistilBertModel": "FeatureExtraction", "DistilBertForMaskedLM": "MaskedLM",
    "DistilBertForSequenceClassification": "SequenceClassification",
    "DistilBertForTokenClassification": "TokenClassification",
    "DistilBertForQuestionAnswering": "QuestionAnswering", "DistilBertForMultipleChoice": "MultipleChoice",
}


def add_companions(checkpoint: Path, folder: Path, prefix: str) -> list[FileRecord]:
    """Copy the checkpoint's config.json and tokenizer files into `folder`; their records, with paths under
    `prefix` (the folder's name in the output directory)."""
    records = []
    for name, role in [(CONFIG, "config"), *((n, "tokenizer") for n in TOKENIZER_FILES)]:
        source = checkpoint / name
        if source.is_file():
            shutil.copyfile(source, folder / name)
            records.append(_record(folder, name, prefix, role))
    return records


def add_sentence_files(root: Path, pooling: SentencePooling, folder: Path, prefix: str) -> list[FileRecord]:
    """A sentence-transformers checkpoint's module files, so `SentenceTransformer(folder, backend="onnx")` (or
    "openvino") loads the folder: modules.json with the transformer in the folder itself, the pooling's config and
    the transformer's sentence-transformers configs. Records as add_companions gives them (role "config")."""
    written = []
    for name, data in sentence_module_files(root, pooling).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        written.append(_record(folder, name, prefix, "config"))
    return written


def write_card(folder: Path, entry: dict[str, Any], checkpoint: dict[str, Any], loader: Loader | None) -> FileRecord:
    """Write the folder's card for a manifest `entry` (without its card file); its record."""
    tmp = folder / f".{CARD}.tmp"  # rewritten in place when a rerun re-validates an unchanged export
    tmp.write_text(card_text(card(entry, checkpoint, loader)), encoding="utf-8")
    os.replace(tmp, folder / CARD)
    return _record(folder, CARD, entry["target"].replace(":", "-"), "card")


def card_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def card(entry: dict[str, Any], checkpoint: dict[str, Any], loader: Loader | None) -> dict[str, Any]:
    """The card of one artifact folder, from its manifest entry, the manifest's checkpoint record and its format's
    loader."""
    folder = entry["target"].replace(":", "-")
    files = [{**f, "path": f["path"].removeprefix(folder + "/")} for f in entry["files"] if f.get("role") != "card"]
    validation = entry.get("validation") or {}
    head = {"architecture": checkpoint.get("head"), "task": checkpoint.get("task"),
            "problem_type": checkpoint.get("problem_type"), "labels": checkpoint.get("labels")}
    return {
        "card_version": CARD_VERSION,
        "tool": f"distilforge {__version__}",
        "target": entry["target"],
        "format": entry["format"],
        "precision": entry["precision"],
        "runtime": entry["runtime"],
        "loads_with": loader.line_for(checkpoint.get("head"), precision_hint(entry)) if loader else None,
        "head": head,
        "model_files": [f["path"] for f in files if f.get("role", "model") == "model"],
        "inputs": entry["inputs"],
        "outputs": entry["outputs"],
        "fixed_shapes": entry.get("fixed_shapes"),
        "signatures": (entry.get("details") or {}).get("signatures"),
        "passed": entry.get("error") is None and bool(validation.get("passed")),
        "error": entry.get("error"),
        "validation": {k: validation.get(k) for k in ("precision_class", "tolerance", "worst", "task", "failures")}
        if validation else None,
        "validated_on": entry.get("validated_on"),
        "int8": _int8(entry),
        "program": _program(entry, files),
        "checkpoint_files": [{"path": f["path"], "sha256": f["sha256"]} for f in checkpoint.get("files", [])],
        "files": files,
    }


def precision_hint(entry: dict[str, Any]) -> str:
    """The OpenVINO inference precision an artifact was validated in (its runner's hint)."""
    return (entry.get("details") or {}).get("inference_precision_hint", "f32")


def _int8(entry: dict[str, Any]) -> dict[str, Any] | None:
    details = entry.get("details") or {}
    ladder = entry.get("ladder") or {}
    if not details.get("int8_cpu") and not ladder:
        return None
    return {"recipe": ladder.get("kept"), "int8_cpu": details.get("int8_cpu")}


def _program(entry: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What an app calling an ExecuTorch program needs: the method, its inputs in order with dtypes, the bounds
    of each axis, the memory the runtime allocates for it, and the tokenizer files beside it."""
    details = entry.get("details") or {}
    if "method" not in details:
        return None
    return {"file": next(f["path"] for f in files if f["path"].endswith(".pte")), "method": details["method"],
            "inputs_in_order": [{"name": s["name"], "dtype": s["dtype"], "shape": s["shape"]}
                                for s in entry["inputs"]],
            "outputs_in_order": [s["name"] for s in entry["outputs"]],
            "bounds": details.get("bounds"), "planned_memory_bytes": details.get("planned_memory_bytes"),
            "tokenizer_files": [f["path"] for f in files if f.get("role") == "tokenizer"],
            "note": "inputs must be contiguous int64; the runtime checks only an input's element count, so keep "
                    "every axis within its bounds"}


def card_problems(out: Path, entry: dict[str, Any], checkpoint: dict[str, Any], loader: Loader | None) -> list[str]:
    """A card that is not the one the manifest's entry gives (a changed byte is caught by its hash already)."""
    records = [f for f in entry.get("files", []) if f.get("role") == "card"]
    if not records or not (out / records[0]["path"]).is_file():
        return []  # an older build without cards, or a missing file (reported by the hash check)
    expected = card_text(card(entry, checkpoint, loader))
    if (out / records[0]["path"]).read_text(encoding="utf-8") != expected:
        return [f"{entry['target']}: {records[0]['path']} does not say what {'manifest.json'} says about it"]
    return []


def _record(folder: Path, name: str, prefix: str, role: str) -> FileRecord:
    record = FileRecord.of(folder, folder / name, role)
    return FileRecord(f"{prefix}/{record.path}", record.bytes, record.sha256, role)


def companion_problems(out: Path, entry: dict[str, Any], model_dir: Path) -> list[str]:
    """A companion (config.json, a tokenizer file) that is no longer the checkpoint's own, one line each naming the
    file and what differs. Their hashes in the manifest only say the folder is as it was written: a folder whose
    labels or vocabulary were edited and re-signed (hashes, card and digest recomputed) passes that check, and then
    decodes every answer with the wrong labels or tokenizes every text wrongly."""
    problems = []
    for record in entry.get("files", []):
        name = Path(record["path"]).name
        if record.get("role") not in ("config", "tokenizer") or name not in (CONFIG, *TOKENIZER_FILES):
            continue
        here, there = out / record["path"], model_dir / name
        if not here.is_file():
            continue  # reported by the hash check
        if not there.is_file():
            problems.append(f"{entry['target']}: {record['path']}: the checkpoint has no {name} any more")
        elif here.read_bytes() != there.read_bytes():
            problems.append(f"{entry['target']}: {record['path']} is not the checkpoint's {name}: "
                            f"{_what_differs(here, there)}")
    return problems


def _what_differs(here: Path, there: Path) -> str:
    """The keys of a JSON file whose values differ (with both values where they are short), or the first line of a
    vocabulary that differs."""
    mine, theirs = here.read_text(encoding="utf-8", errors="replace"), there.read_text(encoding="utf-8",
                                                                                       errors="replace")
    if here.suffix == ".json":
        try:
            a, b = json.loads(mine), json.loads(theirs)
        except json.JSONDecodeError:
            return "not the same JSON"
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]
            return "; ".join(_key_difference(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in keys[:4]) \
                + (f"; and {len(keys) - 4} more keys" if len(keys) > 4 else "") or "formatting only"
        return "not the same JSON"
    lines_here, lines_there = mine.splitlines(), theirs.splitlines()
    changed = [i for i in range(max(len(lines_here), len(lines_there)))
               if (lines_here[i:i + 1] or [None]) != (lines_there[i:i + 1] or [None])]
    if not changed:
        return "line endings or trailing bytes differ"
    i = changed[0]
    return (f"{len(changed)} of {len(lines_there)} lines differ; line {i + 1} is "
            f"{_short(lines_here[i] if i < len(lines_here) else None)} here, "
            f"{_short(lines_there[i] if i < len(lines_there) else None)} in the checkpoint")


_MISSING = object()


def _key_difference(key: str, here: Any, there: Any) -> str:
    if here is _MISSING:
        return f"no {key!r} here (the checkpoint's: {_short(there)})"
    if there is _MISSING:
        return f"{key!r} {_short(here)} is not in the checkpoint's"
    return f"{key!r} is {_short(here)} here, {_short(there)} in the checkpoint"


def _short(value: Any, width: int = 80) -> str:
    text = "missing" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."
