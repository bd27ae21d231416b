"""Reports on an output directory: the build summary table and report.json/.md/.html (write_report)."""

from distilforge.report.writer import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
