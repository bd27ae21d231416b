"""What each command does, on the arguments cli/parser.py read: a thin layer over the package's functions."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilforge.cli.terminal import err, progress_for, wall_time
from distilforge.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from distilforge.progress import Progress


def cmd_build(args: argparse.Namespace) -> int:
    from distilforge.pipeline import build, parse_shard
    from distilforge.pipeline.jobs import default_jobs
    from distilforge.user_options import USER_OPTIONS, options_from

    started = time.monotonic()
    targets = _split_targets(args.targets)
    options = options_from({o.flag: getattr(args, o.key) for o in USER_OPTIONS}, by="flag",
                           threads=args.threads or 2, calibration_file=args.calibration)
    head_start: list[Any] = []  # `build --bench`: the peers' commands (Optimum's, then optimum-intel's) run beside it

    def start_peer(source: Any) -> None:
        from distilforge.bench.peer import start_head_start
        from distilforge.bench.peer_openvino import start_openvino_head_start

        head_start.append(start_head_start(source.ckpt.info.path, source.ckpt.head.task, options.threads))
        head_start.append(start_openvino_head_start(source, after=head_start[0]))

    part = parse_shard(args.shard) if args.shard else None
    if part and args.bench:
        raise UsageError("--bench with --shard: a shard holds some of the artifacts; bench the merged directory")
    try:
        with progress_for(args) as progress:
            result = build(args.checkpoint, args.out, targets=targets, options=options, force=args.force,
                           progress=progress, eval_file=args.eval_file, keep_going=args.keep_going,
                           rebuild=args.rebuild, on_loaded=start_peer if args.bench and not args.no_peer else None,
                           part=part, jobs=args.jobs or default_jobs())
            progress.close()  # the build's display ends here (the bench's phases start their own)
            benched = _bench(args, args.out, threads=options.threads, progress=progress,
                             peer_head_starts=[h for h in head_start if h]) if args.bench else None
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
    wall_time(args, started)
    return EXIT_OK if result.passed and not (benched and benched.errors) else EXIT_FAILED


def _bench(args: argparse.Namespace, out: Path, *, threads: int | None, progress: Progress,
           targets: list[str] | None = None, peer_head_starts: Any = ()) -> Any:
    from distilforge.bench import BenchSettings, bench_dir

    settings = BenchSettings.quick() if getattr(args, "quick", False) else BenchSettings()
    if getattr(args, "rounds", None):
        settings = replace(settings, min_rounds=args.rounds, max_rounds=args.rounds, rel_error=0.0)
    if getattr(args, "rel_error", None) is not None:
        settings = replace(settings, rel_error=args.rel_error)
    if getattr(args, "runs", None):
        settings = replace(settings, runs=args.runs)
    return bench_dir(out, threads=threads, targets=targets, settings=settings, progress=progress,
                     peer=not getattr(args, "no_peer", False), peer_head_starts=peer_head_starts)


def _bench_report(args: argparse.Namespace, result: Any, *, json_out: bool) -> None:
    from distilforge.bench.table import print_bench

    if json_out:
        print(json.dumps(result.report, indent=2))
    elif not args.quiet and not args.json:
        print_bench(result.report, title=f"distilforge bench {result.path.parent} -> {result.path.name}")
    for line in result.errors:
        err(f"distilforge: FAILED bench {line}")


def cmd_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with progress_for(args) as progress:
        result = _bench(args, args.dir, threads=args.threads, progress=progress, targets=_split_targets(args.targets))
    _bench_report(args, result, json_out=args.json)
    wall_time(args, started)
    return EXIT_FAILED if result.errors else EXIT_OK


def _split_targets(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--targets {text!r}: no target named")
    return names


def cmd_merge(args: argparse.Namespace) -> int:
    from distilforge.artifacts.manifest import ArtifactEntry
    from distilforge.artifacts.merge import merge
    from distilforge.pipeline import BuildResult

    manifest = merge(args.parts, args.out, force=args.force, mixed_cpus=args.mixed_cpus)
    result = BuildResult(args.out, manifest, [ArtifactEntry.from_dict(a) for a in manifest["artifacts"]])
    _report(args, result.entries, result.failures, title=f"distilforge merge {len(args.parts)} part(s) -> {args.out}",
            extra={"manifest": str(args.out / "manifest.json")})
    return EXIT_OK if result.passed else EXIT_FAILED


def cmd_build_many(args: argparse.Namespace) -> int:
    from distilforge.many.run import build_many
    from distilforge.report.summary import print_many

    started = time.monotonic()
    with progress_for(args) as progress:
        result = build_many(args.plan, args.out, address=args.ray_address, progress=progress)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print_many(result)
    for outcome in result.outcomes:
        for line in ([outcome.error] if outcome.error else outcome.failed):
            err(f"distilforge: FAILED {outcome.name}: {line}")
    wall_time(args, started)
    return EXIT_OK if result.passed else EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    cpus = tuple(dict.fromkeys(args.cpus or ["host"]))
    if set(cpus) - {"host"}:
        from distilforge.validate.arm64 import parse_cpu

        for cpu in set(cpus) - {"host"}:
            parse_cpu(cpu)  # a bad name is a usage error before anything loads
    from distilforge.pipeline.revalidate import validate_dir
    from distilforge.report.summary import print_summary, summary_rows

    progress = None if args.quiet or args.json else (lambda line: err(f"[distilforge] {line}"))
    result = validate_dir(args.dir, threads=args.threads, cpus=cpus, targets=_split_targets(args.targets),
                          progress=progress)
    if not args.quiet and not args.json:
        for line in result.notes:
            err(f"distilforge: note: {line}")
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
        err(f"distilforge: FAILED {line}")


def cmd_report(args: argparse.Namespace) -> int:
    from distilforge.report import write_report

    result = write_report(args.dir, max_latency_ms=args.max_latency_ms, min_agreement=args.min_agreement,
                          max_size_mb=args.max_size_mb)
    if args.json:
        print(json.dumps(result.report, indent=2))
    elif not args.quiet:
        result.print()
        err(f"[distilforge] wrote {result.json_path}, {result.markdown_path}, {result.html_path}")
    return EXIT_OK if result.recommendation.target else EXIT_FAILED


def cmd_predict(args: argparse.Namespace) -> int:
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
    err(f"[distilforge] {predictor.target} ({predictor.head.task})")
    for r in results:
        shown = r.get("question") or r.get("prompt") or r["text"]
        print(f"{describe(predictor.head.task, r)}\t{shown}" + ("\t(truncated)" if r.get("truncated") else ""))
    return EXIT_OK


def cmd_package(args: argparse.Namespace) -> int:
    if args.format == "transformers.js":
        return _package_transformersjs(args)
    from distilforge.package.triton import package_triton

    batch = 32 if args.max_batch_size is None else args.max_batch_size
    written = package_triton(args.dir, args.out, max_batch_size=batch, targets=_split_targets(args.targets),
                             dynamic_batching=args.dynamic_batching or "auto", backend=args.backend or "native",
                             say=lambda line: None if args.quiet else err(f"[distilforge] {line}"))
    if not args.quiet:
        for path in written:
            print(path)
        err(f"[distilforge] wrote {len(written)} Triton model(s) into {args.out}")
    return EXIT_OK


def _package_transformersjs(args: argparse.Namespace) -> int:
    from distilforge.package.transformersjs import package_transformersjs

    for flag, value in (("--max-batch-size", args.max_batch_size), ("--dynamic-batching", args.dynamic_batching),
                        ("--backend", args.backend)):
        if value is not None:
            raise UsageError(f"{flag}: a Triton option; --format transformers.js takes only --targets")
    written = package_transformersjs(args.dir, args.out, targets=_split_targets(args.targets))
    if not args.quiet:
        for path in written:
            print(path)
        err(f"[distilforge] wrote {len(written)} Transformers.js model file(s) into {args.out}")
    return EXIT_OK


def cmd_targets(args: argparse.Namespace) -> int:
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

