"""`distilforge validate DIR`: a finished build checked again: files, card and figures, re-measured here or on an
emulated CPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from distilforge.artifacts.folder import Loader, card_problems, companion_problems
from distilforge.artifacts.manifest import ArtifactEntry, host_cpu, manifest_problems, read_manifest, verify_files
from distilforge.artifacts.records import ExportedArtifact, Tolerance
from distilforge.errors import UsageError
from distilforge.options import BuildOptions
from distilforge.pipeline.as_used import as_used_problems
from distilforge.pipeline.judge import validate_or_fail
from distilforge.pipeline.source import Source, checkpoint_drift, eager_runner, eval_drift, source_for
from distilforge.targets import FORMATS, arm64_formats, get_target
from distilforge.validate import Reference
from distilforge.validate.machine import cpu_differences, outside_recipe
from distilforge.validate.recorded import figure_mismatches


@dataclass
class CheckResult:
    """What `validate_dir` found: problems with files or checkpoint, and each artifact's fresh result."""

    out: Path
    problems: list[str]
    entries: list[ArtifactEntry]
    notes: list[str] = field(default_factory=list)  # how this CPU differs from the build's, what moved with it
    # each emulated CPU asked for ("arm64:cortex-a76") -> the artifacts judged there
    elsewhere: dict[str, list[ArtifactEntry]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        everywhere = [*self.entries, *(e for entries in self.elsewhere.values() for e in entries)]
        return not self.problems and all(e.passed for e in everywhere)

    @property
    def failures(self) -> list[str]:
        lines = list(self.problems)
        for cpu, entries in [("", self.entries), *self.elsewhere.items()]:
            for e in entries:
                if cpu and e.error:  # the host's are in `problems` already
                    lines.append(e.error)
                elif e.validation and not e.validation.passed:
                    lines += [f"[{cpu}] {line}" if cpu else line for line in e.validation.failures]
        return lines


def validate_dir(out: str | Path, *, threads: int | None = None, cpus: tuple[str, ...] = ("host",),
                 targets: list[str] | None = None, progress: Callable[[str], None] | None = None) -> CheckResult:
    """Verify every file's hash and the checkpoint's, then re-run each artifact's checks on each of `cpus`: "host"
    (this machine) and emulated ones ("arm64:cortex-a76", validate/arm64/). Where an artifact runs on another
    CPU than its figures were recorded on, say how the CPU differs (`notes`) and judge the figures measured there
    by the pass rules alone. `targets`: re-run only these (every file is checked all the same)."""
    out = Path(out)
    manifest = read_manifest(out)
    _known_targets(out, manifest, targets)
    problems = manifest_problems(manifest) + [p for a in manifest["artifacts"] for p in verify_files(out, a)]
    problems += [p for a in manifest["artifacts"]
                 for p in card_problems(out, a, manifest["checkpoint"], _loader(a.get("format")))]
    source = source_for(manifest)
    problems += checkpoint_drift(manifest["checkpoint"], source)
    problems += [p for a in manifest["artifacts"] for p in companion_problems(out, a, source.ckpt.info.model_dir)]
    problems += eval_drift(manifest["settings"].get("eval"), source)
    options = BuildOptions(threads=threads or manifest["settings"]["threads"], seed=manifest["settings"]["seed"])
    reference = Reference(eager_runner(source.ckpt, options.threads))
    entries, notes = [], []
    elsewhere = {cpu: _validate_emulated(cpu, manifest, source, out, options, reference, notes, progress, targets)
                 for cpu in cpus if cpu != "host"}
    for record in _runnable(manifest, out, targets) if "host" in cpus else []:
        target = get_target(record["target"])
        artifact = ExportedArtifact.from_dict(record)
        tolerance = Tolerance(**record["validation"]["tolerance"])
        entry = validate_or_fail(target, artifact, source, out, options, reference, tolerance,
                                 as_used=partial(as_used_problems, manifest, record, out, source.ckpt.info.model_dir,
                                                 texts=source.texts, head=source.ckpt.head))
        if entry.error:
            problems.append(entry.error)
            continue
        entry.ladder = record.get("ladder")
        differences = cpu_differences(host_cpu(record.get("validated_on")) or manifest.get("machine"),
                                      entry.validated_on)
        same_threads = options.threads == manifest["settings"]["threads"]
        moved = figure_mismatches(target.name, record["validation"], entry.validation,
                                  same_threads=same_threads and not differences)
        if differences:  # another CPU: its kernels move the figures, and the pass rules decide
            notes += differences + list(filter(None, [outside_recipe(record, entry.validated_on["cpu_class"])]))
            notes += [f"{line} (measured on another CPU)" for line in moved if "passed=" not in line]
        else:
            problems += moved
        entries.append(entry)
    return CheckResult(out=out, problems=problems, entries=entries, notes=list(dict.fromkeys(notes)),
                       elsewhere=elsewhere)


def _runnable(manifest: dict[str, Any], out: Path, targets: list[str] | None) -> list[dict[str, Any]]:
    """The entries asked for that built and whose files are there (changed files are still run: the figures say
    how wrong they are)."""
    return [r for r in manifest["artifacts"] if (targets is None or r["target"] in targets)
            and not r.get("error") and all((out / f["path"]).is_file() for f in r["files"])]


def _known_targets(out: Path, manifest: dict[str, Any], targets: list[str] | None) -> None:
    built = [a["target"] for a in manifest["artifacts"]]
    unknown = [t for t in targets or [] if t not in built]
    if unknown:
        raise UsageError(f"{out / 'manifest.json'}: has no artifact {unknown[0]} (--targets); it holds "
                         f"{', '.join(built)}")


def _validate_emulated(cpu: str, manifest: dict[str, Any], source: Source, out: Path, options: BuildOptions,
                       reference: Reference, notes: list[str], progress: Callable[[str], None] | None,
                       targets: list[str] | None) -> list[ArtifactEntry]:
    """Each artifact whose runtime runs on `cpu` (an emulated "arm64:MODEL"), judged by its recorded rule there."""
    from distilforge.validate import arm64

    entries = []
    for record in _runnable(manifest, out, targets):
        target = get_target(record["target"])
        if not target.spec.arm64.runnable:
            notes.append(f"{target.name}: not validated on {cpu}: {target.spec.arm64.why_not}")
            continue
        if progress:
            progress(f"validating {target.name} on {cpu} (emulated)")
        launcher = arm64.launcher(cpu, arm64_formats(), progress=progress)
        entry = validate_or_fail(target, ExportedArtifact.from_dict(record), source, out, options, reference,
                                  Tolerance(**record["validation"]["tolerance"]), launcher=launcher)
        if entry.error:
            entry.error = f"[{cpu}] {entry.error}"
        entry.ladder = record.get("ladder")
        entries.append(entry)
    return entries


def _loader(fmt: str | None) -> Loader | None:
    """The format's loader, None for a format this version does not know (its card says none)."""
    spec = FORMATS.get(fmt or "")
    return spec.loader if spec else None
