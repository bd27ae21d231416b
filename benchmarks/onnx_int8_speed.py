"""INT8 ONNX speed bar (issue 5): distilforge's INT8 DistilBERT-base vs Optimum's, eager PyTorch and the GEMM floor.

One run on this machine, batch 1 x sequence 128, 2 threads:

1. a seeded random DistilBERT-base sequence classifier (dim 768, 6 layers, 12 heads, FFN 3072, vocab 30522) is
   saved as a checkpoint with a small WordPiece tokenizer;
2. distilforge builds onnx:fp32-optimized, onnx:int8-dynamic and onnx:int8-static from it (Python API);
3. Optimum exports and quantizes it with its CLI (`--avx512_vnni`, `--avx512` or `--avx2`, from the CPU flags);
4. every candidate (ours, Optimum's, eager PyTorch, and ORT MatMulInteger / MatMul on DistilBERT's GEMM shapes
   for the INT8 and fp32 floors) gets its own persistent worker process, and the coordinator times them in
   interleaved rounds (A B C ... C B A ...) with a pause between hand-offs; ratios are taken per round, then
   the median over rounds;
5. the INT8 models' logits are compared with eager fp32 on 64 varied inputs.

usage: python benchmarks/onnx_int8_speed.py [--rounds N] [--quick] [--out FILE] [--workdir DIR]
(see benchmarks/README.md). The same file is the worker: `--worker KIND ...` (started by the coordinator).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging  # noqa: E402

import numpy as np  # noqa: E402

from distilforge.bench.floor import GemmShape, model_ops, write_gemm_model  # noqa: E402
from distilforge.bench.peer import (  # noqa: E402  (the same Optimum commands and flag as `distilforge bench`)
    STEPS,
    PeerError,
    optimum_cli,
    optimum_commands,
    optimum_flag,
    run_command,
)
from distilforge.bench.timing import cpu_ticks  # noqa: E402

# import-time noise from torchao (pulled in by transformers) and torch; see docs/investigations/onnx.md section 7
for _name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
    logging.getLogger(_name).setLevel(logging.ERROR)

BATCH, SEQ, THREADS = 1, 128, 2
DIM, LAYERS, HEADS, HIDDEN, VOCAB = 768, 6, 12, 3072, 30522
OURS = ("onnx:fp32-optimized", "onnx:int8-dynamic", "onnx:int8-static")
AGREEMENT_INPUTS = 64
# the bar of issue 5
BAR_VS_OPTIMUM, BAR_VS_FLOOR = 0.90, 1.25


# ---------------------------------------------------------------------------------------------- inputs

def timing_feed() -> dict[str, np.ndarray]:
    """The one input every candidate is timed on: 1 x 128 random token ids, no padding."""
    ids = np.random.default_rng(0).integers(1000, VOCAB, size=(BATCH, SEQ), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def agreement_feeds(n: int = AGREEMENT_INPUTS) -> list[dict[str, np.ndarray]]:
    """n varied 1 x 128 inputs: random ids, half of them padded to a random length (pad id 0, mask 0)."""
    rng = np.random.default_rng(1)
    feeds = []
    for i in range(n):
        length = SEQ if i % 2 == 0 else int(rng.integers(8, SEQ))
        ids = np.zeros((BATCH, SEQ), dtype=np.int64)
        mask = np.zeros((BATCH, SEQ), dtype=np.int64)
        ids[0, :length] = rng.integers(1000, VOCAB, size=length)
        ids[0, 0], ids[0, length - 1] = 101, 102  # [CLS] ... [SEP], as a tokenizer would
        mask[0, :length] = 1
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


# --------------------------------------------------------------------------------------------- workers
# A worker loads one candidate, warms it up, prints READY, then answers the coordinator line by line:
#   "time K"      -> runs the timing input K times, prints the latencies (ms) as a JSON list
#   "logits PATH" -> runs the agreement inputs, saves the logits (n x labels) to PATH, prints "ok"

def ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


def open_candidate(kind: str, path: str, extra: str):
    """A function feed -> logits (numpy) for the candidate."""
    if kind == "ours":  # our artifact through our runner, with the session options the manifest records
        from distilforge.artifacts.manifest import read_manifest
        from distilforge.artifacts.records import ExportedArtifact
        from distilforge.validate.runners.onnx import open_runner

        record = next(a for a in read_manifest(Path(path))["artifacts"] if a["target"] == extra)
        runner = open_runner(Path(path), ExportedArtifact.from_dict(record), THREADS)
        name = runner.output_names[0]
        return lambda feed: runner.run(feed)[name]
    if kind == "ort":  # a plain ORT session, default options except the thread count (how Optimum's users run it)
        import onnxruntime as ort

        disabled = [x for x in extra.split(",") if x]
        session = ort.InferenceSession(path, ort_options(THREADS), providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled)
        return lambda feed: session.run(["logits"], feed)[0]
    if kind == "eager":  # the reference distilforge validates against: the checkpoint in PyTorch fp32
        from distilforge.checkpoint import load_checkpoint
        from distilforge.validate.runners.eager import EagerRunner

        ckpt = load_checkpoint(path)
        runner = EagerRunner(ckpt.model, ckpt.head, THREADS)
        return lambda feed: runner.run(feed)["logits"]
    if kind == "gemm":  # the floor models: inputs bound once, outputs left in ORT's memory (no copies)
        import onnxruntime as ort

        session = ort.InferenceSession(path, ort_options(THREADS), providers=["CPUExecutionProvider"])
        binding = session.io_binding()
        for spec in session.get_inputs():
            binding.bind_cpu_input(spec.name, gemm_input(spec))
        for spec in session.get_outputs():
            binding.bind_output(spec.name, "cpu")
        return lambda feed: session.run_with_iobinding(binding)
    raise SystemExit(f"unknown worker kind {kind}")


def gemm_input(spec) -> np.ndarray:
    rng = np.random.default_rng(2)
    shape = (SEQ * BATCH, spec.shape[-1])
    if "uint8" in spec.type:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def worker(kind: str, path: str, extra: str, warmup: int) -> None:
    run = open_candidate(kind, path, extra)
    feed = timing_feed()
    for _ in range(warmup):
        run(feed)
    print("READY", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "time":
            times = []
            for _ in range(int(arg)):
                start = time.perf_counter()
                run(feed)
                times.append((time.perf_counter() - start) * 1e3)
            print(json.dumps(times), flush=True)
        elif command == "logits":
            np.save(arg, np.concatenate([run(f) for f in agreement_feeds()]))
            print("ok", flush=True)


# ------------------------------------------------------------------------------------------ the models

def make_checkpoint(folder: Path) -> Path:
    """Seeded random DistilBERT-base classifier. Default init sets every bias to 0 and every LayerNorm weight
    to 1, and the exporters would then share one initializer between all biases: perturb them."""
    import torch
    import transformers

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = transformers.DistilBertConfig(dim=DIM, n_layers=LAYERS, n_heads=HEADS, hidden_dim=HIDDEN,
                                           vocab_size=VOCAB, num_labels=2,
                                           architectures=["DistilBertForSequenceClassification"])
    model = transformers.DistilBertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape) * 0.02)
            elif "layer_norm.weight" in name or "LayerNorm.weight" in name:
                p.copy_(1 + torch.randn(p.shape) * 0.05)
    model.save_pretrained(str(folder), safe_serialization=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = "the a of to and in is it for on with that this was at by from new good bad price game team".split()
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *[f"##{c}" for c in letters],
              *".,!?'-0123456789"]
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(dict.fromkeys(pieces)) + "\n")
    transformers.DistilBertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(folder))
    return folder


def build_ours(ckpt: Path, out: Path) -> dict:
    """distilforge build of the three ONNX targets, validated as usual."""
    import distilforge
    from distilforge.options import BuildOptions

    if not (out / "manifest.json").is_file():
        start = time.perf_counter()
        result = distilforge.build(ckpt, out, targets=list(OURS), options=BuildOptions(threads=THREADS),
                                   keep_going=True,  # random weights can fail validation; time them anyway
                                   progress=lambda msg: print(f"  distilforge: {msg}", flush=True))
        seconds = time.perf_counter() - start
        (out / "bench_build.json").write_text(json.dumps({"seconds": seconds, "failures": result.failures}))
    manifest = json.loads((out / "manifest.json").read_text())
    build = json.loads((out / "bench_build.json").read_text())
    built = {a["target"]: {"error": a["error"], "passed": bool(a["validation"] and a["validation"]["passed"]),
                           "bytes": a["bytes"]} for a in manifest["artifacts"]}
    return {"seconds": round(build["seconds"], 1), "failures": build["failures"], "targets": built}


def build_optimum(ckpt: Path, folder: Path, flag: str) -> dict:
    """optimum-cli export + dynamic quantization, with distilforge.bench.peer's commands (the ones `distilforge
    bench` runs for its peer rows). Returns the commands and the model paths."""
    cli = optimum_cli()
    if cli is None:
        return {"skipped": "optimum-cli not found (pip install 'distilforge[peer]' or optimum[onnxruntime])"}
    fp32, int8 = folder / "fp32", folder / "int8"
    commands = optimum_commands(cli, ckpt, "text-classification", fp32, int8, flag)
    seconds = []
    for command, step, done in zip(commands, STEPS, (fp32 / "model.onnx", int8 / "model_quantized.onnx"),
                                   strict=True):
        if done.is_file():  # --workdir: reuse what an earlier run built
            seconds.append(0.0)
            continue
        print(f"  optimum: {step} ...", flush=True)
        try:
            seconds.append(round(run_command(command, step), 1))
        except PeerError as e:
            return {"skipped": str(e)}
        if not done.is_file():
            return {"skipped": f"{step} wrote no {done.name}"}
    return {"fp32": str(fp32 / "model.onnx"), "int8": str(int8 / "model_quantized.onnx"),
            "commands": [" ".join(c[1:]) for c in commands], "flag": flag, "seconds": seconds}


def gemm_shape() -> GemmShape:
    return GemmShape(dim=DIM, hidden_dim=HIDDEN, n_layers=LAYERS, tokens=BATCH * SEQ)


def make_gemm_models(folder: Path) -> dict[str, str]:
    """DistilBERT's 24 weight GEMMs at M = 128 as one ORT graph each for int8 (MatMulInteger) and fp32 (MatMul);
    see distilforge.bench.floor, which builds them for `distilforge bench` too."""
    paths = {}
    for precision in ("int8", "fp32"):
        path = folder / f"gemms_{precision}.onnx"
        paths[precision] = str(path)
        if not path.is_file():
            write_gemm_model(path, gemm_shape(), precision)
    return paths


def gemm_ops() -> dict[str, float]:
    """Multiply-adds x 2 at 1 x 128: the weight GEMMs (what the floor models run) and the attention
    score/context matmuls (Q.K^T and P.V, 2 x 128 x 128 x 768 MACs a layer). The classifier head
    (two GEMMs on one row, 0.0012 GOP) is left out."""
    ops = model_ops(gemm_shape(), SEQ)
    return {"linear_gop": ops.linear_gop, "attention_gop": ops.attention_gop, "total_gop": ops.total_gop}


# ----------------------------------------------------------------------------------------- coordinator

class Worker:
    def __init__(self, name: str, kind: str, path: str, extra: str, warmup: int, logs: Path) -> None:
        self.name = name
        self.log = logs / (name.replace(" ", "_").replace("/", "_") + ".log")
        command = [sys.executable, "-u", __file__, "--worker", kind, path, extra, "--warmup", str(warmup)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log.open("w"), text=True)
        if self.proc.stdout.readline().strip() != "READY":
            raise SystemExit(f"worker {name} failed to start; see {self.log}:\n{self.log.read_text()[-2000:]}")

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def time_rounds(workers: list[Worker], rounds: int, runs: int, pause: float) -> tuple[dict, list]:
    """rounds x (runs inferences per worker), order ABC... then ...CBA; one unrecorded warm-up round first.
    Also the share of the machine's CPU that other processes used during each round (the machine is shared)."""
    times: dict[str, list[list[float]]] = {w.name: [] for w in workers}
    foreign = []
    pids = [os.getpid(), *(w.proc.pid for w in workers)]
    for r in range(-1, rounds):
        before = cpu_ticks(pids)
        for w in (workers if r % 2 == 0 else workers[::-1]):
            time.sleep(pause)  # let the previous worker's spinning threads go to sleep
            ts = json.loads(w.ask(f"time {runs}"))
            if r >= 0:
                times[w.name].append(ts)
        after = cpu_ticks(pids)
        if r < 0:
            continue
        share = None
        if before and after and after[1] > before[1]:
            share = max(0.0, ((after[0] - before[0]) - (after[2] - before[2])) / (after[1] - before[1]))
        foreign.append(share)
        if (r + 1) % max(1, rounds // 5) == 0:
            load = f", other processes used {share:.0%} of the CPU" if share is not None else ""
            print(f"  round {r + 1}/{rounds}{load}", flush=True)
    return times, foreign


def quiet_rounds(foreign: list, limit: float) -> list[int]:
    """The rounds in which other processes used at most `limit` of the CPU, if there are enough of them
    (a third of all, at least 5); else every round."""
    quiet = [i for i, share in enumerate(foreign) if share is not None and share <= limit]
    return quiet if len(quiet) >= max(5, len(foreign) // 3) else list(range(len(foreign)))


def summarize(times: dict[str, list[list[float]]], keep: list[int]) -> dict[str, dict]:
    out = {}
    for name, all_rounds in times.items():
        per_round = [all_rounds[i] for i in keep]
        flat = sorted(t for ts in per_round for t in ts)
        out[name] = {"median_ms": statistics.median(flat), "p10_ms": flat[len(flat) // 10],
                     "p90_ms": flat[(9 * len(flat)) // 10], "runs": len(flat),
                     "round_medians_ms": [round(statistics.median(ts), 4) for ts in per_round]}
    return out


def round_ratio(summary: dict[str, dict], a: str, b: str, scale: float = 1.0) -> dict | None:
    """Median over rounds of a / (b x scale), with the 10th-90th percentile of the per-round ratios."""
    if a not in summary or b not in summary:
        return None
    ratios = sorted(x / (y * scale) for x, y in zip(summary[a]["round_medians_ms"], summary[b]["round_medians_ms"],
                                                     strict=True))
    return {"median": statistics.median(ratios), "p10": ratios[len(ratios) // 10],
            "p90": ratios[(9 * len(ratios)) // 10]}


def agreement(logits: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Against eager fp32. Random weights make the logits nearly input-independent, so argmax agreement is
    trivially 100 %; relRMSE (RMS of the difference over the spread of the reference across inputs) and the
    centered cosine (both minus the reference's mean over inputs) show what quantization moved."""
    diff = logits - ref
    centered_ref = ref - ref.mean(axis=0)
    centered = logits - ref.mean(axis=0)
    cos = float((logits * ref).sum() / (np.linalg.norm(logits) * np.linalg.norm(ref)))
    return {"agree": float((logits.argmax(-1) == ref.argmax(-1)).mean()), "cosine": cos,
            "centered_cosine": float((centered * centered_ref).sum()
                                     / (np.linalg.norm(centered) * np.linalg.norm(centered_ref))),
            "rel_rmse": float(np.sqrt((diff ** 2).mean()) / np.sqrt((centered_ref ** 2).mean())),
            "max_abs": float(np.abs(diff).max())}


def candidates(work: Path, optimum: dict, gemms: dict[str, str], ckpt: Path) -> list[tuple[str, str, str, str]]:
    """(name, worker kind, path, extra) for every candidate that exists."""
    ours = work / "ours"
    manifest = json.loads((ours / "manifest.json").read_text())
    built = {a["target"] for a in manifest["artifacts"] if not a["error"]}
    rows = [(f"ours {t.split(':')[1]}", "ours", str(ours), t) for t in OURS[::-1] if t in built]
    if "int8" in optimum:
        rows += [("optimum int8", "ort", optimum["int8"], ""),
                 ("optimum int8 no-SLN", "ort", optimum["int8"], "SkipLayerNormFusion"),
                 ("optimum fp32", "ort", optimum["fp32"], "")]
    rows += [("eager fp32", "eager", str(ckpt), ""),
             ("floor int8 gemms", "gemm", gemms["int8"], ""), ("floor fp32 gemms", "gemm", gemms["fp32"], "")]
    return rows


def bar_check(ratios: dict, agree: dict) -> list[tuple[str, bool | None, str]]:
    checks = []
    vs_opt = ratios.get("ours_int8_dynamic / optimum_int8")
    if vs_opt is None:
        checks.append((f"ours/optimum <= {BAR_VS_OPTIMUM}", None, "not measured: Optimum was skipped"))
    else:
        ours, opt = agree["ours int8-dynamic"], agree["optimum int8"]
        as_good = ours["agree"] >= opt["agree"] and ours["rel_rmse"] <= opt["rel_rmse"]
        ok = vs_opt["median"] <= BAR_VS_OPTIMUM and as_good
        checks.append((f"ours/optimum <= {BAR_VS_OPTIMUM} at equal or better agreement", ok,
                       f"{vs_opt['median']:.3f}; agreement {ours['agree']:.1%} vs {opt['agree']:.1%}, "
                       f"relRMSE {ours['rel_rmse']:.3f} vs {opt['rel_rmse']:.3f}"))
    vs_floor = ratios["ours_int8_dynamic / int8_floor"]
    checks.append((f"ours/floor <= {BAR_VS_FLOOR}", vs_floor["median"] <= BAR_VS_FLOOR,
                   f"{vs_floor['median']:.3f} (ours must take <= {BAR_VS_FLOOR}x the INT8 GEMM floor)"))
    return checks


def print_report(report: dict) -> None:
    print()
    load = report["load"]
    print(f"batch {BATCH} x seq {SEQ}, {THREADS} threads; {load['rounds_used']} of {report['settings']['rounds']} "
          f"rounds used x {report['settings']['runs_per_round']} runs per candidate; cpu: {report['machine']['cpu']}")
    if load["median_foreign_cpu_share"] is not None:
        print(f"other processes used a median {load['median_foreign_cpu_share']:.0%} of the CPU per round")
    print(f"{'candidate':24s} {'median ms':>10s} {'p10 ms':>8s} {'p90 ms':>8s} {'x eager':>8s}")
    for name, s in report["latency"].items():
        vs_eager = report["ratios_vs_eager"].get(name)
        print(f"{name:24s} {s['median_ms']:10.2f} {s['p10_ms']:8.2f} {s['p90_ms']:8.2f} "
              f"{vs_eager['median'] if vs_eager else float('nan'):8.3f}")
    floor = report["floor"]
    print(f"\nINT8 floor: {floor['int8_gops']:.0f} GOP/s (MatMulInteger u8 x s8 on the 24 weight GEMMs) -> "
          f"{floor['total_gop']:.2f} GOP (weights {floor['linear_gop']:.2f} + attention {floor['attention_gop']:.2f}) "
          f"= {floor['int8_floor_ms']:.2f} ms;  fp32 floor: {floor['fp32_gops']:.0f} GFLOP/s -> "
          f"{floor['fp32_floor_ms']:.2f} ms")
    print("\nratios (median over rounds of the per-round ratio, [p10, p90])")
    for name, r in report["ratios"].items():
        if r:
            print(f"  {name:40s} {r['median']:6.3f}  [{r['p10']:.3f}, {r['p90']:.3f}]")
    print(f"\nagreement with eager fp32 on {AGREEMENT_INPUTS} inputs (1 x 128, half padded)")
    print(f"  {'model':22s} {'agree':>7s} {'cosine':>9s} {'cent.cos':>9s} {'relRMSE':>8s} {'max|d|':>8s}")
    for name, a in report["agreement"].items():
        print(f"  {name:22s} {a['agree']:7.1%} {a['cosine']:9.6f} {a['centered_cosine']:9.5f} "
              f"{a['rel_rmse']:8.4f} {a['max_abs']:8.4f}")
    for note in report["notes"]:
        print(f"note: {note}")
    print("\nbar check (issue 5)")
    for what, ok, detail in report["bar"]:
        print(f"  {'PASS' if ok else 'FAIL' if ok is False else 'SKIP'}  {what}: {detail}")


def run(args: argparse.Namespace) -> dict:
    from distilforge.artifacts.environment import machine_info, tool_versions

    machine = machine_info(THREADS)
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="distilforge-bench-")
    work = Path(args.workdir or temp.name)
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    notes = []
    try:
        print(f"work dir {work}", flush=True)
        ckpt = make_checkpoint(work / "checkpoint")
        print("building ours ...", flush=True)
        ours = build_ours(ckpt, work / "ours")
        for target, b in ours["targets"].items():
            if b["error"] or not b["passed"]:
                why = b["error"] or "; ".join(f for f in ours["failures"] if f.startswith(target)) or "see manifest"
                notes.append(f"{target} did not pass distilforge's validation: {why}")
        print("building Optimum's ...", flush=True)
        optimum = build_optimum(ckpt, work / "optimum", optimum_flag(machine["flags"], machine["arch"]))
        if "skipped" in optimum:
            notes.append(f"Optimum skipped, no peer ratios: {optimum['skipped']}")
        gemms = make_gemm_models(work)
        rows = candidates(work, optimum, gemms, ckpt)
        print(f"starting {len(rows)} workers ...", flush=True)
        workers = [Worker(name, kind, path, extra, args.warmup, work / "logs") for name, kind, path, extra in rows]
        try:
            print(f"timing {args.rounds} rounds ...", flush=True)
            times, foreign = time_rounds(workers, args.rounds, args.runs, args.pause)
            logits = {}
            for w in workers:
                if w.name.startswith(("ours int8", "optimum int8", "eager")):
                    path = work / f"logits_{w.name.replace(' ', '_')}.npy"
                    w.ask(f"logits {path}")
                    logits[w.name] = np.load(path)
        finally:
            for w in workers:
                w.close()
    finally:
        if temp is not None:
            temp.cleanup()

    keep = quiet_rounds(foreign, args.max_foreign)
    shares = [f for f in foreign if f is not None]
    load = {"foreign_cpu_share_per_round": [None if f is None else round(f, 3) for f in foreign],
            "median_foreign_cpu_share": statistics.median(shares) if shares else None,
            "max_foreign": args.max_foreign, "rounds_used": len(keep), "rounds_quiet": len(keep) < len(foreign)}
    if len(keep) == len(foreign) and shares and max(shares) > args.max_foreign:
        notes.append(f"the machine was busy: other processes used a median {load['median_foreign_cpu_share']:.0%} "
                     f"of the CPU per round (max {max(shares):.0%}); too few quiet rounds, so every round is used "
                     "and absolute times are inflated")
    elif len(keep) < len(foreign):
        notes.append(f"{len(foreign) - len(keep)} of {len(foreign)} rounds left out: other processes used more than "
                     f"{args.max_foreign:.0%} of the CPU during them")
    latency = summarize(times, keep)
    ops = gemm_ops()
    scale = ops["total_gop"] / ops["linear_gop"]  # the floor models run the weight GEMMs only
    floor = {**ops, "counted": "6 layers x (QKV 768x2304 + out 768x768 + FFN 768x3072 + 3072x768) x 2 x 128 ops, "
                               "plus Q.K^T and P.V (2 x 128 x 128 x 768 MACs a layer) at the same rate; "
                               "classifier head left out",
             "int8_gops": ops["linear_gop"] / latency["floor int8 gemms"]["median_ms"] * 1e3,
             "fp32_gops": ops["linear_gop"] / latency["floor fp32 gemms"]["median_ms"] * 1e3,
             "int8_floor_ms": latency["floor int8 gemms"]["median_ms"] * scale,
             "fp32_floor_ms": latency["floor fp32 gemms"]["median_ms"] * scale}
    ratios = {"ours_int8_dynamic / optimum_int8": round_ratio(latency, "ours int8-dynamic", "optimum int8"),
              "ours_int8_dynamic / optimum_int8_no_sln": round_ratio(latency, "ours int8-dynamic",
                                                                     "optimum int8 no-SLN"),
              "ours_int8_dynamic / int8_floor": round_ratio(latency, "ours int8-dynamic", "floor int8 gemms", scale),
              "ours_int8_dynamic / eager": round_ratio(latency, "ours int8-dynamic", "eager fp32"),
              "ours_int8_static / optimum_int8": round_ratio(latency, "ours int8-static", "optimum int8"),
              "ours_int8_static / int8_floor": round_ratio(latency, "ours int8-static", "floor int8 gemms", scale),
              "ours_int8_static / ours_int8_dynamic": round_ratio(latency, "ours int8-static", "ours int8-dynamic"),
              "optimum_int8 / int8_floor": round_ratio(latency, "optimum int8", "floor int8 gemms", scale),
              "ours_fp32_optimized / optimum_fp32": round_ratio(latency, "ours fp32-optimized", "optimum fp32"),
              "ours_fp32_optimized / fp32_floor": round_ratio(latency, "ours fp32-optimized", "floor fp32 gemms",
                                                              scale)}
    vs_eager = {name: round_ratio(latency, name, "eager fp32") for name in latency if not name.startswith("floor")}
    ref = logits.pop("eager fp32")
    agree = {name: agreement(v, ref) for name, v in logits.items()}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine,
              "versions": tool_versions(),
              "settings": {"batch": BATCH, "seq": SEQ, "threads": THREADS, "rounds": args.rounds,
                           "runs_per_round": args.runs, "pause_s": args.pause, "warmup_runs": args.warmup,
                           "agreement_inputs": AGREEMENT_INPUTS, "workdir": args.workdir},
              "load": load,
              "model": {"dim": DIM, "layers": LAYERS, "heads": HEADS, "hidden": HIDDEN, "vocab": VOCAB, "labels": 2,
                        "weights": "random, seed 0; biases ~ N(0, 0.02), LayerNorm weight 1 + N(0, 0.05)"},
              "ours": ours, "optimum": optimum, "candidates": [r[0] for r in rows],
              "latency": latency, "floor": floor, "ratios": ratios, "ratios_vs_eager": vs_eager,
              "agreement": agree, "notes": notes}
    report["bar"] = bar_check(ratios, agree)
    return report


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default 30)")
    p.add_argument("--runs", type=int, default=10, help="inferences per candidate per round (default 10)")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 rounds x 5 runs")
    p.add_argument("--pause", type=float, default=0.05, help="seconds between hand-offs (default 0.05)")
    p.add_argument("--warmup", type=int, default=20, help="inferences each worker runs before timing (default 20)")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="leave out rounds in which other processes used more than this share of the CPU, "
                        "if enough rounds stay (default 0.10)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "onnx_int8_speed.json"))
    p.add_argument("--workdir", help="keep the models here and reuse what is already built (default: a temp dir)")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "PATH", "EXTRA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.runs = min(args.rounds, 4), min(args.runs, 5)
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(*args.worker, warmup=args.warmup)
        return
    report = run(args)
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
