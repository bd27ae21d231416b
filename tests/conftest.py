import os
import shutil
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")  # transformers would import JAX where Flax is installed
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# builds started by tests take one target at a time unless a test says --jobs: pytest-xdist keeps both cores busy
os.environ.setdefault("DISTILFORGE_JOBS", "1")
sys.path.insert(0, str(Path(__file__).parent))

from tiny import TINY_MODELS, make_checkpoint  # noqa: E402


def _shared_root(tmp_path_factory) -> Path:
    """A folder every pytest-xdist worker of this session sees (each worker's basetemp is popen-gwN inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_session(tmp_path_factory, name: str, make, *, wait: bool = True) -> Path | None:
    """`make(folder)` once per session across the xdist workers (the first to come makes it, under a file lock;
    the others wait and read it): folder is shared/<name>, made only if `make` returned. With wait=False, None
    at once when another worker is making it."""
    from filelock import FileLock, Timeout

    folder = _shared_root(tmp_path_factory) / name
    done = folder.with_name(f"{name}.done")
    if done.exists():
        return folder
    lock = FileLock(str(folder) + ".lock")
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    try:
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            make(folder)
            done.touch()
    finally:
        lock.release()
    return folder


def made_in_session(tmp_path_factory, name: str) -> bool:
    return (_shared_root(tmp_path_factory) / f"{name}.done").exists()


TINY_LAYERS = 1  # the session's tiny heads (tiny_checkpoints); make_checkpoint's own default is two


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Every tiny head, built once per session (for every xdist worker), with one encoder layer: every head x
    target is built and validated on these, and the exporters' cost grows per layer (ExecuTorch's lowering most:
    a head's 18 targets took 113 s with two layers, 81 s with one). Depth is covered where it matters: the layer
    groups' tests (test_sensitivity, test_ladder, ...) make two-layer models, and the default model (six) is
    built to every target end to end."""
    root = once_per_session(tmp_path_factory, "tiny-heads",
                            lambda folder: [make_checkpoint(folder, t, n_layers=TINY_LAYERS) for t in TINY_MODELS])
    return {t.key: root / t.key for t in TINY_MODELS}


@pytest.fixture(scope="session")
def default_checkpoint():
    """The built-in default model (built once per cache; slow the first time)."""
    from distilforge.default_model import ensure_default_checkpoint

    return ensure_default_checkpoint()


# Tiny random models have near-tied logits (a few 1e-3 apart) and activation ranges unlike any
# trained model, so INT8 is held only to "runs and stays close": agreement >= 50 %, cosine >= 0.85.
# The real INT8 rules (DESIGN.md) are checked on the default model by the slow end-to-end tests.
TINY_TOLERANCES: list[str] = ["int8.min_agreement=0.5", "int8.min_cosine=0.85"]


def installed_targets() -> set[str]:
    from distilforge.targets import TARGETS

    return {name for name, t in TARGETS.items() if t.installed()}


# ExecuTorch lowering takes ~50 s a target even on a tiny model. Its program for a multi-label or regression
# sequence head is the single-label one's graph (only the validation's metric differs), so those two variants
# skip it; the six heads are all covered.
SAME_GRAPH_AS_SEQ_SINGLE = {"seq-multi", "seq-regression"}


def targets_for(key: str) -> list[str]:
    """The targets `built(key)` builds: every installed one, less ExecuTorch on SAME_GRAPH_AS_SEQ_SINGLE."""
    skip = {t for t in installed_targets() if t.startswith("executorch:")} if key in SAME_GRAPH_AS_SEQ_SINGLE else set()
    return sorted(installed_targets() - skip)


# the tiny heads some collected test reads with built(key), costliest first (set at collection, the same list in
# every xdist worker: each collects the whole session)
BUILDS_WANTED: list[str] = []


@pytest.hookimpl(trylast=True)  # after -k/-m deselection, and after pytest-xdist's own hook
def pytest_collection_modifyitems(session, config, items):
    import inspect
    import re

    _mark_xdist_groups(config, items)

    keys = {t.key for t in TINY_MODELS}
    wanted = set()
    for item in items:  # built("qa"), _copy(built, "qa", ...), or a parameter
        if "built" not in getattr(item, "fixturenames", ()):
            continue
        wanted |= set(re.findall(r'\bbuilt\b[^"\n]*"([\w-]+)"', inspect.getsource(item.obj))) & keys
        for value in getattr(getattr(item, "callspec", None), "params", {}).values():
            key = getattr(value, "key", value)  # a TinyModel parameter, or a head's key
            if isinstance(key, str) and key in keys:
                wanted.add(key)
    BUILDS_WANTED[:] = sorted(wanted, key=lambda k: (k in SAME_GRAPH_AS_SEQ_SINGLE, k))


def _mark_xdist_groups(config, items) -> None:
    """pytest-xdist's --dist loadgroup sends the tests of one xdist_group to one worker by the "@group" suffix its
    own hook gives each test id, but it sets `item._nodeid`, which pytest 9.2 no longer reads (ids come from
    `item._id`): without this every grouped test was scheduled alone (measured: test_sentence.py's module build made
    on both workers). Same suffix, set where pytest 9.2 reads it."""
    if not getattr(config.option, "loadgroup", False):  # no xdist (e.g. -p no:cacheprovider), or another --dist
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and not item.nodeid.endswith("@" + "_".join(names)):
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(scope="session")
def built(tiny_checkpoints, tmp_path_factory):
    """head key -> BuildResult, built lazily once per session (across the xdist workers) with `targets_for(key)`
    (as `distilforge build` does with no --targets); shared by the tests of targets, loaders and predict. Tests
    read it and copy it before changing anything.

    A worker that needs a head another worker is building builds another head some test wants meanwhile (the
    costliest not yet taken) instead of waiting: every head is then built once, on whichever core is free."""
    from distilforge.options import BuildOptions
    from distilforge.pipeline import build
    from distilforge.validate.tolerances import parse_overrides

    cache = {}

    def make(key, out):
        options = BuildOptions(tolerances=parse_overrides(TINY_TOLERANCES))
        build(tiny_checkpoints[key], out, targets=targets_for(key), options=options, force=True, keep_going=True)

    def claim(key, wait):
        return once_per_session(tmp_path_factory, f"built-{key}", lambda out: make(key, out), wait=wait)

    def get(key):
        if key not in cache:
            folder = claim(key, wait=False)
            while folder is None:
                others = [k for k in BUILDS_WANTED if k != key and not made_in_session(tmp_path_factory, f"built-{k}")]
                helped = any(claim(k, wait=False) is not None for k in others)
                folder = claim(key, wait=not helped)
            cache[key] = _result(folder)
        return cache[key]

    return get


def _result(out: Path):
    """The BuildResult of the build in `out`, read back from its manifest."""
    import json

    from distilforge.artifacts.manifest import ArtifactEntry
    from distilforge.pipeline import BuildResult

    manifest = json.loads((out / "manifest.json").read_text())
    return BuildResult(out=out, manifest=manifest, entries=[ArtifactEntry.from_dict(a) for a in manifest["artifacts"]])


@pytest.fixture(scope="session")
def foreign_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """framework ("tensorflow", "flax") -> a folder of the tiny heads that framework wrote, with what it says about
    them (tests/foreign.py). Both are made once per session, side by side, each in its own process (TensorFlow and
    JAX stay out of this one); together about a minute on 2 cores."""
    import importlib.util
    import subprocess

    from foreign import FRAMEWORKS, environment

    missing = [m for m in ("tensorflow", "tf_keras", "flax") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the TF/Flax fixtures need the 'fixtures' extra "
                    "(make install)")
    script = Path(__file__).parent / "foreign.py"

    def make(root):
        runs = {fw: subprocess.Popen([sys.executable, str(script), fw, str(root / fw)], env=environment(fw),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for fw in FRAMEWORKS}
        for fw, run in runs.items():
            output, _ = run.communicate(timeout=1200)
            assert run.returncode == 0, f"tests/foreign.py {fw} failed:\n{output[-4000:]}"

    root = once_per_session(tmp_path_factory, "foreign", make)
    return {fw: root / fw for fw in FRAMEWORKS}


# What a session writes at its peak: pytest's folders about 1.0 GB (measured, docs/development.md "Disk"), the
# default model's cache 0.5 GB. The disk may be shared (CI's once filled up, and the run died writing its log).
DISK_NEEDED_GB = 1.5


def _free_gb(folder: Path) -> float:
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free / 2**30


def _disk_folders() -> dict[str, Path]:
    import tempfile

    from distilforge.default_model import cache_root

    return {"temporary files": Path(tempfile.gettempdir()), "the default model's cache": cache_root()}


def pytest_report_header(config):
    return "disk free: " + ", ".join(f"{_free_gb(f):.1f} GB for {what} ({f})" for what, f in _disk_folders().items())


def pytest_sessionstart(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # the controller checks, once
    for what, folder in _disk_folders().items():
        if (free := _free_gb(folder)) < DISK_NEEDED_GB:
            pytest.exit(f"{folder}: {free:.1f} GB free for {what}; the tests need about "
                        f"{DISK_NEEDED_GB} GB: free some space and rerun", returncode=1)


TIMELINE_VARIABLE = "DISTILFORGE_TEST_TIMELINE"  # a file: each test's worker, start and end (seconds since epoch)


def pytest_runtest_logstart(nodeid, location):
    if os.environ.get(TIMELINE_VARIABLE):
        _timeline_started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid, location):
    path = os.environ.get(TIMELINE_VARIABLE)
    if path and nodeid in _timeline_started:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{worker}\t{_timeline_started.pop(nodeid):.1f}\t{time.time():.1f}\t{nodeid}\n")


_timeline_started: dict[str, float] = {}
