"""Where an ExecuTorch INT8 program's time goes, against the in-run INT8 GEMM floor (issue 26).

Lowers the default model with the `all-int8` recipe (exporters/executorch.py, quantize/executorch.py), runs it
with ETDump at batch 1 x 128, 2 threads, and sums each kind of event over one inference (each event's median over
the runs): XNNPACK's int8 Linears, its other kernels, the portable kernels between its pieces, and what the
delegate calls cost beyond their kernels. Before that, in one process and in alternating rounds, it times the
program without ETDump and the floor's graph of the model's weight GEMMs (bench/floor.py: ONNX Runtime
`MatMulInteger`, as the bench runs it; a pause before each turn lets the other runtime's threads stop spinning).
Prints and saves the breakdown and the ratios program ÷ floor and XNNPACK's int8 Linears alone ÷ the floor's
weight GEMMs: the second bounds what any change to the graph can give.

usage: python benchmarks/executorch_profile.py [--rounds N] [--runs N] [--out FILE]
"""

from __future__ import annotations

import collections
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from executorch_attention import (  # noqa: E402
    THREADS,
    arguments,
    default_model,
    lower_int8,
    save,
    scratch,
    time_interleaved,
)

from distilforge.cpu import this_cpu_class  # noqa: E402

SEQ = 128


def kind_of(name: str) -> str | None:
    """An ETDump event's kind; None for the events that contain others (the whole run, each delegate call)."""
    if name in ("Method::execute", "DELEGATE_CALL", "OPERATOR_CALL", "Program::load_method", "Method::init"):
        return None
    if name.startswith("native_call_"):
        return "portable: " + name.removeprefix("native_call_").split(".")[0]
    if name.startswith("Fully Connected (NC, QD"):
        return "XNNPACK int8 Linear"
    return "XNNPACK " + name.split(" (")[0].split(" #")[0]


def profile(path: Path, feed: list[Any], runs: int) -> dict[str, Any]:
    """ETDump of `runs` inferences: ms per inference by kind (each event's median, summed)."""
    import executorch.kernels.quantized  # noqa: F401
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    module = _load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
    for _ in range(5):
        module.forward(feed)
    module.write_etdump_result_to_file(str(path) + ".warmup")  # the warm-up's events, apart (medians either way)
    for _ in range(runs):
        module.forward(feed)
    module.write_etdump_result_to_file(str(path) + ".etdp")
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.Counter()
    for block in Inspector(etdump_path=str(path) + ".etdp").event_blocks:
        for event in block.events:
            if event.perf_data is None:
                continue
            if event.name in ("Method::execute", "DELEGATE_CALL"):
                totals[event.name] += event.perf_data.p50
            kind = kind_of(event.name)
            if kind:
                totals[kind] += event.perf_data.p50
                calls[kind] += 1
    xnnpack = sum(ms for kind, ms in totals.items() if kind.startswith("XNNPACK"))
    kinds = {kind: {"ms": round(ms, 3), "calls": calls[kind]} for kind, ms in sorted(totals.items(),
                                                                                     key=lambda kv: -kv[1])
             if kind not in ("Method::execute", "DELEGATE_CALL")}
    return {"execute_ms": totals["Method::execute"], "delegate_overhead_ms": totals["DELEGATE_CALL"] - xnnpack,
            "kinds": kinds}


def floor_runner(work: Path, ckpt: Any) -> tuple[Any, Any]:
    """The floor's weight-GEMM graph (bench/floor.py) run as the bench runs it, with an `execute(feed)` for
    `time_interleaved`, and the model's operation counts."""
    from types import SimpleNamespace

    from distilforge.bench.floor import GemmRunner, GemmShape, model_ops, write_gemm_model

    shape = GemmShape.from_config(ckpt.info.config, tokens=SEQ)
    runner = GemmRunner(write_gemm_model(work / "gemms_int8.onnx", shape, "int8"), THREADS)
    return SimpleNamespace(execute=lambda feed: runner.run({})), model_ops(shape, SEQ)


def main() -> int:
    args = arguments("executorch_profile")

    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    from distilforge.exporters.executorch import wrap

    ckpt, shape = default_model()
    work = scratch("executorch_profile")
    with torch.no_grad():
        manager = lower_int8(wrap(ckpt), ckpt, shape)
    program = work / "all-int8.pte"
    program.write_bytes(bytes(manager.buffer))
    torch.set_num_threads(THREADS)
    _unsafe_reset_threadpool(THREADS)
    ids = torch.randint(1000, 20000, (1, SEQ))
    feed = [ids, torch.ones_like(ids)]
    method = Runtime.get().load_program(str(program)).load_method("forward")
    floor, ops = floor_runner(work, ckpt)
    # a pause before each turn: ONNX Runtime's threads spin for a while after a run and would steal the cores
    # of the runtime timed next
    p50 = time_interleaved({"program": method, "floor_gemms": floor}, feed, args.rounds, args.runs, pause=0.2)
    floor_ms = p50["floor_gemms"] * ops.total_gop / ops.linear_gop  # as the bench's floor: attention at that rate
    breakdown = profile(program, feed, 30)
    linear_ms = breakdown["kinds"].get("XNNPACK int8 Linear", {}).get("ms", 0.0)
    result = {"cpu_class": this_cpu_class(), "batch": 1, "seq": SEQ, "threads": THREADS, "rounds": args.rounds,
              "runs": args.runs, "recipe": "all-int8",
              "p50_ms": {"program": p50["program"], "floor_weight_gemms": p50["floor_gemms"], "floor": floor_ms},
              "program_over_floor": p50["program"] / floor_ms,
              "int8_linears_over_floor_weight_gemms": linear_ms / p50["floor_gemms"],
              "etdump": breakdown}
    print(f"program p50 {p50['program']:.2f} ms, floor {floor_ms:.2f} ms (weight GEMMs {p50['floor_gemms']:.2f} ms):"
          f" {result['program_over_floor']:.2f}x the floor")
    print(f"ETDump, one inference: {breakdown['execute_ms']:.2f} ms; delegate calls beyond their kernels "
          f"{breakdown['delegate_overhead_ms']:.2f} ms")
    for kind, row in breakdown["kinds"].items():
        print(f"  {kind:32s} {row['ms']:6.2f} ms  {row['calls']:3d} calls")
    print(f"XNNPACK's int8 Linears alone: {linear_ms:.2f} ms = "
          f"{result['int8_linears_over_floor_weight_gemms']:.2f}x the floor's weight GEMMs")
    save(result, args.out, "executorch_profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
