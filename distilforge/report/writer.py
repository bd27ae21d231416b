"""write_report: DIR/manifest.json (+ DIR/bench.json) -> DIR/report.json, report.md, report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.artifacts.layout import write_json_atomic
from distilforge.report import render
from distilforge.report.data import ReportData, load
from distilforge.report.recommend import Limits, Recommendation, make_limits, recommend

REPORT_JSON, REPORT_MD, REPORT_HTML = "report.json", "report.md", "report.html"


@dataclass
class ReportResult:
    json_path: Path
    markdown_path: Path
    html_path: Path
    data: ReportData
    recommendation: Recommendation
    limits: Limits
    report: dict[str, Any]  # what report.json holds

    @property
    def latency_measured(self) -> bool:
        return self.data.bench is not None

    def print(self, console: Any = None) -> None:
        """The table and the recommendation on the terminal (rich)."""
        render.print_report(self.data, self.recommendation, self.limits, console=console)


def write_report(out_dir: Path | str, *, max_latency_ms: float | None = None, min_agreement: float | None = None,
                 max_size_mb: float | None = None) -> ReportResult:
    """Read DIR/manifest.json and DIR/bench.json (if present) and write the three reports into DIR.

    `min_agreement` is a fraction (0.99) or a percent (99); values above 1 are read as percent.
    `max_latency_ms` needs bench.json (a UsageError otherwise). Raises OutputDirError (a UsageError) for a
    missing or unreadable manifest or bench.json; nothing is written then."""
    out = Path(out_dir)
    data = load(out)
    limits = make_limits(max_latency_ms=max_latency_ms, min_agreement=min_agreement, max_size_mb=max_size_mb,
                         have_bench=data.bench is not None)
    rec = recommend(data.rows, limits, have_bench=data.bench is not None)
    report = render.report_json(data, rec, limits)
    paths = out / REPORT_JSON, out / REPORT_MD, out / REPORT_HTML
    write_json_atomic(paths[0], report)
    _write_text(paths[1], render.markdown(data, rec, limits))
    _write_text(paths[2], render.html(data, rec, limits))
    return ReportResult(*paths, data=data, recommendation=rec, limits=limits, report=report)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
