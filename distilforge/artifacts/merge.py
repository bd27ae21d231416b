"""`distilforge merge`: the parts of one build (`build --shard K/N` in a CI matrix, build-many's tasks) put
together into the output directory and manifest that one unsharded build would have written, byte for byte.

Everything is checked before anything is written: each part's manifest (readable, digest intact), that all parts
come from the same checkpoint bytes, settings, tools, lock and distilforge version, that every target of the build
is in some part, that overlapping parts hold the same artifact, and every file's sha256.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import (
    begin_build,
    check_out_dir,
    clean_staging,
    end_build,
    exclusive,
    move_into_place,
    staging_dir,
)
from distilforge.artifacts.manifest import (
    make_manifest,
    manifest_digest,
    read_manifest,
    verify_files,
    write_manifest,
)
from distilforge.errors import OutputDirError

# What must be the same in every part, with what differs named in the refusal. The checkpoint's path may differ
# (CI runners check out in different places); its bytes may not.
SAME = {"checkpoint": "checkpoint bytes", "settings": "settings", "tools": "tool versions",
        "lock": "lock file", "reference": "reference (eager) figures"}
MACHINE_SAME = ("arch", "cpu_class", "os", "python", "threads")  # what the figures depend on


class MergeError(OutputDirError):
    """Parts that cannot be merged. Exit code 2, nothing written."""


@dataclass
class PartDir:
    """One part: its directory and its manifest."""

    path: Path
    manifest: dict[str, Any]


@dataclass
class Merged:
    manifest: dict[str, Any]
    sources: dict[str, Path]  # target -> the part directory holding its files


def read_parts(dirs: list[Path]) -> list[PartDir]:
    parts = []
    for d in dirs:
        manifest = read_manifest(d)
        if manifest.get("digest") != manifest_digest(manifest):
            raise MergeError(f"{d / 'manifest.json'}: edited after the build (its digest does not match its content)")
        parts.append(PartDir(Path(d), manifest))
    return parts


def plan_merge(parts: list[PartDir], *, mixed_cpus: bool = False) -> Merged:
    """The merged manifest and where each artifact's files come from; raises MergeError on any mismatch.
    `mixed_cpus`: parts validated on different CPU classes are merged (each artifact's `validated_on` says where
    its figures were measured; the manifest's `machine` is the first part's)."""
    if not parts:
        raise MergeError("merge: no part directories given")
    first = parts[0]
    for p in parts[1:]:
        _check_same(first, p, mixed_cpus)
    entries: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    for p in parts:
        for entry in p.manifest["artifacts"]:
            name = entry["target"]
            if name in entries:
                _check_overlap(name, (sources[name], entries[name]), (p.path, entry))
                continue
            entries[name], sources[name] = entry, p.path
    wanted = first.manifest["settings"]["targets"]
    missing = [t for t in wanted if t not in entries]
    if missing:
        raise MergeError(f"merge: no part has {', '.join(missing)} (of the build's {len(wanted)} targets); "
                         "merge every shard's output")
    foreign = [t for t in entries if t not in wanted]
    if foreign:
        raise MergeError(f"{sources[foreign[0]]}: has {foreign[0]}, which is not one of the build's targets")
    for name in wanted:
        problems = verify_files(sources[name], entries[name])
        if problems:
            raise MergeError(f"{sources[name]}: {problems[0]}")
    m = first.manifest
    artifacts = [entries[t] for t in wanted]
    manifest = make_manifest(checkpoint=m["checkpoint"], entries=[], reference=m["reference"], tools=m["tools"],
                             machine=m["machine"], settings=m["settings"])
    manifest.update(lock=m["lock"], passed=all(_passed(a) for a in artifacts), artifacts=artifacts)
    return Merged(manifest=manifest, sources={t: sources[t] for t in wanted})


def _passed(entry: dict[str, Any]) -> bool:
    return not entry.get("error") and bool((entry.get("validation") or {}).get("passed"))


def _check_same(first: PartDir, other: PartDir, mixed_cpus: bool) -> None:
    for key, what in SAME.items():
        a, b = first.manifest.get(key), other.manifest.get(key)
        if key == "checkpoint":  # the files' hashes first: they say which file differs
            a, b = _without_path(a), _without_path(b)
            if a and b and a.get("files") != b.get("files"):
                a, b = ({f["path"]: f["sha256"] for f in r.get("files", [])} for r in (a, b))
                key = "checkpoint.files"
        if a != b:
            raise MergeError(f"{other.path}: built from different {what} than {first.path} "
                             f"({_first_difference(a, b, key)}); rebuild the parts with the same inputs")
    ma, mb = first.manifest.get("machine") or {}, other.manifest.get("machine") or {}
    for key in MACHINE_SAME:
        if ma.get(key) != mb.get(key) and not (key == "cpu_class" and mixed_cpus):
            hint = " (pass --mixed-cpus to merge them anyway)" if key == "cpu_class" else ""
            raise MergeError(f"{other.path}: built on a machine with {key} {mb.get(key)!r}, {first.path} on "
                             f"{ma.get(key)!r}; their figures are not comparable{hint}")


def _without_path(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in record.items() if k != "path"} if isinstance(record, dict) else record


def _first_difference(a: Any, b: Any, where: str) -> str:
    """The first key path at which two JSON values differ, with both values when they are short."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    shown = f": {a!r} vs {b!r}" if len(repr(a)) + len(repr(b)) < 120 else ""
    return f"{where} differs{shown}"


def _check_overlap(name: str, kept: tuple[Path, dict[str, Any]], other: tuple[Path, dict[str, Any]]) -> None:
    (kept_dir, a), (other_dir, b) = kept, other
    if a == b:
        return
    hashes = [{f["path"]: f["sha256"] for f in e.get("files", [])} for e in (a, b)]
    what = "different bytes" if hashes[0] != hashes[1] else "different figures"
    raise MergeError(f"{other_dir}: has {name} with {what} than {kept_dir} "
                     f"({_first_difference(a, b, name)}); the parts overlap and disagree")


def merge(dirs: list[Path], out: Path, *, force: bool = False, mixed_cpus: bool = False) -> dict[str, Any]:
    """Check every part, then write `out` (each artifact's folder, then the manifest last). Returns the manifest."""
    out = Path(out)
    parts = read_parts(dirs)
    merged = plan_merge(parts, mixed_cpus=mixed_cpus)
    if any(out.resolve() == p.path.resolve() for p in parts):
        raise MergeError(f"{out}: is one of the parts; merge into another directory")
    check_out_dir(out, force=force)
    with exclusive(out):
        clean_staging(out)
        begin_build(out)
        write_folders(merged, out)
        write_manifest(out, merged.manifest)
        end_build(out)
    return merged.manifest


def write_folders(merged: Merged, out: Path) -> None:
    """Copy each artifact's files from its part into a staging folder in `out`, then rename it into place; a
    folder already there with the same files (build-many reusing the last run's) is left as it is."""
    for entry in merged.manifest["artifacts"]:
        if not entry["files"]:
            continue
        folder = entry["files"][0]["path"].split("/")[0]
        source = merged.sources[entry["target"]]
        if source.resolve() == out.resolve():
            continue
        staging = staging_dir(out, folder)
        try:
            for f in entry["files"]:
                dest = staging / f["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                link_or_copy(source / f["path"], dest)
            move_into_place(staging / folder, out / folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def link_or_copy(src: Path, dest: Path) -> None:
    """A hard link where both are on one file system (no bytes copied), else a copy."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
