"""What every `distilforge package` layout shares: which manifest entries may be packaged, copying files with the
manifest's sha256 checked as they are copied, and writing the result beside its destination then renaming it
into place, so a failed run leaves the destination as it was."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from distilforge.artifacts.layout import MANIFEST, first_missing, move_into_place, staging_dir
from distilforge.errors import OutputDirError, UsageError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactFile:
    rel: PurePosixPath  # inside the artifact folder
    sha256: str
    role: str  # "model" (the file the runtime loads), "weights" (beside it) or a companion's ("config", "card", ...)


def artifact_file(entry: dict[str, Any], record: dict[str, Any], model_suffix: str,
                  weights_suffixes: tuple[str, ...]) -> ArtifactFile:
    """One of the manifest's files[] of `entry`, with its role: a companion by its role (or, without one, by not
    being a model or weights file), the model file among the others by its suffix."""
    path = PurePosixPath(record["path"])
    folder = folder_name(entry)
    if path.parts[:1] != (folder,) or ".." in path.parts:
        raise OutputDirError(f"{entry['target']}: {MANIFEST} lists {record['path']}, outside its folder {folder}/")
    rel = path.relative_to(folder)
    role = record.get("role")
    if role in (None, "model", "weights"):  # the model's own files ("model" covers weights too) or an older build's
        role = ("model" if rel.name.endswith(model_suffix) else
                "weights" if role or rel.name.endswith(weights_suffixes) else "companion")
    return ArtifactFile(rel, record["sha256"], role)


def format_of(entry: dict[str, Any]) -> str:
    return entry.get("format") or entry["target"].split(":")[0]


def folder_name(entry: dict[str, Any]) -> str:
    return entry["target"].replace(":", "-")


def passed(entry: dict[str, Any]) -> bool:
    return not entry.get("error") and bool((entry.get("validation") or {}).get("passed"))


def built_entry(by_target: dict[str, dict[str, Any]], name: str, out: Path) -> dict[str, Any]:
    entry = by_target.get(name)
    if entry is None:
        raise UsageError(f"{name}: not built in {out}; its {MANIFEST} lists {', '.join(by_target) or 'nothing'}")
    return entry


def require_passed(entry: dict[str, Any]) -> dict[str, Any]:
    if not passed(entry):
        reasons = [entry.get("error"), *((entry.get("validation") or {}).get("failures") or [])]
        why = next((r.strip().splitlines()[0] for r in reasons if r and r.strip()), "it did not pass validation")
        raise UsageError(f"{entry['target']}: failed in the build ({why}); only validated artifacts are packaged")
    return entry


def check_destination(dest: Path, marker: str, key: str, what: str) -> None:
    """DEST may be missing, empty, or hold only what an earlier package of the same kind wrote (its `marker` file
    lists those names under `key`). Creates nothing."""
    if dest.exists() and not dest.is_dir():
        raise OutputDirError(f"{dest}: exists and is not a directory")
    names = {p.name for p in dest.iterdir()} if dest.is_dir() else set()
    ours = marked_names(dest, marker, key)
    if names and (ours is None or not names <= ours | {marker}):
        raise OutputDirError(f"{dest}: not empty and not {what} written by distilforge alone; "
                             "choose another --out or empty it")


def marked_names(dest: Path, marker: str, key: str) -> set[str] | None:
    """The names an earlier package wrote into DEST; None when it wrote none of DEST."""
    try:
        return set(json.loads((dest / marker).read_text(encoding="utf-8"))[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """A fresh folder beside DEST to write into, renamed onto DEST when the block ends; on an error it is removed,
    with any parent folders creating it made, and DEST is left as it was."""
    created = first_missing(dest.parent)
    staging = staging_dir(dest.parent, dest.name)
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700, and a server may run as another user
        yield staging
        move_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def copy_checked(src: Path, dst: Path, sha256: str) -> None:
    """Copy `src` to `dst`, hashing the bytes as they are copied: they must be the ones the manifest lists."""
    _check_present(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with src.open("rb") as source, dst.open("wb") as copy:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
            copy.write(chunk)
    _check_digest(src, digest.hexdigest(), sha256)


def read_checked(src: Path, sha256: str) -> bytes:
    """The bytes of `src`, which must be the ones the manifest lists."""
    _check_present(src)
    data = src.read_bytes()
    _check_digest(src, hashlib.sha256(data).hexdigest(), sha256)
    return data


def _check_present(src: Path) -> None:
    if not src.is_file():
        raise OutputDirError(f"{src}: missing, though {MANIFEST} lists it")


def _check_digest(src: Path, found: str, expected: str) -> None:
    if found != expected:
        raise OutputDirError(f"{src}: changed since the build (sha256 differs from {MANIFEST}); nothing was written")
