"""The emulated ARM64 runtime's cache, ${XDG_CACHE_HOME:-~/.cache}/distilforge/arm64/: keys, reuse of a complete
set-up, `.tmp-` directories built beside their final place and renamed into it, the sweep of abandoned ones, the
lock a second process waits on, and the directory that holds the distilforge package for the child."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from distilforge.artifacts.layout import process_alive
from distilforge.validate.arm64.aarch64_wheels import _Pin
from distilforge.validate.arm64.errors import Arm64RuntimeError
from distilforge.validate.arm64.recipe import RECIPE


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "distilforge" / "arm64"


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _reusable(root: Path, key: str, base: str, pins: Sequence[_Pin]) -> Path | None:
    """The complete set-up for `key`, else one for more formats whose pins for these agree."""
    if (root / key / "ok.json").is_file():
        return root / key
    wanted = {_digest(p.line()) for p in pins}
    for ok in sorted(root.glob("*/ok.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            record = json.loads(ok.read_text())
            if record.get("recipe") == RECIPE and record.get("base") == base and wanted <= set(record["pins"]):
                return ok.parent
    return None


@contextlib.contextmanager
def _building(root: Path, name: str) -> Iterator[Path]:
    """A fresh `.tmp-` directory beside `root/name`, removed on any failure (and on success once published)."""
    tmp = root / f".tmp-{name}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Rename `tmp` (complete, with its ok.json) to `final`. If another process got there first, keep theirs."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if (final / "ok.json").is_file():
            return  # the loser's copy is removed by _building
    stale = final.with_name(f".tmp-stale-{final.name}-{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(final, stale)  # an incomplete leftover without ok.json (someone deleted it by hand)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError as e:
        if not (final / "ok.json").is_file():
            raise Arm64RuntimeError(f"arm64 runtime: could not move the set-up into {final}: {e}") from None


def _sweep(root: Path) -> None:
    """Remove the `.tmp-` directories of set-ups on this host whose process is gone, or a day old."""
    host = socket.gethostname()
    for tmp in root.glob(".tmp-*"):
        found = re.search(rf"-{re.escape(host)}-(\d+)-[0-9a-f]+$", tmp.name)
        with contextlib.suppress(OSError):
            old = time.time() - tmp.stat().st_mtime > 86400
            if old or tmp.name.startswith(".tmp-stale-") or (found and not process_alive(int(found.group(1)))):
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path, say: Callable[[str], None]) -> Iterator[None]:
    """An advisory lock, so a second process waits for the first's set-up instead of doing it again. Where the
    filesystem has no locks, both set up and the atomic rename keeps one."""
    try:
        import fcntl

        handle = open(path, "a+")  # noqa: SIM115 - held until the context ends
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("arm64 runtime: waiting for another process that is setting it up")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        handle.close()


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _package_root() -> Path:
    """A directory whose only entry the child needs is the distilforge package: the checkout for an editable
    install; for an installed one (its parent is site-packages, full of x86 packages) a directory in the cache
    holding a link to the package alone, keyed by the package's path."""
    package = Path(__file__).resolve().parents[2]  # distilforge/
    parent = package.parent
    if parent.name not in ("site-packages", "dist-packages"):
        return parent
    holder = _cache_root() / f"package-{hashlib.sha256(str(package).encode()).hexdigest()[:16]}"
    link = holder / "distilforge"
    if not link.is_symlink():
        holder.mkdir(parents=True, exist_ok=True)
        temporary = holder / f".distilforge-{os.getpid()}-{secrets.token_hex(4)}"
        temporary.symlink_to(package)
        os.replace(temporary, link)
    return holder
