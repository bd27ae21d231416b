"""report.json, report.md, report.html and the terminal table, all from one ReportData + Recommendation."""

from __future__ import annotations

from html import escape
from typing import Any

from distilforge.report import sensitivity, svg
from distilforge.report.data import FIDELITY_FLOOR, FIDELITY_LABEL, FLOOR_TEXT, ReportData, Row
from distilforge.report.recommend import Limits, Recommendation, describe

REPORT_SCHEMA_VERSION = 1
BENCH_KEYS = ("threads", "machine", "method", "floor", "notes")  # copied into report.json
PEER_KEYS = ("tool", "versions", "checkpoint", "task", "flag", "commands", "note", "comparisons")
PEER_LEGEND = ("(peer): Optimum's ONNX and optimum-intel's OpenVINO export and INT8 of the same checkpoint, validated "
               "and timed by distilforge the same way as its own artifacts, in the same run; shown for comparison, "
               "never recommended")
NO_BENCH = "Latency was not measured: no bench.json in the directory (run 'distilforge bench DIR')."

# (header, function of a row giving the cell text): shared by the Markdown, HTML and terminal tables.
COLUMNS: list[tuple[str, Any]] = [
    ("target", lambda r: r.label),
    ("MB", lambda r: _f(r.mb, ".1f")),
    ("max abs", lambda r: _f(r.max_abs, ".1e")),
    ("min cos", lambda r: _f(r.min_cosine, ".5f")),
    ("1−cos", lambda r: _f(r.cosine_gap, ".1e")),  # the main plot's y axis, before its floor
    ("agree", lambda r: _f(r.agreement, ".1%")),
    ("task", lambda r: _f(r.task, ".1f")),
    ("vs eager", lambda r: vs_eager(r.task_drop)),
]
LATENCY_COLUMNS: list[tuple[str, Any]] = [
    ("p50 ms", lambda r: _f(r.latency_p50, ".2f") if r.latency_p50 is not None else _bench_gap(r)),
    ("p90 ms", lambda r: _f(r.latency_p90, ".2f")),
    ("p99 ms", lambda r: _f(r.latency_p99, ".2f")),
    ("x eager", lambda r: _f(r.ratio_eager, ".2f")),
    ("x floor", lambda r: _f(r.ratio_floor, ".2f")),
]
TAIL_COLUMNS: list[tuple[str, Any]] = [
    ("recipe", lambda r: r.recipe or ""),
    ("status", lambda r: ("pass" if r.passed else "FAIL") + (", slower than fp32" if r.slower_than_fp32 else "")),
    ("Pareto", lambda r: "yes" if r.pareto else ""),
]


def columns(data: ReportData) -> list[tuple[str, Any]]:
    judged = [("judged on", lambda r: r.judged_on)] if any(r.judged_on for r in data.rows) else []
    # decisions that change when the texts run as one padded batch (dynamic INT8); see docs/validation.md
    batched = [("changed in a batch", lambda r: r.batch_dependence)] if any(r.batch_dependence for r in data.rows) \
        else []
    return COLUMNS + (LATENCY_COLUMNS if data.bench is not None else []) + judged + batched + TAIL_COLUMNS


def report_json(data: ReportData, rec: Recommendation, limits: Limits) -> dict[str, Any]:
    bench = data.bench
    checkpoint = data.manifest.get("checkpoint") or {}
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "sources": {"manifest": "manifest.json", "bench": "bench.json" if bench is not None else None},
        "checkpoint": {k: checkpoint.get(k) for k in ("path", "default", "head", "task")},
        "latency_measured": bench is not None,
        "bench": None if bench is None else {k: bench.get(k) for k in BENCH_KEYS},
        "quality_axis": data.quality_label,  # the task column; the main plot's y axis is fidelity_axis
        "fidelity_axis": {"quantity": "1 - min_cosine", "label": FIDELITY_LABEL, "floor": FIDELITY_FLOOR,
                          "scale": "log", "lower_is_better": True},
        "pareto_axes": ["latency_p50_ms" if bench is not None else "bytes",
                        f"1 - min_cosine (at least {FLOOR_TEXT})"],
        "limits": {"max_latency_ms": limits.max_latency_ms, "min_agreement": limits.min_agreement,
                   "max_size_mb": limits.max_size_mb},
        "reference": data.reference.to_dict() if data.reference else None,
        "rows": [r.to_dict() for r in data.rows],
        "peers": [r.to_dict() for r in data.peers],
        "peer": {k: data.peer.get(k) for k in PEER_KEYS} if data.peer else None,
        "peer_openvino": {k: data.peer_openvino.get(k) for k in PEER_KEYS if k != "comparisons"}
        if data.peer_openvino else None,
        "recommendation": rec.to_dict(),
        "sensitivity": [t.to_dict() for t in sensitivity.sensitivities(data.manifest)],
    }


def markdown(data: ReportData, rec: Recommendation, limits: Limits) -> str:
    cols = columns(data)
    lines = ["# distilforge report", "", _source_line(data), ""]
    if data.bench is None:
        lines += [NO_BENCH.replace("'", "`"), ""]
    lines += ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for row in data.rows + data.peers:
        lines.append("| " + " | ".join(_md(str(fn(row))) for _, fn in cols) + " |")
    if _reference_text(data):
        lines += ["", _reference_text(data)]
    if peer_lines(data):
        lines += ["", *[f"- {line}" for line in peer_lines(data)]]
    lines += ["", _legend_text(data)]
    lines += [f"- bench.json note: {n}" for n in _bench_notes(data)]
    lines += sensitivity.markdown_lines(data.manifest)
    lines += ["", "## Recommendation", ""]
    lines += recommendation_lines(rec, limits, bullet="- ", code="`")
    return "\n".join(lines) + "\n"


def recommendation_lines(rec: Recommendation, limits: Limits, *, bullet: str, code: str) -> list[str]:
    out = [f"Limits: {describe(limits)}.", ""]
    if rec.target:
        out.append(f"Ship {code}{rec.target}{code}: {rec.why}.")
    else:
        out.append(f"Nothing to ship: {rec.why}.")
    if rec.rejected:
        out += ["", "Rejected:"] + [f"{bullet}{code}{r.target}{code}: {r.reason}" for r in rec.rejected]
    return out


def html(data: ReportData, rec: Recommendation, limits: Limits) -> str:
    """The page: the recommendation, the main plot (latency against fidelity) with its caption, the table whose
    first column repeats the plot's marks, then the size and sequence-length plots."""
    cols = columns(data)
    head = "<th>#</th>" + "".join(f"<th>{escape(h)}</th>" for h, _ in cols)
    body = "".join(f'<tr class="{_row_class(r)}">{_mark_cell(r)}' + "".join(f"<td>{escape(str(fn(r)))}</td>"
                                                                          for _, fn in cols) + "</tr>"
                   for r in data.rows + data.peers)
    peer = "".join(f'<p class="peerline">{escape(line)}</p>' for line in peer_lines(data))
    rec_html = _recommendation_html(rec, limits)
    caption = f"<figcaption>{escape(fidelity_caption(data))}</figcaption>"
    main = f'<figure id="main-plot">{fidelity_plot(data)}{caption}</figure>'
    plots = "".join(f"<figure>{p}</figure>" for p in (size_plot(data), sequence_plot(data)))
    note = f'<p class="note">{escape(NO_BENCH)}</p>' if data.bench is None else ""
    notes = "".join(f'<p class="small">bench.json note: {escape(n)}</p>' for n in _bench_notes(data))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>distilforge report</title>"
        f"<style>{CSS}</style></head><body><h1>distilforge report</h1><p>{escape(_source_line(data))}</p>{note}"
        f"<h2>Recommendation</h2>{rec_html}{main}<h2>Artifacts</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table><p>{escape(_reference_text(data))}</p>{peer}"
        f"<p class=\"small\">{escape(_legend_text(data))}</p>{notes}{sensitivity.html_section(data.manifest)}"
        f"<h2>More plots</h2>{plots}</body></html>\n")


def _mark_cell(r: Row) -> str:
    """The row's mark as the main plot draws it: its number on its format's colour (hollow when it failed)."""
    color = svg.FAILED_COLOR if not r.passed else svg.format_color(r.target)
    style = f"border-color:{color};" + (f"color:{color}" if not r.passed or r.kind == "peer" else f"background:{color}")
    return f'<td class="mark"><span class="badge" style="{style}">{escape(r.mark)}</span></td>'


def _row_class(r: Row) -> str:
    classes = [c for c, on in (("fail", not r.passed), ("pareto", r.pareto), ("peer", r.kind == "peer")) if on]
    return " ".join(classes)


def _recommendation_html(rec: Recommendation, limits: Limits) -> str:
    out = f"<p>Limits: {escape(describe(limits))}.</p>"
    if rec.target:
        out += f'<p class="ship">Ship <code>{escape(rec.target)}</code>: {escape(rec.why)}.</p>'
    else:
        out += f'<p class="ship none">Nothing to ship: {escape(rec.why)}.</p>'
    if rec.rejected:
        items = "".join(f"<li><code>{escape(r.target)}</code>: {escape(r.reason)}</li>" for r in rec.rejected)
        out += f"<p>Rejected:</p><ul>{items}</ul>"
    return out


def plots_svg(data: ReportData) -> list[str]:
    return [fidelity_plot(data), size_plot(data), sequence_plot(data)]


def fidelity_plot(data: ReportData) -> str:
    """The main plot: latency p50 (or, without bench.json, size) against 1 - min cosine with eager on a log scale,
    one numbered marker per row (the key gives its target and task metric); the Pareto front of that plane dashed."""
    by_latency = data.bench is not None
    rows = data.rows + data.peers + ([data.reference] if data.reference is not None and by_latency else [])
    points = [svg.Point(r.label, x, r.fidelity, svg.format_color(r.target), mark=r.mark, note=_key_note(r, data),
                        pareto=r.pareto, failed=not r.passed, reference=r.kind == "reference", peer=r.kind == "peer")
              for r in rows if (x := r.latency_p50 if by_latency else r.mb) is not None and r.fidelity is not None]
    if not points:
        return svg.empty("Latency against fidelity", "nothing to plot: no artifact has both a "
                         + ("latency" if by_latency else "size") + " and a cosine with eager")
    floor_notes = [f"≤ {FLOOR_TEXT} on the y axis: closer than that", "(float32 rounding; eager itself: 0)"]
    common = {"y_label": FIDELITY_LABEL, "log_y": True, "y_floor": FIDELITY_FLOOR, "note_title": _key_note_title(data),
              "notes": floor_notes if any(p.y <= FIDELITY_FLOOR for p in points) else []}
    if by_latency:
        return svg.scatter(points, title="Latency p50 against fidelity to eager (batch 1): lower left is better",
                           x_label="latency p50 (ms)", **common)
    return svg.scatter(points, title="Size against fidelity to eager (latency not measured: run distilforge bench DIR)",
                       x_label="size on disk (MB)", **common)


def fidelity_caption(data: ReportData) -> str:
    axis = "latency p50 at batch 1" if data.bench is not None else "size on disk"
    return (f"Each marker is one artifact, numbered as in the table (E: the eager reference), coloured by format "
            "(ONNX blue, OpenVINO purple, TFLite orange, TorchScript green, ExecuTorch teal; peers are hollow "
            f"diamonds, failed artifacts hollow red). Across: {axis}. Up: further from eager: 1 − the lowest cosine "
            "similarity between its outputs and eager's over every validation case, on a log scale; a value below "
            f"{FLOOR_TEXT} (an fp32 artifact's float32 rounding; eager's own 0) is drawn at the floor. The dashed "
            "line joins the Pareto front of this plane: the passed artifacts that no other passed artifact beats on "
            "both axes. The key gives each one's task metric and its difference from eager's, which on a saturated "
            "task does not separate artifacts.")


def _key_note(r: Row, data: ReportData) -> str:
    """The main plot's key column: the task metric and its difference from eager's, or agreement without one."""
    if r.kind == "reference":
        return "-" if r.task is None else f"{r.task:.1f} (ref)"
    if data.rows and data.rows[0].task_metric:
        if r.task is None:
            return "-"
        diff = vs_eager(r.task_drop)
        return f"{r.task:.1f}" + ("" if diff in ("-", "0.0") else f" ({diff})")
    return _f(r.agreement, ".1%")


def _key_note_title(data: ReportData) -> str:
    return f"{data.quality_label.split(' (')[0]} (vs eager)" if data.rows and data.rows[0].task_metric else "agree"


def size_plot(data: ReportData) -> str:
    items = [svg.Bar(r.label, r.mb, svg.FAILED_COLOR if not r.passed else svg.format_color(r.target),
                     f"{r.mb:.1f}" + ("" if r.passed else " FAIL")) for r in data.rows + data.peers if r.mb is not None]
    return svg.bars(items, title="Size on disk per target", x_label="MB (10^6 bytes, all files of the artifact)")


def sequence_plot(data: ReportData) -> str:
    if data.bench is None:
        return svg.empty("Latency against sequence length", "latency was not measured: run distilforge bench DIR")
    rows = data.rows + data.peers + ([data.reference] if data.reference is not None else [])
    series, peers = [], 0  # colours by position in the table: the marks repeat the main plot's
    for i, r in enumerate(rows):
        pts = [(float(s), v) for s, v in r.by_sequence.items() if s.isdigit() and v is not None]
        if pts:
            dash = "" if r.kind == "reference" else ("", "6 3", "2 3")[(i // len(svg.PALETTE)) % 3]
            color = svg.ROW_COLORS["eager"] if r.kind == "reference" else svg.PALETTE[i % len(svg.PALETTE)]
            if r.kind == "peer":
                dash, color = svg.PEER_DASHES[peers % len(svg.PEER_DASHES)], svg.format_color(r.target)
                peers += 1
            label = r.label if r.passed else f"{r.label} (failed validation)"
            series.append(svg.Series(label, pts, color, dash, mark=r.mark))
    return svg.lines(series, title="Latency against sequence length (batch 1)", x_label="sequence length (tokens)",
                     y_label="latency (ms)")


def print_report(data: ReportData, rec: Recommendation, limits: Limits, *, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 200))  # keep target names whole in CI logs
    table = Table(title="distilforge report")
    for header, _ in columns(data):
        table.add_column(header, justify="left" if header in ("target", "recipe", "status", "Pareto") else "right",
                         no_wrap=header == "target")
    for row in data.rows + data.peers:
        cells = [str(fn(row)) for _, fn in columns(data)]
        cells[-2] = ("[green]pass[/]" if row.passed else "[red]FAIL[/]") + (
            " [yellow]slower than fp32[/]" if row.slower_than_fp32 else "")
        table.add_row(*cells)
    table.caption = _legend_text(data)
    console.print(table)
    if data.bench is None:
        console.print(NO_BENCH, highlight=False, markup=False)
    for line in peer_lines(data):
        console.print(line, highlight=False, markup=False)
    for line in recommendation_lines(rec, limits, bullet="  ", code=""):
        console.print(line, highlight=False, markup=False)


def peer_lines(data: ReportData) -> list[str]:
    """Ours vs the peer (bench.json's comparisons, p50 over p50 from the same rounds), or why there is no peer."""
    peer = data.peer
    lines = []
    for c in peer.get("comparisons") or []:
        failed = "" if c.get("peer_passed") else f"; {c['peer']} did not pass our validation"
        lines.append(f"Ours vs the peer: {c['ours']} / {c['peer']} = {c['ratio']:.2f}x (p50 {c['ours_p50_ms']:.2f} "
                     f"ms vs {c['peer_p50_ms']:.2f} ms, same run{failed}).")
    if peer.get("flag") and data.peers:
        lines.append(f"Peer: optimum-cli export onnx, then optimum-cli onnxruntime quantize {peer['flag']} "
                     "(the option that matches this CPU); commands in bench.json.")
    openvino = data.peer_openvino
    if openvino.get("commands"):
        static = ", then optimum-intel's OVQuantizer static INT8 on our calibration texts" \
            if len(openvino["commands"]) > 2 else ""
        lines.append(f"Peer: optimum-cli export openvino, as is and with --weight-format int8{static}; commands in "
                     "bench.json.")
    for note in dict.fromkeys(n for n in (peer.get("note"), openvino.get("note")) if n):  # --no-peer: one note
        lines.append(f"{note[:1].upper()}{note[1:]}.")
    return lines


def _bench_notes(data: ReportData) -> list[str]:
    notes = (data.bench or {}).get("notes") or []
    shown = (data.peer.get("note"), data.peer_openvino.get("note"))  # already peer lines
    return [str(n) for n in notes if n not in shown] if isinstance(notes, list) else []


def _reference_text(data: ReportData) -> str:
    ref = data.reference
    if ref is None or ref.latency_p50 is None:
        return ""
    return (f"Eager reference ({ref.target}): p50 {ref.latency_p50:.2f} ms, p90 {_f(ref.latency_p90, '.2f')} ms, "
            f"p99 {_f(ref.latency_p99, '.2f')} ms.")


def _source_line(data: ReportData) -> str:
    checkpoint = data.manifest.get("checkpoint") or {}
    text = f"From manifest.json ({len(data.rows)} artifacts, checkpoint {checkpoint.get('head', '?')}"
    text += ", built-in default model)" if checkpoint.get("default") else f" at {checkpoint.get('path', '?')})"
    if data.bench is not None:
        threads = data.bench.get("threads")
        text += f" and bench.json ({threads} thread{'s' if threads != 1 else ''})"
    return text + "."


def _legend_text(data: ReportData) -> str:
    text = (f"task: {data.quality_label if data.rows and data.rows[0].task_metric else 'none (no labelled data)'}; "
            "1−cos: 1 − min cos, the main plot's fidelity axis; "
            "vs eager: the task metric minus eager's, in points (−1.6 is a drop, +0.8 a gain); "
            "agree: argmax agreement with eager; ")
    if data.bench is not None:
        text += ("p50/p90/p99: batch-1 latency from bench.json; x eager, x floor: bench.json's ratio_eager and "
                 "ratio_floor; ")
    axis = "latency p50" if data.bench is not None else "size"
    text += (f"Pareto: no passed artifact has both lower {axis} and a lower 1 − min cosine with eager (values "
             f"below {FLOOR_TEXT} count as {FLOOR_TEXT}, as the main plot draws them).")
    return text + (f" {PEER_LEGEND}." if data.peers else "")


def _bench_gap(r: Row) -> str:
    return "-" if not r.bench_error else "n/a"


def vs_eager(task_drop: float | None) -> str:
    """The task metric's difference from eager's, signed as it reads: a 1.6-point drop is '−1.6', a gain '+0.8',
    no difference '0.0' (a real minus sign, the same in the Markdown, HTML and terminal tables)."""
    if task_drop is None:
        return "-"
    diff = round(-task_drop, 1) + 0.0  # + 0.0: no "-0.0"
    return "0.0" if diff == 0 else f"{diff:+.1f}".replace("-", "−")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
th:nth-child(2),td:nth-child(2){text-align:left}td:not(:nth-last-child(-n+3)){white-space:nowrap}
tr.fail td{color:#b00}tr.pareto td:nth-child(2){font-weight:600}tr.peer td{font-style:italic;background:#fbf7ec}
.note{background:#fff6d6;border:1px solid #e8d48a;padding:8px}.ship{font-size:15px}.none{color:#b00}
.small{font-size:12px;color:#555}figure{margin:16px 0}
svg text{font-size:11px;fill:#222;font-family:system-ui,sans-serif}svg .title{font-size:14px;font-weight:600}
svg .grid{stroke:#e6e6e6}svg .frame{fill:none;stroke:#888}
svg .front{fill:none;stroke:#000;stroke-width:1.6;stroke-dasharray:6 4}
svg .leader{stroke:#888;stroke-width:1}svg .legend{font-size:11px}svg .head{font-weight:600}svg .small{fill:#555}
svg .mark{font-weight:700;font-family:system-ui,sans-serif}svg .empty{fill:#777;font-size:13px}
figcaption{font-size:12px;color:#555;max-width:1000px}td.mark{text-align:center}
.badge{display:inline-block;min-width:16px;padding:0 3px;border:2px solid;border-radius:10px;color:#fff;font-size:11px;
font-weight:700;text-align:center;line-height:15px}tr.peer .badge{border-radius:2px;background:#fff}
"""
