"""The command line's grammar: every command, its arguments and their help; each command's function is in
commands.py."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from distilforge.cli import commands
from distilforge.errors import EXIT_USAGE
from distilforge.user_options import USER_OPTIONS

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
  distilforge package out --format transformers.js --out web  # a folder Transformers.js loads (onnx/model*.onnx)
  distilforge targets                               # what can be built here
"""


PACKAGE_FORMATS = ("triton", "transformers.js")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (its subparsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"distilforge: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
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
    for option in USER_OPTIONS:  # parsed after argparse, by user_options.py: a plan's keys go the same way
        b.add_argument(option.flag, dest=option.key, metavar=option.metavar, help=option.help,
                       **({"action": "append", "default": []} if option.repeatable else {}))
    b.add_argument("--calibration", type=Path, metavar="FILE",
                   help="calibration text for static INT8: .txt (a text a line), .jsonl or .csv with a 'text' "
                        "field (QA: question/context; multiple choice: prompt/choices); default: shipped text")
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
    b.set_defaults(func=commands.cmd_build)

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
    m.set_defaults(func=commands.cmd_merge)

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
    bm.set_defaults(func=commands.cmd_build_many)

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
    v.set_defaults(func=commands.cmd_validate)

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
    bn.set_defaults(func=commands.cmd_bench)

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
    r.set_defaults(func=commands.cmd_report)

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
    pr.set_defaults(func=commands.cmd_predict)

    pk = sub.add_parser("package", help="package DIR's artifacts for a server or a runtime (Triton, Transformers.js)",
                        description="triton: a Triton Inference Server model repository from DIR's ONNX, OpenVINO and "
                                    "TorchScript artifacts that passed validation: OUT/<name>/config.pbtxt and "
                                    "OUT/<name>/1/<model file>, dims and dtypes from the manifest. transformers.js: "
                                    "one folder Transformers.js loads, from DIR's validated ONNX artifacts: "
                                    "config.json, tokenizer files, OUT/onnx/model{,_fp16,_quantized,_int8}.onnx.")
    pk.add_argument("dir", type=Path, metavar="DIR")
    pk.add_argument("--format", choices=PACKAGE_FORMATS, required=True,
                    help="the layout to write (triton, transformers.js)")
    pk.add_argument("--out", type=Path, required=True, metavar="OUT",
                    help="the model repository (triton) or folder (transformers.js) to write")
    pk.add_argument("--targets", metavar="T,...", help="only these artifacts (default: every one the layout runs)")
    pk.add_argument("--max-batch-size", type=_non_negative_int, default=None, metavar="N",
                    help="triton: the server's max_batch_size and dynamic batching bound (default: 32; 0: no "
                         "batching by the server, the batch axis stays in dims)")
    pk.add_argument("--dynamic-batching", choices=("auto", "on", "off"), default=None,
                    help="triton: let the server batch requests together (default auto: on, except for a model "
                         "whose answers changed when validation ran its texts in one padded batch)")
    pk.add_argument("--backend", choices=("native", "python"), default=None,
                    help="triton: native (default): Triton's own backend for each format (ONNX, OpenVINO, "
                         "TorchScript); python: Triton's python backend running distilforge's runner, for every "
                         "format, TFLite and ExecuTorch included (the server's Python needs distilforge)")
    pk.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    pk.set_defaults(func=commands.cmd_package)

    t = sub.add_parser("targets", help="list the known targets and whether their backend is installed")
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(func=commands.cmd_targets)
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


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"{text!r}: give a percentage between 0 and 100, e.g. 2")
    return value / 100

