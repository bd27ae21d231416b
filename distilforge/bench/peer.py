"""The peer: Optimum's exporter and ONNX Runtime quantizer on the same checkpoint, as bench rows.

`build_peer` runs, on the checkpoint the manifest was built from (refused if any of its files changed since):

    optimum-cli export onnx --model CHECKPOINT --task TASK DIR/peer/optimum-fp32
    optimum-cli onnxruntime quantize --onnx_model DIR/peer/optimum-fp32 FLAG -o DIR/peer/optimum-int8

with FLAG the quantization config that matches this CPU (`optimum_flag`). Both commands write into a staging
folder that is renamed to DIR/peer once they are done. The two models are not artifacts of ours: the manifest
does not list them. They are validated by our validator (the same Reference, cases and pass rules as our ONNX
targets: the tolerances the manifest records) and timed by bench's workers through our ONNX runner, in the same
interleaved rounds as our artifacts. Without the `peer` extra, or when a step fails, `PeerBuild.note` says why
in one line and bench goes on without peer rows.

benchmarks/onnx_int8_speed.py uses the same CLI discovery, flag choice and commands.

The machinery that is not Optimum's (running a command, adopting a head start's folder, validating a peer's
models, comparing ours with a peer's) serves every peer: a `PeerTool` says what differs (its name, folder in DIR,
format and runner). peer_openvino.py is the second peer, optimum-intel.
"""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilforge.artifacts.environment import machine_info, tool_versions
from distilforge.artifacts.layout import exclusive, move_into_place, staging_dir
from distilforge.artifacts.manifest import ArtifactEntry
from distilforge.artifacts.records import ExportedArtifact, FileRecord, TensorSpec, Tolerance
from distilforge.errors import BuildFailure, DistilforgeError, ExportError, first_line
from distilforge.options import BuildOptions

if TYPE_CHECKING:
    from distilforge.pipeline.source import Source
    from distilforge.targets import Target

PEER_DIR = "peer"
PEER_FP32, PEER_INT8 = "optimum:fp32", "optimum:int8"
PEER_RUNTIME = "ONNX Runtime (CPU), through distilforge's ONNX runner"
PEER_FORMAT = "onnx"  # what Optimum's commands write: compared with our targets of the same format
# what `pip install 'distilforge[peer]'` provides: the exporter, ORT's quantizer wrapper and the CLI
PEER_MODULES = ("optimum", "optimum.exporters.onnx", "optimum.onnxruntime")
PEER_TOOLS = ("optimum", "optimum-onnx", "onnxruntime", "transformers", "torch")
# Optimum's sentence-transformers export calls the token vectors token_embeddings (sentence-transformers' name)
PEER_OUTPUT_NAMES = {"token_embeddings": "last_hidden_state"}
NOT_INSTALLED = "peer rows skipped: the `peer` extra is not installed (pip install 'distilforge[peer]')"
SKIPPED_BY_FLAG = "peer rows skipped: --no-peer"
# Optimum's quantize flags, best first: (CPU flag that enables it, optimum-cli option)
X86_FLAGS = (("avx512_vnni", "--avx512_vnni"), ("avx512f", "--avx512"))
STEPS = ("optimum-cli export onnx", "optimum-cli onnxruntime quantize")  # what optimum_commands runs, in order

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PeerTool:
    """What tells one peer from another: its name (bench.json's `tool`), the packages whose versions are recorded,
    its folder in DIR, the format its models are (and the runner module that runs them), and how a missing row
    is reported."""

    name: str
    versions: tuple[str, ...]
    folder: str
    format: str
    runner: str  # the module whose open_runner validates and times its models
    runtime: str
    modules: tuple[str, ...]
    label: str  # who made the models, in a row's note
    skipped: str  # the start of its one-line note when it has no rows


OPTIMUM = PeerTool("optimum", PEER_TOOLS, PEER_DIR, PEER_FORMAT, "distilforge.validate.runners.onnx", PEER_RUNTIME,
                   PEER_MODULES, "Optimum", "peer rows skipped")


class PeerError(BuildFailure):
    """A peer step (Optimum's CLI, or describing what it wrote) failed; the message is one line."""


@dataclass
class PeerModel:
    """One of Optimum's models: where it is, the command that made it, and how our validator judged it."""

    target: str  # PEER_FP32 or PEER_INT8 (peer_openvino.py: its names)
    command: str
    seconds: float
    artifact: ExportedArtifact  # file paths relative to DIR, as our artifacts' are
    entry: ArtifactEntry | None = None  # after validation
    error: str | None = None  # validation could not run it
    tool: PeerTool = OPTIMUM

    @property
    def passed(self) -> bool:
        return self.error is None and self.entry is not None and self.entry.passed

    def validation_summary(self) -> dict[str, Any] | None:
        """The manifest's validation record without the per-case list."""
        if self.entry is None or self.entry.validation is None:
            return None
        return {k: v for k, v in self.entry.validation.to_dict().items() if k != "cases"}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.tool.runtime,
                "command": self.command, "seconds": round(self.seconds, 1), "bytes": self.artifact.total_bytes,
                "files": [asdict(f) for f in self.artifact.files], "validation": self.validation_summary(),
                "error": self.error}


@dataclass
class PeerBuild:
    """What the peer step made (possibly nothing), with a one-line note when rows are missing."""

    models: list[PeerModel] = field(default_factory=list)
    note: str | None = None
    flag: str | None = None
    checkpoint: str | None = None
    task: str | None = None
    beside_build: bool = False  # the commands ran while `build --bench` built our artifacts (PeerHeadStart)
    tool: PeerTool = OPTIMUM
    extra: dict[str, Any] = field(default_factory=dict)  # more keys for bench.json (optimum-intel: calibration)

    @classmethod
    def skipped(cls, note: str, tool: PeerTool = OPTIMUM) -> PeerBuild:
        return cls(note=note, tool=tool)

    def to_dict(self) -> dict[str, Any]:
        folder = f"DIR/{self.tool.folder}"
        return {"tool": self.tool.name, "versions": package_versions(self.tool.versions),
                "dir": self.tool.folder if self.models else None, "checkpoint": self.checkpoint, "task": self.task,
                "flag": self.flag, "commands": [m.command for m in self.models],
                "commands_ran_in": "a temporary folder while build --bench built our artifacts (their seconds include "
                                   f"sharing the CPU), moved to {folder}" if self.beside_build else
                                   f"a staging folder inside DIR, renamed to {folder} once all succeeded",
                "models": [m.to_dict() for m in self.models], **self.extra, "note": self.note}


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The installed versions of `names` (those installed), e.g. a peer's tools."""
    from importlib.metadata import PackageNotFoundError, version

    versions = tool_versions()
    found = {}
    for name in names:
        try:
            found[name] = versions.get(name) or version(name)
        except PackageNotFoundError:
            continue
    return found


# ------------------------------------------------------------------------------------ Optimum's CLI

def peer_installed() -> bool:
    """The `peer` extra's modules import here and its CLI is on hand."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in PEER_MODULES) and optimum_cli() is not None
    except (ImportError, ValueError):  # find_spec of a submodule imports its parent, which may be broken
        return False


def optimum_cli() -> str | None:
    """optimum-cli beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "optimum-cli"
    return str(beside) if beside.is_file() else shutil.which("optimum-cli")


def optimum_flag(flags: dict[str, bool], arch: str) -> str:
    """The `optimum-cli onnxruntime quantize` option for this CPU: its dynamic INT8 config for the best
    instruction set the CPU has (ARM64, AVX-512 VNNI, AVX-512, else AVX2)."""
    if arch.lower() in ("aarch64", "arm64"):
        return "--arm64"
    return next((option for cpu_flag, option in X86_FLAGS if flags.get(cpu_flag)), "--avx2")


def optimum_commands(cli: str, checkpoint: Path, task: str, fp32: Path, int8: Path, flag: str) -> list[list[str]]:
    """Export without `--optimize` (export --optimize O2 then quantize failed with ORT 1.32, see DESIGN.md),
    then dynamic INT8 with the CPU's config."""
    return [[cli, "export", "onnx", "--model", str(checkpoint), "--task", task, str(fp32)],
            [cli, "onnxruntime", "quantize", "--onnx_model", str(fp32), flag, "-o", str(int8)]]


def run_command(command: list[str], step: str, started: list[subprocess.Popen] | None = None) -> float:
    """Run one CLI command offline; seconds taken. A failure is a PeerError naming the step and the last line
    of its error output (the full output would drown it). `started` collects the process, so a caller in
    another thread can stop it."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "USE_TF": "0", "USE_FLAX": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise PeerError(f"{step} could not start: {e}") from None
    if started is not None:
        started.append(proc)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        lines = [x.strip() for x in (stderr.strip() or stdout).splitlines() if x.strip()]
        raise PeerError(f"{step} failed (exit {proc.returncode})"
                        + (f": {lines[-1][:300]}" if lines else ""))
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------ the peer step

def build_peer(out: Path, manifest: dict[str, Any], *, threads: int, say: Progress,
               head_start: PeerHeadStart | None = None, shared: dict[str, Any] | None = None) -> PeerBuild:
    """Export and quantize the manifest's checkpoint with Optimum into DIR/peer, then validate both models
    with our validator. Never raises for a missing extra or a failed step: the result's note says why.
    `shared`: what one peer step loaded that the next one reuses (peer_source, validate_peer)."""
    if not peer_installed():
        return PeerBuild.skipped(NOT_INSTALLED)
    source = peer_source(manifest, OPTIMUM, shared)
    if isinstance(source, PeerBuild):
        return source
    machine = machine_info(threads)
    peer = PeerBuild(flag=optimum_flag(machine["flags"], machine["arch"]), checkpoint=str(source.ckpt.info.path),
                     task=source.ckpt.head.task)
    key = optimum_key(source.ckpt.info.path, peer.task, peer.flag)
    try:
        with exclusive(out):
            peer.models = export_peer(out, OPTIMUM, key, _optimum_run(source.ckpt.info.path, peer.task, peer.flag),
                                      say, head_start)
            peer.beside_build = head_start is not None and head_start.matches(key)
    except PeerError as e:
        return PeerBuild(note=f"peer rows skipped: {e}", flag=peer.flag, checkpoint=peer.checkpoint, task=peer.task)
    validate_peer(out, peer.models, source, peer_options(manifest, threads), say, shared)
    return peer


def peer_source(manifest: dict[str, Any], tool: PeerTool, shared: dict[str, Any] | None = None) -> Source | PeerBuild:
    """The checkpoint (and validation data) the manifest was built from, or, when it is gone or changed since,
    the skipped PeerBuild saying so: a peer must run on the checkpoint our artifacts came from. Loaded and checked
    once for all peers when they share `shared`."""
    from distilforge.pipeline.source import checkpoint_drift, source_for

    if shared is not None and "source" in shared:
        return shared["source"]
    try:
        source = source_for(manifest)
    except DistilforgeError as e:
        return PeerBuild.skipped(f"{tool.skipped}: {e}", tool)
    drift = checkpoint_drift(manifest["checkpoint"], source)
    if drift:
        return PeerBuild.skipped(f"{tool.skipped}: {tool.label} must run on the checkpoint our artifacts came from, "
                                 f"and {drift[0].removeprefix('checkpoint: ')}", tool)
    if shared is not None:
        shared["source"] = source
    return source


def optimum_key(checkpoint: Path, task: str, flag: str) -> tuple[Any, ...]:
    """What Optimum's commands depend on: a head start made for another key is not adopted."""
    return OPTIMUM.name, Path(checkpoint).resolve(), task, flag


# what runs a peer's commands into a folder: (folder, progress, started processes) -> its models
PeerRun = Callable[[Path, Progress, "list[subprocess.Popen] | None"], "list[PeerModel]"]


def _optimum_run(checkpoint: Path, task: str, flag: str) -> PeerRun:
    return lambda folder, say, started: run_peer_commands(folder, checkpoint, task, flag, say, started)


def export_peer(out: Path, tool: PeerTool, key: tuple[Any, ...], run: PeerRun, say: Progress,
                head_start: PeerHeadStart | None = None) -> list[PeerModel]:
    """A peer's commands into a staging folder, renamed to DIR/<its folder> when all succeeded. A head start with
    the same key (`build --bench`) already ran them: its folder is adopted instead."""
    final = out / tool.folder
    if head_start is not None and head_start.matches(key):
        say(f"{tool.name}: waiting for the commands started beside the build")
        models = head_start.wait()
        staging = staging_dir(out, tool.folder)
        staging.rmdir()
        shutil.move(head_start.folder, staging)  # a rename on one file system, else a copy
        move_into_place(staging, final)
        return models
    staging = staging_dir(out, tool.folder).absolute()  # the recorded commands name absolute paths
    try:
        models = run(staging, say, None)
        move_into_place(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return models


def run_peer_commands(folder: Path, checkpoint: Path, task: str, flag: str, say: Progress,
                      started: list[subprocess.Popen] | None = None) -> list[PeerModel]:
    """optimum-cli export, then quantize, into `folder`/optimum-fp32 and /optimum-int8; the two models."""
    cli = optimum_cli()
    if cli is None:
        raise PeerError("optimum-cli not found")
    fp32, int8 = folder / "optimum-fp32", folder / "optimum-int8"
    commands = optimum_commands(cli, checkpoint, task, fp32, int8, flag)
    seconds = []
    for command, step in zip(commands, STEPS, strict=True):
        say(f"peer: {step}" + (f" {flag}" if step == STEPS[1] else ""))
        seconds.append(run_command(command, step, started))
    return [describe_model(folder, fp32, PEER_FP32, commands[0], seconds[0]),
            describe_model(folder, int8, PEER_INT8, commands[1], seconds[1])]


class PeerHeadStart:
    """A peer's commands started in a background thread while `build --bench` builds our artifacts, so the
    bench's peer step finds them done (nothing is timed during a build, and most of their time is imports and
    tracing on one core). The same commands on the same checkpoint (`key` says what they depend on); they write
    into a temporary folder that the peer step adopts as DIR/<the peer's folder>. Their `seconds` then include
    sharing the CPU with the build. `after`: another peer's head start to wait for first, so the peers' commands
    take one core between them, one after another."""

    def __init__(self, key: tuple[Any, ...], run: PeerRun, after: PeerHeadStart | None = None) -> None:
        self.key, self._run_commands, self._after = key, run, after
        self.folder = Path(tempfile.mkdtemp(prefix=f"distilforge-peer-{key[0]}-")).absolute()
        self._started: list[subprocess.Popen] = []
        self._cancelled = False
        self._result: list[PeerModel] | PeerError | None = None
        self._thread = threading.Thread(target=self._run, name=f"distilforge-{key[0]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._after is not None:
                self._after._thread.join()
            self._stop_if_cancelled("")
            self._result = self._run_commands(self.folder, self._stop_if_cancelled, self._started)
        except PeerError as e:
            self._result = e
        except Exception as e:  # a bug or a library failure: the peer step reports it, the build goes on
            self._result = PeerError(f"the peer commands failed: {type(e).__name__}: {first_line(e)}")

    def matches(self, key: tuple[Any, ...]) -> bool:
        return key == self.key

    def wait(self) -> list[PeerModel]:
        self._thread.join()
        if isinstance(self._result, PeerError):
            raise self._result
        return self._result or []

    def _stop_if_cancelled(self, _message: str) -> None:
        if self._cancelled:
            raise PeerError("cancelled")

    def cancel(self) -> None:
        """Stop the commands if still running and remove the folder (the peer step moved it if it used it)."""
        self._cancelled = True
        while self._thread.is_alive():
            for proc in self._started:
                if proc.poll() is None:
                    proc.kill()
            self._thread.join(timeout=0.2)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_head_start(checkpoint: Path, task: str, threads: int) -> PeerHeadStart | None:
    """Start the peer's commands for `build --bench` once the build has loaded its checkpoint; None where the
    peer is not installed."""
    if not peer_installed():
        return None
    machine = machine_info(threads)
    flag = optimum_flag(machine["flags"], machine["arch"])
    return PeerHeadStart(optimum_key(checkpoint, task, flag), _optimum_run(Path(checkpoint), task, flag))


def describe_model(root: Path, folder: Path, target: str, command: list[str], seconds: float) -> PeerModel:
    """The model Optimum wrote in `folder` (inside `root`, which is or becomes DIR/peer): its ONNX file
    (+ external data) and its graph's inputs/outputs."""
    models = sorted(folder.glob("*.onnx"))
    if len(models) != 1:
        raise PeerError(f"{target}: expected one .onnx file in {folder.name}, found {len(models)}")
    data = [p for p in sorted(folder.iterdir()) if p.name.endswith(("onnx_data", ".onnx.data"))]
    inputs, outputs = graph_specs(models[0])
    files = peer_files(root, [models[0], *data], OPTIMUM)
    renamed = {o.name: PEER_OUTPUT_NAMES[o.name] for o in outputs if o.name in PEER_OUTPUT_NAMES}
    artifact = ExportedArtifact(target=target, files=files, inputs=inputs, outputs=outputs,
                                details={"tool": "optimum-cli", "command": shlex.join(command),
                                         **({"output_names_as": renamed} if renamed else {})})
    return PeerModel(target=target, command=shlex.join(command), seconds=seconds, artifact=artifact)


def peer_files(root: Path, paths: list[Path], tool: PeerTool) -> list[FileRecord]:
    """File records of a peer's model files in `root` (which is or becomes DIR/<its folder>), relative to DIR."""
    files = [FileRecord.of(root, p) for p in paths]
    return [FileRecord(f"{tool.folder}/{f.path}", f.bytes, f.sha256) for f in files]


def graph_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Names, dtypes and shapes (named dims for dynamic axes) of an ONNX graph's inputs and outputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in t.shape.dim)
        return TensorSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims)

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


# ------------------------------------------------------------------------------------ our validator

def validate_peer(out: Path, models: list[PeerModel], source: Source, options: BuildOptions,
                  say: Progress, shared: dict[str, Any] | None = None) -> None:
    """Each model through `pipeline.judge.validate_entry`: our runner of its format, the Reference, the cases and the
    pass rule of its precision, exactly as a target of ours of that format is validated. The Reference (eager's
    outputs, computed once per case) is kept in `shared` for the next peer."""
    from distilforge.pipeline.judge import validate_entry
    from distilforge.pipeline.source import eager_runner
    from distilforge.validate import Reference

    shared = {} if shared is None else shared
    if "reference" not in shared:
        shared["reference"] = Reference(eager_runner(source.ckpt, options.threads))
    reference = shared["reference"]
    for m in models:
        say(f"{m.target}: validating (peer)")
        try:
            m.entry = validate_entry(peer_target(m.target, m.tool), m.artifact, source, out, options, reference)
        except DistilforgeError:
            raise
        except Exception as e:  # the runtime could not load or run the peer's model: that row fails, bench goes on
            m.error = f"{m.target}: running it failed: {type(e).__name__}: {first_line(e)}"


def peer_target(name: str, tool: PeerTool = OPTIMUM) -> Target:
    """A registry-shaped Target for a peer model, so validation and timing use our runner of its format. It is not
    in the registry: `distilforge build` cannot build it."""
    from distilforge.targets import FormatSpec, Target

    runner = importlib.import_module(tool.runner)
    spec = FormatSpec(tool.format, runner.open_runner, extra="peer", modules=tool.modules, runtime=tool.runtime)
    return Target(name, spec, export=_built_by_the_peer)


def _built_by_the_peer(*_args: Any) -> ExportedArtifact:
    raise ExportError("peer models are built by the peer's own tools (distilforge.bench.peer.export_peer)")


def peer_options(manifest: dict[str, Any], threads: int) -> BuildOptions:
    """The validation settings the manifest's artifacts were judged with: its tolerances and seed."""
    settings = manifest.get("settings") or {}
    options = BuildOptions(threads=threads, seed=int(settings.get("seed", 0)))
    recorded = settings.get("tolerances") or {}
    tolerances = {**options.tolerances, **{k: Tolerance(**v) for k, v in recorded.items()}}
    return BuildOptions(threads=threads, seed=options.seed, tolerances=tolerances)


# ------------------------------------------------------------------------------------ ours vs the peer

# (format, precision class and precision of ours, the peer row it is compared with): our fastest artifact of that
# format and class (of that precision, where one is named). Optimum's INT8 is dynamic INT8 from ORT's quantizer:
# any of our ONNX INT8 artifacts does the same job. peer_openvino.py adds optimum-intel's pairs.
OURS_VS_PEER: tuple[tuple[str, str, str | None, str], ...] = (
    (PEER_FORMAT, "int8", None, PEER_INT8), (PEER_FORMAT, "fp32", None, PEER_FP32))


def comparisons(results: list[dict[str, Any]],
                pairs: tuple[tuple[str, str, str | None, str], ...] = OURS_VS_PEER) -> list[dict[str, Any]]:
    """For each pair, our fastest timed artifact that matches it against the peer's model: p50 ÷ p50, both from
    the same rounds (bench only times artifacts that passed validation)."""
    out = []
    for fmt, klass, precision, peer_name in pairs:
        peer = next((r for r in results if r["target"] == peer_name and _p50(r)), None)
        ours = [r for r in results if r.get("kind") == "artifact" and r["target"].split(":")[0] == fmt
                and r.get("precision_class") == klass and precision in (None, r["target"].split(":")[1])
                and _p50(r)]
        if peer is None or not ours:
            continue
        best = min(ours, key=_p50)
        out.append({"ours": best["target"], "peer": peer_name, "ours_p50_ms": _p50(best), "peer_p50_ms": _p50(peer),
                    "ratio": _p50(best) / _p50(peer),
                    "peer_passed": bool((peer.get("validation") or {}).get("passed"))})
    return out


def _p50(row: dict[str, Any]) -> float | None:
    return (row.get("latency_ms") or {}).get("p50")
