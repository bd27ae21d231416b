"""requirements.lock: in step with pyproject.toml, and recorded in every manifest."""

import hashlib
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from distilforge.artifacts.environment import LOCK_FILE, lock_record

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's; the lock is for CPython 3.11")
ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / LOCK_FILE


def _pins() -> dict[str, str]:
    text = LOCK.read_text()
    return {re.sub(r"[-_.]+", "-", name).lower(): v
            for name, v in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", text, re.MULTILINE)}


def _declared() -> list[Requirement]:
    """Every requirement of `.[all,dev]`: the core dependencies and each extra's (self-references left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += [x for x in extra if not x.startswith("distilforge[")]
    return [Requirement(x) for x in lines]


def test_the_lock_pins_every_declared_dependency_within_its_range():
    pins = _pins()
    for req in _declared():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is in pyproject.toml but not in {LOCK_FILE}: run `make lock`"
        pinned = Version(pins[name])
        assert req.specifier.contains(pinned, prereleases=True) or \
            req.specifier.contains(Version(pinned.public), prereleases=True), \
            f"{LOCK_FILE} pins {req.name}=={pinned}, outside pyproject.toml's {req.specifier}: run `make lock`"


def test_every_pin_has_a_hash():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[2])
    pinned = [b for b in blocks if "==" in b.split("\n", 1)[0]]
    assert len(pinned) > 50
    for block in pinned:
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"


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
