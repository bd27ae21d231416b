"""The table `distilforge bench` prints, from bench.json's dict."""

from __future__ import annotations

from typing import Any

COLUMNS = ("target", "MB", "p50 ms", "p90", "p99", "x eager", "x floor", "s32", "s128", "s384",
           "seq/s b1", "b4", "b16", "load ms", "RSS MB")


def print_bench(report: dict[str, Any], *, title: str, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 150))
    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in report["results"]:
        name = label(r)
        if r.get("error"):
            table.add_row(name, _f(r["bytes"] / 1e6, ".1f"), "[red]error[/]", *["-"] * (len(COLUMNS) - 3))
            continue
        lat, seq, tp = r["latency_ms"], r["by_sequence"], r["throughput"]
        table.add_row(name, _f(r["bytes"] / 1e6, ".1f"), _f(lat["p50"], ".2f"), _f(lat["p90"], ".2f"),
                      _f(lat["p99"], ".2f"), _f(r["ratio_eager"], ".2f"), _f(r["ratio_floor"], ".2f"),
                      _f(seq["32"], ".2f"), _f(seq["128"], ".2f"), _f(seq["384"], ".2f"),
                      _f(tp["1"], ".0f"), _f(tp["4"], ".0f"), _f(tp["16"], ".0f"), _f(r["load_ms"], ".0f"),
                      _f(r["peak_rss_mb"], ".0f"))
    table.caption = _caption(report)
    console.print(table)
    for r in report["results"]:
        for note in r["notes"]:
            console.print(f"  {r['target']}: {note}", highlight=False, markup=False)
    for line in comparison_lines(report):
        console.print(f"  {line}", highlight=False, markup=False)
    for note in report.get("notes", []):
        console.print(f"  note: {note}", highlight=False, markup=False)


def label(row: dict[str, Any]) -> str:
    """A peer row is marked as such wherever rows are listed."""
    return f"{row['target']} (peer)" if row.get("kind") == "peer" else row["target"]


def comparison_lines(report: dict[str, Any]) -> list[str]:
    """"ours ÷ peer" lines from bench.json's peer section (p50 over p50, same rounds)."""
    lines = []
    for c in (report.get("peer") or {}).get("comparisons") or []:
        failed = "" if c["peer_passed"] else f" ({c['peer']} did not pass our validation)"
        lines.append(f"ours vs peer: {c['ours']} / {c['peer']} = {c['ratio']:.2f} (p50 {c['ours_p50_ms']:.2f} ms "
                     f"vs {c['peer_p50_ms']:.2f} ms){failed}")
    return lines


def _caption(report: dict[str, Any]) -> str:
    m, method, floor = report["machine"], report["method"], report.get("floor")
    flags = ", ".join(k for k, v in m.get("flags", {}).items() if v) or "none of the listed"
    lines = [f"batch 1 x seq {method['seq']}, {report['threads']} threads, {_rounds(method)}, interleaved, one "
             f"process per candidate; s32/s128/s384: p50 ms at that sequence length; seq/s at batch 1/4/16"]
    if method.get("foreign_cpu_median") is not None:
        lines.append(f"other processes used a median {method['foreign_cpu_median']:.0%} of the CPU per round")
    if floor:
        lines.append(f"floor ({floor['model_gop_1x128']:.2f} GOP at 1x{floor['seq']}): int8 "
                     f"{_f(floor['int8_gops_per_s'], '.0f')} GOP/s -> {_f(floor['int8_ms'], '.2f')} ms, fp32 "
                     f"{_f(floor['fp32_gflops_per_s'], '.0f')} GFLOP/s -> {_f(floor['fp32_ms'], '.2f')} ms")
    peer = report.get("peer") or {}
    if peer.get("models"):
        versions = peer.get("versions") or {}
        lines.append(f"peer: optimum {versions.get('optimum', '?')} / optimum-onnx "
                     f"{versions.get('optimum-onnx', '?')}: optimum-cli export onnx, then onnxruntime quantize "
                     f"{peer.get('flag')} (from the CPU flags)")
    openvino = report.get("peer_openvino") or {}
    if openvino.get("models"):
        versions = openvino.get("versions") or {}
        static = ", OVQuantizer static INT8 on our calibration texts" if len(openvino["models"]) > 2 else ""
        lines.append(f"peer: optimum-intel {versions.get('optimum-intel', '?')} / nncf {versions.get('nncf', '?')}: "
                     f"optimum-cli export openvino, and with --weight-format int8{static}")
    lines.append(f"cpu: {m.get('cpu')} ({flags})")
    return "\n".join(lines)


def _rounds(method: dict[str, Any]) -> str:
    stopping = method.get("stopping")
    if not stopping or not stopping.get("rel_error") or stopping["min_rounds"] == stopping["max_rounds"]:
        return f"{method['rounds_used']} of {method['rounds']} rounds x {method['runs_per_round']} runs"
    return (f"{method['rounds']} rounds x {method['runs_per_round']} runs (until every ratio to eager was known "
            f"within ±{stopping['rel_error']:.0%}, 95%; {stopping['min_rounds']} to {stopping['max_rounds']} rounds)")


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
