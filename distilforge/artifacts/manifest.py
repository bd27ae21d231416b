"""manifest.json: the single source of truth for what was built, from what, and how it measured.

Keys build systems read (stable; renaming one bumps SCHEMA_VERSION): `schema_version`,
`checkpoint`, `artifacts[]` with `target`, `files[]` (`path`, `bytes`, `sha256`) and
`validation` (`passed`, figures, tolerances).

Schema 2: an artifact's `validated_on` is a list, one entry per CPU it was judged on: first the machine its
`validation` figures are from, then each emulated CPU `build --validate-on` asked for (`emulated`, `passed`, and
that CPU's own `validation`). Schema 1 had the first entry alone, as an object; both are read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.environment import lock_record
from distilforge.artifacts.hashing import sha256_file
from distilforge.artifacts.layout import MANIFEST, write_json_atomic
from distilforge.artifacts.records import ExportedArtifact, ValidationResult
from distilforge.errors import OutputDirError

SCHEMA_VERSION = 2
REQUIRED_KEYS: dict[str, type] = {"checkpoint": dict, "settings": dict, "artifacts": list}  # what every reader needs


@dataclass
class Verdict:
    """An artifact judged on one more CPU than the one its `validation` is from: an emulated arm64 (its `cpu`
    record says which, under `emulated`), with that CPU's own figures; or why it could not be run there."""

    cpu: dict[str, Any]
    validation: ValidationResult | None = None
    error: str | None = None  # it could not be loaded or run there
    not_run: str | None = None  # its runtime does not run there: why (not a failure)

    @property
    def passed(self) -> bool | None:
        if self.not_run:
            return None
        return self.error is None and self.validation is not None and self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        return {**self.cpu, "passed": self.passed, "error": self.error, "not_run": self.not_run,
                "validation": self.validation.to_dict() if self.validation else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        cpu = {k: v for k, v in d.items() if k not in ("passed", "error", "not_run", "validation")}
        validation = ValidationResult.from_dict(d["validation"]) if d.get("validation") else None
        return cls(cpu=cpu, validation=validation, error=d.get("error"), not_run=d.get("not_run"))


def host_cpu(validated_on: dict[str, Any] | list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The CPU an entry's `validation` figures are from (with its verdict there), in a manifest of either schema."""
    if isinstance(validated_on, list):
        return validated_on[0] if validated_on else None
    return validated_on


@dataclass
class ArtifactEntry:
    """One target's artifact and its validation, as the manifest holds it."""

    artifact: ExportedArtifact
    validation: ValidationResult | None
    format: str
    precision: str
    runtime: str
    error: str | None = None  # set when the target failed before it could be validated
    cache: dict[str, str] | None = None  # content keys of what it was built and validated from
    not_reproducible: str = ""  # why the same inputs would not give the same bytes ("" = they do)
    reproducible_caveat: str = ""  # a condition on that, e.g. the same install path
    ladder: dict[str, Any] | None = None  # INT8: the recipes tried, their figures and which one was kept
    validated_on: dict[str, Any] | None = None  # the CPU the figures were measured on (cpu, cpu_class, flags)
    elsewhere: list[Verdict] = field(default_factory=list)  # emulated CPUs it was also judged on (--validate-on)
    reused: str = ""  # this run only, not in the manifest: "" (built), "export" (re-validated) or "all"

    @property
    def passed(self) -> bool:
        return self.error is None and self.validation is not None and self.validation.passed

    def to_dict(self) -> dict[str, Any]:
        d = self.artifact.to_dict()
        return {
            "target": d.pop("target"), "format": self.format, "precision": self.precision,
            "runtime": self.runtime, "bytes": self.artifact.total_bytes, **d,
            "validation": self.validation.to_dict() if self.validation else None,
            "error": self.error,
            "reproducible": {"bytes": not self.not_reproducible, "why_not": self.not_reproducible or None,
                             "caveat": self.reproducible_caveat or None},
            "cache": self.cache,
            "ladder": self.ladder,
            "validated_on": self._validated_on(),
        }

    def _validated_on(self) -> list[dict[str, Any]] | None:
        if self.validated_on is None:
            return None
        host = {"passed": self.validation.passed if self.validation else None, **self.validated_on}
        return [host, *(v.to_dict() for v in self.elsewhere)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactEntry:
        return cls(artifact=ExportedArtifact.from_dict(d), format=d["format"], precision=d["precision"],
                   runtime=d["runtime"], error=d.get("error"), cache=d.get("cache"),
                   not_reproducible=(d.get("reproducible") or {}).get("why_not") or "",
                   reproducible_caveat=(d.get("reproducible") or {}).get("caveat") or "",
                   ladder=d.get("ladder"), validated_on=host_cpu(d.get("validated_on")),
                   elsewhere=[Verdict.from_dict(v) for v in (d.get("validated_on") or [])[1:]]
                   if isinstance(d.get("validated_on"), list) else [],
                   validation=ValidationResult.from_dict(d["validation"]) if d.get("validation") else None)


def make_manifest(*, checkpoint: dict[str, Any], entries: list[ArtifactEntry], reference: dict[str, Any],
                  tools: dict[str, str], machine: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "distilforge",
        "checkpoint": checkpoint,
        "reference": reference,
        "settings": settings,
        "tools": tools,
        "lock": lock_record(),
        "machine": machine,
        "passed": all(e.passed for e in entries),
        "artifacts": [e.to_dict() for e in entries],
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Written last, by rename, with its own digest so a hand edit shows (`distilforge validate`)."""
    path = out / MANIFEST
    manifest["digest"] = manifest_digest(manifest)
    write_json_atomic(path, manifest)
    return path


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's content without its `digest` key. It catches edits made by hand or by a
    script that does not know about it; it is not a signature (anyone can recompute it)."""
    content = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Inconsistencies inside a manifest: an edited digest, pass rules that are not the build's own."""
    problems = []
    if manifest.get("digest") != manifest_digest(manifest):
        problems.append(f"{MANIFEST}: edited after the build (its digest does not match its content)")
    rules = manifest.get("settings", {}).get("tolerances", {})
    for a in manifest.get("artifacts", []):
        v = a.get("validation")
        if v and rules.get(v.get("precision_class")) != v.get("tolerance"):
            problems.append(f"{a['target']}: {MANIFEST} records a pass rule {v.get('tolerance')} that is not the "
                            f"build's {v.get('precision_class')} rule {rules.get(v.get('precision_class'))}")
    return problems


def read_manifest(out: Path) -> dict[str, Any]:
    path = Path(out) / MANIFEST
    if not Path(out).is_dir():
        raise OutputDirError(f"{out}: not a directory")
    if not path.is_file():
        raise OutputDirError(f"{path}: not found; is {out} the output of 'distilforge build'?")
    manifest = read_versioned_json(path, SCHEMA_VERSION, older=(1,))
    _check_keys(path, manifest)
    return manifest


_ARTIFACT_KEYS = ("target", "files", "inputs", "outputs", "validation", "error")


def _check_keys(path: Path, manifest: dict[str, Any]) -> None:
    """The keys readers need, at the top and in each artifact: a damaged manifest is one clear line, not a
    traceback."""
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise OutputDirError(f"{path}: {key!r} is missing or not a JSON {kind.__name__.replace('dict', 'object')}; "
                                 "was it written by 'distilforge build'?")
    missing: list[str] = []
    for i, a in enumerate(manifest["artifacts"]):
        if not isinstance(a, dict):
            missing.append(f"artifacts[{i}] (an object)")
            continue
        missing += [f"artifacts[{i}].{k}" for k in _ARTIFACT_KEYS if k not in a]
        if not a.get("error") and not isinstance(a.get("validation"), dict):
            missing.append(f"artifacts[{i}].validation")
    if missing:
        raise OutputDirError(f"{path}: damaged: missing {', '.join(dict.fromkeys(missing))}")


def read_versioned_json(path: Path, schema_version: int, *, older: tuple[int, ...] = ()) -> dict[str, Any]:
    """A JSON object of ours (manifest, bench results) with a schema version this code reads: `schema_version`
    or one of the `older` ones it still understands."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputDirError(f"{path}: not valid JSON ({e})") from None
    readable = (*older, schema_version)
    if not isinstance(data, dict) or data.get("schema_version") not in readable:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise OutputDirError(f"{path}: schema_version {version!r} is not {' or '.join(map(str, readable))}")
    return data


def verify_files(out: Path, artifact: dict[str, Any]) -> list[str]:
    """Problems with an artifact's files on disk: missing, resized or changed bytes."""
    problems = []
    for f in artifact.get("files", []):
        path = out / f["path"]
        if not path.is_file():
            problems.append(f"{artifact['target']}: {f['path']} is missing")
        elif path.stat().st_size != f["bytes"]:
            problems.append(f"{artifact['target']}: {f['path']} has {path.stat().st_size} bytes, "
                            f"the manifest says {f['bytes']}")
        elif sha256_file(path) != f["sha256"]:
            problems.append(f"{artifact['target']}: {f['path']} has changed (sha256 differs from the manifest)")
    return problems
