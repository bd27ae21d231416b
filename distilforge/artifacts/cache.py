"""Incremental builds: a target whose inputs have not changed is not exported again, and one whose
pass rule alone changed is only re-validated.

Each manifest entry carries two content hashes (`cache.export`, `cache.validation`). The export key
covers everything an artifact's bytes depend on: the target, the checkpoint's files, the options that
reach its exporter, the tool versions and distilforge's own code and data. The validation key adds
what its figures depend on: the tolerance, the labelled data. An entry is reused only when its key
matches and every file it lists still has the recorded size and sha256.

While a build runs, the previous manifest is kept as `.distilforge-cache.json` (not a manifest: it
vouches for nothing), updated after every target, so a killed build's rerun also skips finished work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import CACHE, MANIFEST, write_json_atomic
from distilforge.artifacts.manifest import SCHEMA_VERSION, verify_files

_PACKAGE = Path(__file__).resolve().parent.parent
_CODE_SUFFIXES = (".py", ".txt", ".jsonl", ".json")


@dataclass(frozen=True)
class CacheKeys:
    export: str
    validation: str

    def to_dict(self) -> dict[str, str]:
        return {"export": self.export, "validation": self.validation}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


_CODE: str | None = None


def code_fingerprint() -> str:
    """sha256 over distilforge's own source and data files: a changed exporter is a changed input."""
    global _CODE
    if _CODE is None:
        h = hashlib.sha256()
        for path in sorted(p for p in _PACKAGE.rglob("*") if p.suffix in _CODE_SUFFIXES and p.is_file()):
            h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE = h.hexdigest()
    return _CODE


def cache_keys(export_inputs: dict[str, Any], validation_inputs: dict[str, Any]) -> CacheKeys:
    export = digest({**export_inputs, "code": code_fingerprint()})
    return CacheKeys(export=export, validation=digest({"export": export, **validation_inputs}))


def load_previous(out: Path) -> dict[str, dict[str, Any]]:
    """The entries of the last build into `out` (its manifest, or the cache a killed build left), by target.
    Unreadable or foreign files give no entries: the cache can only save work, never vouch."""
    for name in (MANIFEST, CACHE):
        try:
            data = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION:
            return {a["target"]: a for a in data.get("artifacts", []) if isinstance(a, dict) and "target" in a}
    return {}


def reusable(out: Path, entry: dict[str, Any] | None, keys: CacheKeys) -> bool:
    """The previous entry exported the same thing, and its files are intact."""
    if not entry or entry.get("error") or (entry.get("cache") or {}).get("export") != keys.export:
        return False
    return not verify_files(out, entry)


def save_progress(out: Path, previous: dict[str, dict[str, Any]], done: list[dict[str, Any]]) -> None:
    entries = {**previous, **{e["target"]: e for e in done}}
    write_json_atomic(out / CACHE, {"schema_version": SCHEMA_VERSION, "artifacts": list(entries.values())})
