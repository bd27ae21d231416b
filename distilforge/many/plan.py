"""The plan file of `build-many`: which checkpoints, which targets, with what options and data (TOML).

    targets = ["onnx:fp32", "onnx:int8-dynamic"]   # every checkpoint's (default: every installed target)
    threads = 1                                    # per task: the CPUs each Ray task asks for (default 2)

    [options]                                      # build options, as `distilforge build` takes them
    tolerance = ["int8.min_cosine=0.98"]
    tflite_shapes = "1x128"
    executorch_max_shape = "1x256"
    int8_cpu = "portable"
    calibration_samples = 128
    validate_on = "arm64:cortex-a76"

    [[checkpoint]]
    path = "models/customer-a"                     # relative paths are from the plan file's folder
    name = "customer-a"                            # ROOT/<name> (default: the folder's name)
    eval = "data/customer-a.jsonl"                 # optional, as build --eval
    calibration = "data/customer-a.txt"            # optional, as build --calibration
    targets = ["onnx:fp32"]                        # optional, this checkpoint's own list
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilforge.errors import DistilforgeError, UsageError
from distilforge.options import BuildOptions
from distilforge.targets import resolve_targets
from distilforge.user_options import PLAN_KEYS, options_from

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOP_KEYS = {"targets", "threads", "options", "checkpoint"}
OPTION_KEYS = PLAN_KEYS
CHECKPOINT_KEYS = {"path", "name", "eval", "calibration", "targets"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PlanError(UsageError):
    """A plan file that cannot be run. Exit code 2."""


@dataclass(frozen=True)
class CheckpointPlan:
    name: str
    path: Path
    targets: tuple[str, ...]  # resolved: every name is registered and installed here
    eval_file: Path | None = None
    calibration_file: Path | None = None


@dataclass(frozen=True)
class Plan:
    path: Path
    checkpoints: tuple[CheckpointPlan, ...]
    threads: int
    options: dict[str, Any] = field(default_factory=dict)  # as read, for the tasks (BuildOptions is built there)

    def build_options(self, checkpoint: CheckpointPlan) -> BuildOptions:
        return build_options(self.options, self.threads, checkpoint.calibration_file)

    @property
    def tasks(self) -> list[tuple[CheckpointPlan, str]]:
        return [(c, t) for c in self.checkpoints for t in c.targets]


def build_options(options: dict[str, Any], threads: int, calibration_file: Path | None) -> BuildOptions:
    """The plan's [options], parsed as `distilforge build` parses its flags (user_options.py)."""
    return options_from(options, by="key", threads=threads, calibration_file=calibration_file)


def read_plan(path: str | Path) -> Plan:
    """Read and check the whole plan (every file it names exists, every option parses) before any task runs.
    Checkpoints are checked by the tasks: a bad one fails its own tasks, not the plan."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no such plan file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PlanError(f"{path}: not a valid TOML file ({e})") from None
    _unknown(path, "", data, TOP_KEYS)
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise PlanError(f"{path}: [options] must be a table")
    _unknown(path, "options.", options, OPTION_KEYS)
    threads = data.get("threads", 2)
    if not isinstance(threads, int) or threads < 1:
        raise PlanError(f"{path}: threads = {threads!r}: give a whole number of CPUs per task, at least 1")
    try:
        build_options(options, threads, None)
    except DistilforgeError as e:
        raise PlanError(f"{path}: [options]: {e}") from None
    entries = data.get("checkpoint")
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{path}: no [[checkpoint]] entries; add one per checkpoint, each with a path")
    default_targets = _targets(path, "targets", data.get("targets"))
    checkpoints = [_checkpoint(path, i, e, default_targets) for i, e in enumerate(entries)]
    names = [c.name for c in checkpoints]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise PlanError(f"{path}: two checkpoints would be written to ROOT/{duplicate}; give them distinct names")
    return Plan(path=path, checkpoints=tuple(checkpoints), threads=threads, options=options)


def _unknown(path: Path, prefix: str, table: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(table) - known)
    if extra:
        raise PlanError(f"{path}: unknown key {prefix}{extra[0]!r}; known: {', '.join(sorted(known))}")


def _targets(path: Path, where: str, names: Any) -> tuple[str, ...]:
    if names is None:
        return tuple(t.name for t in resolve_targets(None))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise PlanError(f"{path}: {where} must be a list of target names, e.g. [\"onnx:fp32\"]")
    try:
        return tuple(t.name for t in resolve_targets(names))
    except DistilforgeError as e:
        raise PlanError(f"{path}: {where}: {e}") from None


def _checkpoint(path: Path, index: int, entry: Any, default_targets: tuple[str, ...]) -> CheckpointPlan:
    where = f"checkpoint[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise PlanError(f"{path}: {where} needs a path = \"...\" to a checkpoint folder")
    _unknown(path, f"{where}.", entry, CHECKPOINT_KEYS)
    folder = (path.parent / entry["path"]).resolve()
    name = entry.get("name", folder.name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise PlanError(f"{path}: {where}.name {name!r}: use letters, digits, '.', '_' or '-' (a folder of ROOT)")
    files = {}
    for key in ("eval", "calibration"):
        if key in entry:
            file = (path.parent / str(entry[key])).resolve()
            if not file.is_file():
                raise PlanError(f"{path}: {where}.{key}: {file}: no such file")
            files[key] = file
    targets = _targets(path, f"{where}.targets", entry["targets"]) if "targets" in entry else default_targets
    return CheckpointPlan(name=name, path=folder, targets=targets, eval_file=files.get("eval"),
                          calibration_file=files.get("calibration"))
