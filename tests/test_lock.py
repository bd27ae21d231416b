"""The locks: requirements.lock (what the product runs with, `make demo`) and requirements-dev.lock (that plus the
test-only packages, `make test`), in step with pyproject.toml and with each other; the runtime one recorded in
every manifest."""

import hashlib
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from distilforge.artifacts.environment import LOCK_FILE, lock_record

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's; the lock is for CPython 3.11")
ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / LOCK_FILE
DEV_LOCK_FILE = "requirements-dev.lock"
DEV_LOCK = ROOT / DEV_LOCK_FILE
RUNTIME_EXTRAS = ("all",)  # what `make lock` compiles each lock from (`--extra ...`)
DEV_EXTRAS = ("all", "dev")


class Pin(NamedTuple):
    version: str
    hashes: frozenset[str]
    via: tuple[str, ...]  # uv's annotations: what requires it ("distilforge (pyproject.toml)", a package, "-c ...")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock: Path) -> dict[str, Pin]:
    text = lock.read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", block)
        if head:
            via = re.findall(r"^[ \t]+#[ \t]+(?:via[ \t]+)?(\S.*?)[ \t]*$", block, re.MULTILINE)
            pins[_canonical(head[1])] = Pin(head[2], frozenset(re.findall(r"--hash=(sha256:[0-9a-f]{64})", block)),
                                            tuple(v for v in via if v != "via"))
    return pins


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _extras(names: tuple[str, ...]) -> list[str]:
    """The extras `names` stand for, their `distilforge[...]` self-references followed."""
    optional, seen, todo = _project()["optional-dependencies"], [], list(names)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        for line in optional[name]:
            if line.startswith("distilforge["):
                todo += [x.strip() for x in line[len("distilforge["):].rstrip("]").split(",")]
    return seen


def _declared(extras: tuple[str, ...]) -> list[Requirement]:
    """Every requirement of `.[extras]`: the core dependencies and each extra's (self-references left out)."""
    project = _project()
    lines = list(project["dependencies"])
    for extra in _extras(extras):
        lines += [x for x in project["optional-dependencies"][extra] if not x.startswith("distilforge[")]
    return [Requirement(x) for x in lines]


@pytest.mark.parametrize(("lock", "extras"), [(LOCK, RUNTIME_EXTRAS), (DEV_LOCK, DEV_EXTRAS)],
                         ids=[LOCK_FILE, DEV_LOCK_FILE])
def test_the_lock_pins_every_declared_dependency_within_its_range(lock, extras):
    pins = _pins(lock)
    for req in _declared(extras):
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11", "python_full_version":
                                                                   "3.11.0", "sys_platform": "linux"}):
            continue  # e.g. tomli, for Python < 3.11 only: the locks are for 3.11
        name = _canonical(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in {lock.name}: run `make lock`"
        pinned = Version(pins[name].version)
        assert req.specifier.contains(pinned, prereleases=True) or \
            req.specifier.contains(Version(pinned.public), prereleases=True), \
            f"{lock.name} pins {req.name}=={pinned}, outside pyproject.toml's {req.specifier}: run `make lock`"


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=[LOCK_FILE, DEV_LOCK_FILE])
def test_every_pin_has_a_hash(lock):
    pins = _pins(lock)
    assert len(pins) > 50
    for name, pin in pins.items():
        assert pin.hashes, f"no hash for {name}=={pin.version} in {lock.name}"


def test_the_runtime_lock_is_a_subset_of_the_dev_lock():
    """`make demo`'s packages are `make test`'s, same versions and same hashes: what the tests ran is what runs."""
    runtime, dev = _pins(LOCK), _pins(DEV_LOCK)
    for name, pin in runtime.items():
        assert name in dev, f"{name} is in {LOCK_FILE} but not in {DEV_LOCK_FILE}: run `make lock`"
        assert (pin.version, pin.hashes) == (dev[name].version, dev[name].hashes), \
            f"{name}: {LOCK_FILE} pins {pin.version}, {DEV_LOCK_FILE} {dev[name].version} (or other hashes): " \
            "run `make lock`"


def test_the_runtime_lock_holds_no_test_only_requirement_unless_the_runtime_needs_it():
    """The dev extras' own requirements (TensorFlow, Flax, playwright, pytest, ...) are in requirements.lock only
    where a runtime package requires them (hypothesis: executorch), never because pyproject.toml's dev extras do."""
    runtime_names = {_canonical(r.name) for r in _declared(RUNTIME_EXTRAS)}
    runtime = _pins(LOCK)
    for req in _declared(DEV_EXTRAS):
        name = _canonical(req.name)
        if name in runtime_names or name not in runtime:
            continue
        via = runtime[name].via
        assert not any(v.startswith("distilforge") for v in via) and any(v in runtime for v in via), \
            f"{name} (a test-only requirement) is in {LOCK_FILE} by itself: `make lock` compiles it from .[all] only"


def test_lock_record_says_whether_the_environment_is_as_locked(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"numpy=={version('numpy')} \\\n    --hash=sha256:00\n")
    record = lock_record(lock)
    assert record["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert record["installed_as_locked"] is True and record["differs"] == []

    lock.write_text(f"numpy=={version('numpy')}\nrich==0.0.1\nno-such-package-here==1.0\n")
    record = lock_record(lock)
    assert record["installed_as_locked"] is False
    assert record["differs"] == ["no-such-package-here==1.0 (installed: none)",
                                 f"rich==0.0.1 (installed: {version('rich')})"]


def test_no_lock_file_records_none(tmp_path):
    assert lock_record(tmp_path / "requirements.lock") is None


def test_the_manifest_records_the_repos_lock(tiny_checkpoints, tmp_path):
    from distilforge.pipeline import build

    result = build(tiny_checkpoints["seq-single"], tmp_path / "out", targets=["torchscript:fp32"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["lock"]["sha256"] == hashlib.sha256(LOCK.read_bytes()).hexdigest()
    assert list(manifest).index("lock") == list(manifest).index("tools") + 1


def test_lock_record_does_not_depend_on_what_was_imported_before():
    """setuptools puts its _vendor folder (old packaging, platformdirs, tomli) on sys.path when imported: that must
    not change what the manifest says is installed (a build-many task and a sequential build must agree)."""
    code = ("from distilforge.artifacts.environment import lock_record; a = lock_record(); import setuptools; "
            "import sys; assert any('_vendor' in p for p in sys.path), sys.path; b = lock_record(); "
            "assert a == b, (a['differs'], b['differs'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
