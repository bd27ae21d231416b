"""The command line: a thin layer over distilforge.pipeline.

Exit codes: 0 success, 1 a build or check failed, 2 a usage error or bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from distilforge.errors import DistilforgeError, UsageError

if TYPE_CHECKING:
    from distilforge.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Export a DistilBERT checkpoint to deployable artifacts (ONNX, TorchScript, OpenVINO IR), validate each one
against the eager PyTorch model, and record everything in DIR/manifest.json.

examples:
  distilforge build --out artifacts                 # the built-in default model, every installed target
  distilforge build ./my-checkpoint --out out --targets onnx:fp32
  distilforge build ./my-checkpoint --out out --eval dev.jsonl   # task metrics on your labelled data
  distilforge build ./my-checkpoint --out s2 --shard 2/3         # one job of a CI matrix
  distilforge merge s1 s2 s3 --out out              # the shards' outputs as one build's
  distilforge build-many plan.toml --out root       # many checkpoints, fanned out on Ray
  distilforge validate out                          # re-check hashes and outputs from the manifest
  distilforge bench out                             # time every artifact, Optimum's peer, eager and the GEMM floor
  distilforge report out --max-size-mb 30           # report.json/.md/.html and which artifact to ship
  distilforge predict out "the striker scored twice"  # run the recommended artifact on text
  distilforge package out --format triton --out repo  # a Triton Inference Server model repository
  distilforge targets                               # what can be built here
"""


# Where our own messages go. While a command runs, file descriptor 2 (which libraries write
# to from C and C++ as well as Python) points at a log file; this stream is the user's terminal.
_user_err = sys.stderr


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) == "predict" and not any(e.startswith("-") for e in extra):
        args.texts += extra  # texts after an option: `predict DIR --target T "a text"`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    _silence_libraries()
    with _library_output_to_log(enabled=not getattr(args, "verbose", False)) as log:
        try:
            return args.func(args)
        except DistilforgeError as e:
            _err(f"distilforge: error: {e}")
            return e.exit_code
        except KeyboardInterrupt:
            _err("distilforge: interrupted")
            return 130
        except Exception as e:  # a bug or a library failure we did not foresee: one line, details in the log
            traceback.print_exc()
            log.keep = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _err(f"distilforge: internal error: {type(e).__name__}: {first} (traceback in {log.path})")
            return EXIT_FAILED


def _err(line: str) -> None:
    print(line, file=_user_err, flush=True)


class _Log:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.keep = False


@contextlib.contextmanager
def _library_output_to_log(*, enabled: bool):
    """Point fd 2 (and sys.stderr) at a temporary log while the command runs; our own
    messages keep going to the terminal. The log is kept only after an internal error."""
    global _user_err
    if not enabled:
        yield _Log(None)
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    handle, path = tempfile.mkstemp(prefix="distilforge-", suffix=".log")
    log = _Log(path)
    previous_user_err, previous_stderr = _user_err, sys.stderr
    _user_err = os.fdopen(os.dup(saved_fd), "w", buffering=1)
    os.dup2(handle, 2)
    sys.stderr = os.fdopen(os.dup(handle), "w", buffering=1)
    try:
        yield log
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        os.close(handle)
        _user_err.close()
        _user_err, sys.stderr = previous_user_err, previous_stderr
        if not log.keep:
            os.unlink(path)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (its subparsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"distilforge: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distilforge", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    b = sub.add_parser("build", help="export, validate and record artifacts",
                       description="Export CHECKPOINT (default: the built-in model) to every target asked for, "
                                   "validate each against the eager model, write DIR/manifest.json.")
    b.add_argument("checkpoint", nargs="?", help="a local Hugging Face-layout DistilBERT directory "
                                                 "(default: the built-in all-MiniLM-L6-v2 topic classifier)")
    b.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    b.add_argument("--targets", metavar="T,...", help="comma-separated targets, e.g. onnx:fp32 "
                                                      "(default: every target whose backend is installed)")
    b.add_argument("--tolerance", action="append", default=[], metavar="CLASS.FIELD=VALUE",
                   help="override a pass rule, e.g. fp32.max_abs=2e-4 or int8.min_cosine=0.98 (repeatable)")
    b.add_argument("--tflite-shapes", metavar="BxS,...", default="",
                   help="fixed shapes for TFLite signatures, e.g. 1x128,1x384 (multiple choice: BxCxS; "
                        "default 1x128, or the model's maximum if shorter)")
    b.add_argument("--executorch-max-shape", metavar="BxS", default="",
                   help="the largest input an ExecuTorch program takes, e.g. 1x256 (multiple choice: BxCxS); its "
                        "activation memory is planned for it (default 4x the model's maximum positions; multiple "
                        "choice 4x4x it)")
    b.add_argument("--calibration", type=Path, metavar="FILE",
                   help="calibration text for static INT8: .txt (a text a line), .jsonl or .csv with a 'text' "
                        "field (QA: question/context; multiple choice: prompt/choices); default: shipped text")
    b.add_argument("--int8-cpu", metavar="portable|native",
                   help="INT8 recipes right on every CPU class, x86 with and without VNNI and ARM (portable, the "
                        "default), or only on this machine's class (native: e.g. full 8-bit weights on a VNNI CPU)")
    b.add_argument("--validate-on", metavar="CPU,...", dest="validate_on",
                   help="also judge every artifact on these emulated ARM64 CPUs (arm64:cortex-a53, arm64:cortex-a55, "
                        "arm64:cortex-a76, arm64:neoverse-n2) under qemu-aarch64; a failure there fails the artifact "
                        "and climbs an INT8 ladder as one here does (TFLite and ONNX; the runtime is set up on first "
                        "use)")
    b.add_argument("--calibration-samples", metavar="N",
                   help="how many calibration samples to use (default: 128)")
    b.add_argument("--eval", type=Path, metavar="FILE", dest="eval_file",
                   help="labelled data (.jsonl or .csv) to score every artifact and the eager model on: "
                        "text+label, text+labels (multi-label), tokens+tags, question+context+answer, "
                        "prompt+choices+label (default: the built-in model's held-out split)")
    _common(b)
    b.add_argument("--force", action="store_true", help="build into a non-empty directory without a manifest")
    b.add_argument("--rebuild", action="store_true",
                   help="export and validate every target again, even those whose inputs have not changed")
    b.add_argument("--keep-going", action="store_true",
                   help="when a target fails, build the others anyway (default: stop at the first failure)")
    b.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                   help="targets built at once, each on a worker process (default: $DISTILFORGE_JOBS, else the cores "
                        "this machine has); the same files and manifest as --jobs 1")
    b.add_argument("--shard", metavar="K/N",
                   help="build only the K-th of N round-robin slices of the targets (a CI matrix job); "
                        "'distilforge merge' puts the N outputs together")
    b.add_argument("--bench", action="store_true", help="then benchmark DIR as 'distilforge bench' does")
    b.add_argument("--no-peer", action="store_true", help="with --bench: no Optimum peer rows")
    b.set_defaults(func=_cmd_build)

    m = sub.add_parser("merge", help="put the outputs of 'build --shard K/N' (or build-many's parts) together",
                       description="Check that every PART was built from the same checkpoint bytes, settings, tool "
                                   "and distilforge versions, that together they hold every target of the build "
                                   "and agree where they overlap, and every file's sha256; then write --out with the "
                                   "manifest one unsharded build would have written. Nothing is written on a "
                                   "mismatch (exit 2).")
    m.add_argument("parts", nargs="+", type=Path, metavar="PART", help="output directories of the shards")
    m.add_argument("--out", required=True, type=Path, metavar="DIR", help="the merged output directory")
    m.add_argument("--force", action="store_true", help="merge into a non-empty directory without a manifest")
    m.add_argument("--mixed-cpus", action="store_true",
                   help="merge parts validated on different CPU classes (e.g. a CI matrix on mixed runners); each "
                        "artifact's validated_on says which CPU its figures are from")
    _output_options(m)
    m.set_defaults(func=_cmd_merge)

    bm = sub.add_parser("build-many", help="build many checkpoints as Ray tasks, merged per checkpoint",
                        description="Run each (checkpoint, target) build of PLAN (a TOML file, see docs/build-many.md) "
                                    "as a Ray task with the CPUs it asks for, then merge each checkpoint's parts into "
                                    "ROOT/<name> as one 'distilforge build' would write it. Without --ray-address, "
                                    "Ray starts on this machine. Exit 1 if any target failed.")
    bm.add_argument("plan", type=Path, metavar="PLAN", help="the plan file (TOML)")
    bm.add_argument("--out", required=True, type=Path, metavar="ROOT", help="one output directory per checkpoint")
    bm.add_argument("--ray-address", metavar="ADDR",
                    help="join this Ray cluster (e.g. 10.0.0.1:6379, or 'auto' for the one started on this machine "
                         "with 'ray start'); default: start Ray here")
    _output_options(bm)
    bm.set_defaults(func=_cmd_build_many)

    v = sub.add_parser("validate", help="re-check an output directory against its manifest",
                       description="Verify every file's size and sha256, the checkpoint's files, and re-run "
                                   "each artifact's validation with the tolerances the manifest records.")
    v.add_argument("dir", type=Path, metavar="DIR")
    v.add_argument("--cpu", action="append", metavar="CPU", dest="cpus",
                   help="where to run the artifacts: 'host' (this machine, the default) or an emulated ARM64 CPU, "
                        "'arm64:MODEL' with MODEL one of cortex-a53, cortex-a55, cortex-a76, neoverse-n2 "
                        "(qemu-aarch64; its runtime is set up on first use); repeatable")
    v.add_argument("--targets", metavar="T,...", help="re-run only these artifacts (every file is checked all the "
                                                       "same)")
    _common(v)
    v.set_defaults(func=_cmd_validate)

    bn = sub.add_parser("bench", help="time every artifact of an output directory, eager and the GEMM floor",
                        description="Time every artifact that passed validation through its own runner, the peer "
                                    "(Optimum's fp32 and INT8 export of the same checkpoint, validated by our "
                                    "validator), the eager PyTorch model and the INT8/fp32 GEMM floor, each in its "
                                    "own process, in interleaved rounds; write DIR/bench.json.")
    bn.add_argument("dir", type=Path, metavar="DIR")
    bn.add_argument("--targets", metavar="T,...",
                    help="only these artifacts (eager, the floor and the peer always run)")
    bn.add_argument("--rounds", type=_positive_int, default=None,
                    help="time every candidate for exactly this many interleaved rounds (default: until every p50 "
                         "ratio to eager is known within --rel-error, 4 to 6 rounds)")
    bn.add_argument("--rel-error", type=_percent, default=None, metavar="PCT",
                    help="stop the rounds once every p50 ratio to eager is known within +-PCT%% (95%% "
                         "interval; default: 10)")
    bn.add_argument("--runs", type=_positive_int, default=None,
                    help="batch 1 inferences per candidate per round (default: 5)")
    bn.add_argument("--quick", action="store_true", help="a smoke test: 2 rounds x 3 runs")
    bn.add_argument("--no-peer", action="store_true",
                    help="skip the peer rows (Optimum's export and INT8 of the same checkpoint, built into DIR/peer, "
                         "validated and timed like our artifacts)")
    _common(bn)
    bn.set_defaults(func=_cmd_bench)

    r = sub.add_parser("report", help="write report.json/.md/.html for DIR and say which artifact to ship",
                       description="Read DIR/manifest.json and DIR/bench.json (if present); write DIR/report.json, "
                                   "DIR/report.md and a self-contained DIR/report.html. Exit 1 if no artifact "
                                   "meets the limits.")
    r.add_argument("dir", type=Path, metavar="DIR")
    r.add_argument("--max-latency-ms", type=float, metavar="MS",
                   help="only artifacts with p50 <= MS (needs bench.json)")
    r.add_argument("--min-agreement", type=float, metavar="F",
                   help="only artifacts with at least this agreement: a fraction (0.99) or a percent (99)")
    r.add_argument("--max-size-mb", type=float, metavar="MB", help="only artifacts of at most MB (10^6 bytes) on disk")
    r.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    r.add_argument("--json", action="store_true", help="print report.json on stdout")
    r.set_defaults(func=_cmd_report)

    pr = sub.add_parser("predict", help="run an artifact of DIR on text and say what its head means",
                        description="Tokenize TEXT, run it through one artifact of DIR (its own runtime) and print "
                                    "the label and score, the entities, the answer, the choice, the top tokens for "
                                    "a [MASK] or the embedding's shape and norm.")
    pr.add_argument("dir", type=Path, metavar="DIR")
    pr.add_argument("texts", nargs="*", metavar="TEXT", help="texts (multiple choice: the prompt)")
    pr.add_argument("--target", metavar="T",
                    help="the artifact to run (default: the one 'report' recommends, else the fastest that passed)")
    pr.add_argument("--question", help="question answering: the question")
    pr.add_argument("--context", help="question answering: the text holding the answer")
    pr.add_argument("--choices", nargs="+", metavar="CHOICE", help="multiple choice: the choices for the prompt")
    pr.add_argument("--threads", type=_positive_int, default=1, help="threads for the runtime (default: 1)")
    pr.add_argument("--json", action="store_true", help="print the results as JSON")
    pr.add_argument("--verbose", action="store_true", help="let the libraries' own warnings and logs through")
    pr.set_defaults(func=_cmd_predict)

    pk = sub.add_parser("package", help="package DIR's artifacts for a server (a Triton model repository)",
                        description="Write a Triton Inference Server model repository from DIR's ONNX, OpenVINO and "
                                    "TorchScript artifacts that passed validation: REPO/<name>/config.pbtxt and "
                                    "REPO/<name>/1/<model file>, dims and dtypes from the manifest.")
    pk.add_argument("dir", type=Path, metavar="DIR")
    pk.add_argument("--format", choices=("triton",), required=True, help="the server's layout (triton)")
    pk.add_argument("--out", type=Path, required=True, metavar="REPO", help="the model repository to write")
    pk.add_argument("--targets", metavar="T,...", help="only these artifacts (default: every one a server runs)")
    pk.add_argument("--max-batch-size", type=_non_negative_int, default=32, metavar="N",
                    help="the server's max_batch_size and dynamic batching bound (default: 32; 0: no batching by "
                         "the server, the batch axis stays in dims)")
    pk.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    pk.set_defaults(func=_cmd_package)

    t = sub.add_parser("targets", help="list the known targets and whether their backend is installed")
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(func=_cmd_targets)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, help="threads per runtime (default: 2)")
    _output_options(p)
    p.add_argument("--verbose", action="store_true", help="let the libraries' own warnings and logs through")


def _output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of a table")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _silence_libraries() -> None:
    """Library noise (torchao's pytree warnings, TF's C++ logs) must not drown our one-line errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow (seconds, and noise) otherwise
    os.environ.setdefault("USE_FLAX", "0")  # ... and JAX, where Flax is installed (the test-only fixtures extra)
    warnings.filterwarnings("ignore")
    for name in ("torch", "transformers", "onnxscript", "nncf", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _progress(args: argparse.Namespace) -> Iterator[Progress]:
    """What a long command shows while it runs (distilforge/progress.py), on the user's terminal stream;
    the live display is stopped however the command ends, before anything else is printed."""
    from distilforge.progress import make_progress

    progress = make_progress(_user_err, quiet=args.quiet or args.json, prefix="[distilforge] ")
    try:
        yield progress
    finally:
        progress.close()


def _wall_time(args: argparse.Namespace, started: float) -> None:
    """The summary's last line."""
    from distilforge.progress import format_duration

    if not args.quiet and not args.json:
        print(f"wall time {format_duration(time.monotonic() - started)}", flush=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from distilforge.jobs import default_jobs
    from distilforge.pipeline import build, parse_shard
    from distilforge.user_options import USER_OPTIONS, options_from

    started = time.monotonic()
    targets = _split_targets(args.targets)
    options = options_from({o.flag: getattr(args, o.key) for o in USER_OPTIONS}, by="flag",
                           threads=args.threads or 2, calibration_file=args.calibration)
    head_start: list[Any] = []  # `build --bench`: Optimum's commands for the peer rows run beside the build

    def start_peer(source: Any) -> None:
        from distilforge.bench.peer import start_head_start

        head_start.append(start_head_start(source.ckpt.info.path, source.ckpt.head.task, options.threads))

    part = parse_shard(args.shard) if args.shard else None
    if part and args.bench:
        raise UsageError("--bench with --shard: a shard holds some of the artifacts; bench the merged directory")
    try:
        with _progress(args) as progress:
            result = build(args.checkpoint, args.out, targets=targets, options=options, force=args.force,
                           progress=progress, eval_file=args.eval_file, keep_going=args.keep_going,
                           rebuild=args.rebuild, on_loaded=start_peer if args.bench and not args.no_peer else None,
                           part=part, jobs=args.jobs or default_jobs())
            progress.close()  # the build's display ends here (the bench's phases start their own)
            benched = _bench(args, args.out, threads=options.threads, progress=progress,
                             peer_head_start=head_start[0] if head_start else None) if args.bench else None
    finally:
        for peer_commands in head_start:
            if peer_commands:
                peer_commands.cancel()
    extra = {"manifest": str(args.out / "manifest.json")}
    if benched:
        extra["bench"] = str(benched.path)
    _report(args, result.entries, result.failures, title=f"distilforge build -> {args.out}", extra=extra)
    if benched:
        _bench_report(args, benched, json_out=False)
    _wall_time(args, started)
    return EXIT_OK if result.passed and not (benched and benched.errors) else EXIT_FAILED


def _bench(args: argparse.Namespace, out: Path, *, threads: int | None, progress: Progress,
           targets: list[str] | None = None, peer_head_start: Any = None) -> Any:
    from distilforge.bench import BenchSettings, bench_dir

    settings = BenchSettings.quick() if getattr(args, "quick", False) else BenchSettings()
    if getattr(args, "rounds", None):
        settings = replace(settings, min_rounds=args.rounds, max_rounds=args.rounds, rel_error=0.0)
    if getattr(args, "rel_error", None) is not None:
        settings = replace(settings, rel_error=args.rel_error)
    if getattr(args, "runs", None):
        settings = replace(settings, runs=args.runs)
    return bench_dir(out, threads=threads, targets=targets, settings=settings, progress=progress,
                     peer=not getattr(args, "no_peer", False), peer_head_start=peer_head_start)


def _bench_report(args: argparse.Namespace, result: Any, *, json_out: bool) -> None:
    from distilforge.bench.table import print_bench

    if json_out:
        print(json.dumps(result.report, indent=2))
    elif not args.quiet and not args.json:
        print_bench(result.report, title=f"distilforge bench {result.path.parent} -> {result.path.name}")
    for line in result.errors:
        _err(f"distilforge: FAILED bench {line}")


def _cmd_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with _progress(args) as progress:
        result = _bench(args, args.dir, threads=args.threads, progress=progress, targets=_split_targets(args.targets))
    _bench_report(args, result, json_out=args.json)
    _wall_time(args, started)
    return EXIT_FAILED if result.errors else EXIT_OK


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a percentage between 0 and 100, e.g. 2")
    return value / 100


def _split_targets(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--targets {text!r}: no target named")
    return names


def _cmd_merge(args: argparse.Namespace) -> int:
    from distilforge.artifacts.manifest import ArtifactEntry
    from distilforge.artifacts.merge import merge
    from distilforge.pipeline import BuildResult

    manifest = merge(args.parts, args.out, force=args.force, mixed_cpus=args.mixed_cpus)
    result = BuildResult(args.out, manifest, [ArtifactEntry.from_dict(a) for a in manifest["artifacts"]])
    _report(args, result.entries, result.failures, title=f"distilforge merge {len(args.parts)} part(s) -> {args.out}",
            extra={"manifest": str(args.out / "manifest.json")})
    return EXIT_OK if result.passed else EXIT_FAILED


def _cmd_build_many(args: argparse.Namespace) -> int:
    from distilforge.many.run import build_many
    from distilforge.report.summary import print_many

    started = time.monotonic()
    with _progress(args) as progress:
        result = build_many(args.plan, args.out, address=args.ray_address, progress=progress)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print_many(result)
    for outcome in result.outcomes:
        for line in ([outcome.error] if outcome.error else outcome.failed):
            _err(f"distilforge: FAILED {outcome.name}: {line}")
    _wall_time(args, started)
    return EXIT_OK if result.passed else EXIT_FAILED


def _cmd_validate(args: argparse.Namespace) -> int:
    cpus = tuple(dict.fromkeys(args.cpus or ["host"]))
    if set(cpus) - {"host"}:
        from distilforge.validate.arm64 import parse_cpu

        for cpu in set(cpus) - {"host"}:
            parse_cpu(cpu)  # a bad name is a usage error before anything loads
    from distilforge.pipeline.revalidate import validate_dir
    from distilforge.report.summary import print_summary, summary_rows

    progress = None if args.quiet or args.json else (lambda line: _err(f"[distilforge] {line}"))
    result = validate_dir(args.dir, threads=args.threads, cpus=cpus, targets=_split_targets(args.targets),
                          progress=progress)
    if not args.quiet and not args.json:
        for line in result.notes:
            _err(f"distilforge: note: {line}")
        for cpu, entries in result.elsewhere.items():
            print_summary(entries, title=f"distilforge validate {args.dir} on {cpu} (emulated; no timing)")
    elsewhere = {cpu: summary_rows(entries) for cpu, entries in result.elsewhere.items()}
    _report(args, result.entries, result.failures, title=f"distilforge validate {args.dir}",
            extra={"notes": result.notes, "elsewhere": elsewhere}, show=bool(result.entries))
    return EXIT_OK if result.passed else EXIT_FAILED


def _report(args: argparse.Namespace, entries: list[Any], failures: list[str], *, title: str,
            extra: dict[str, Any] | None = None, show: bool = True) -> None:
    from distilforge.report.summary import print_summary, summary_rows

    if args.json:
        print(json.dumps({"passed": not failures, "failures": failures, "artifacts": summary_rows(entries),
                          **(extra or {})}, indent=2))
    elif not args.quiet and show:
        print_summary(entries, title=title)
    for line in failures:
        _err(f"distilforge: FAILED {line}")


def _cmd_report(args: argparse.Namespace) -> int:
    from distilforge.report import write_report

    result = write_report(args.dir, max_latency_ms=args.max_latency_ms, min_agreement=args.min_agreement,
                          max_size_mb=args.max_size_mb)
    if args.json:
        print(json.dumps(result.report, indent=2))
    elif not args.quiet:
        result.print()
        _err(f"[distilforge] wrote {result.json_path}, {result.markdown_path}, {result.html_path}")
    return EXIT_OK if result.recommendation.target else EXIT_FAILED


def _cmd_predict(args: argparse.Namespace) -> int:
    from distilforge.artifacts.manifest import read_manifest
    from distilforge.predict import default_target, load
    from distilforge.predict.decode import describe
    from distilforge.targets import TARGETS

    target = args.target or default_target(args.dir, read_manifest(args.dir))
    if target not in TARGETS or not TARGETS[target].spec.runs_on_torch:  # tokenizer only: no torch (1.5 s, not 8)
        os.environ.setdefault("USE_TORCH", "0")
    predictor = load(args.dir, target, threads=args.threads)
    results = predictor(*args.texts, question=args.question, context=args.context, choices=args.choices)
    if args.json:
        print(json.dumps({"target": predictor.target, "task": predictor.head.task, "results": results}, indent=2))
        return EXIT_OK
    _err(f"[distilforge] {predictor.target} ({predictor.head.task})")
    for r in results:
        shown = r.get("question") or r.get("prompt") or r["text"]
        print(f"{describe(predictor.head.task, r)}\t{shown}" + ("\t(truncated)" if r.get("truncated") else ""))
    return EXIT_OK


def _cmd_package(args: argparse.Namespace) -> int:
    from distilforge.package.triton import package_triton

    written = package_triton(args.dir, args.out, max_batch_size=args.max_batch_size,
                             targets=_split_targets(args.targets))
    if not args.quiet:
        for path in written:
            print(path)
        _err(f"[distilforge] wrote {len(written)} Triton model(s) into {args.out}")
    return EXIT_OK


def _cmd_targets(args: argparse.Namespace) -> int:
    from distilforge.targets import TARGETS

    rows = [{"target": t.name, "runtime": t.runtime, "extra": t.extra, "installed": t.installed()}
            for t in TARGETS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "installed" if r["installed"] else f"missing: pip install 'distilforge[{r['extra']}]'"
            print(f"{r['target']:<28} {r['runtime']:<36} {state}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
