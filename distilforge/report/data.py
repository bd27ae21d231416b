"""The figures a report shows, read from DIR/manifest.json and (if present) DIR/bench.json.

Nothing is measured or recomputed here: every number is copied from those two files. The only things
derived are MB (bytes / 1e6, as the build summary shows them), the fidelity gap (1 - min cosine), the marks
plots and the HTML table share, the Pareto front and the recommendation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.manifest import read_manifest, read_versioned_json
from distilforge.errors import OutputDirError
from distilforge.report.summary import kept_recipe

BENCH = "bench.json"
BENCH_SCHEMA_VERSION = 1
# The main plot's fidelity axis is 1 - min cosine with eager, on a log scale. An fp32 artifact differs from eager
# by float32 rounding only: its gap is 1e-15 to 1e-11 on the default model, fp16 about 1e-7, INT8 1e-4 to 1e-2.
# Gaps below this floor (and eager's own exact 0) are drawn at the floor, and the front is taken on those values.
FIDELITY_FLOOR = 1e-9
FLOOR_TEXT = "1e-9"  # FIDELITY_FLOOR as the plot's tick and the report's texts write it
FIDELITY_LABEL = "1 − min cosine with eager"
REFERENCE_MARK = "E"


@dataclass
class Row:
    """One artifact (or the eager reference) with its figures from the manifest and bench.json."""

    target: str
    kind: str  # "artifact", "reference" (eager, shown in plots only) or "peer" (Optimum's or optimum-intel's, never
    # recommended)
    precision: str | None = None
    bytes: int | None = None
    mb: float | None = None
    max_abs: float | None = None
    min_cosine: float | None = None
    cosine_gap: float | None = None  # 1 - min_cosine, as measured (eager: 0)
    agreement: float | None = None  # fraction in [0, 1]
    task_metric: str | None = None
    task: float | None = None
    task_reference: float | None = None
    task_drop: float | None = None
    latency_p50: float | None = None  # ms, batch 1, from bench.json
    latency_p90: float | None = None
    latency_p99: float | None = None
    by_sequence: dict[str, float | None] = field(default_factory=dict)
    ratio_eager: float | None = None
    ratio_floor: float | None = None
    bench_error: str | None = None
    slower_than_fp32: str | None = None  # INT8 slower than its format's fastest fp32 artifact on the CPU measured
    recipe: str | None = None  # INT8: the kept rung of its ladder, e.g. "2/3 ffn-out-float"
    # the verdict on each CPU it was judged on, e.g. "x86-avx2 pass, arm64 cortex-a76 pass (emulated)"
    judged_on: str = ""
    # dynamic INT8: decisions on real text changed by running the texts as one padded batch, e.g. "2 of 125"
    batch_dependence: str = ""
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    pareto: bool = False  # on the front of the main plot: latency p50 (or bytes) against fidelity
    mark: str = ""  # the number (eager: "E") that marks the row in report.html's plots and table

    @property
    def fidelity(self) -> float | None:
        """The main plot's quality axis: 1 - min cosine with eager, at least FIDELITY_FLOOR; lower is closer."""
        return None if self.cosine_gap is None else max(self.cosine_gap, FIDELITY_FLOOR)

    @property
    def quality(self) -> float | None:
        """The task metric when there is one, else agreement in percent (higher is better)."""
        if self.task_metric is not None:
            return self.task
        return None if self.agreement is None else self.agreement * 100

    @property
    def label(self) -> str:
        """The target as tables and plots show it: a peer row is marked."""
        return f"{self.target} (peer)" if self.kind == "peer" else self.target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReportData:
    manifest: dict[str, Any]
    bench: dict[str, Any] | None
    rows: list[Row]  # artifacts in manifest order
    reference: Row | None  # eager, from bench.json's "reference" result (or the manifest's task figure)
    peers: list[Row] = field(default_factory=list)  # bench.json's peer rows (Optimum, optimum-intel), never recommended

    @property
    def peer(self) -> dict[str, Any]:
        """bench.json's peer section (Optimum's): note, flag, commands, and every peer's comparisons ({} without
        bench.json)."""
        return (self.bench or {}).get("peer") or {}

    @property
    def peer_openvino(self) -> dict[str, Any]:
        """bench.json's optimum-intel section: note, commands, calibration ({} without it)."""
        return (self.bench or {}).get("peer_openvino") or {}

    @property
    def quality_label(self) -> str:
        """What the task column holds: the metric's name, or agreement when the rows have no task metric."""
        metrics = sorted({r.task_metric for r in self.rows if r.task_metric})
        return f"{', '.join(metrics)} (points)" if metrics else "agreement with eager (%)"


def load(out_dir: Path) -> ReportData:
    manifest = read_manifest(out_dir)
    bench = read_bench(out_dir)
    rows = [artifact_row(a) for a in manifest.get("artifacts", [])]
    reference = None
    if bench is not None:
        by_target = {r.get("target"): r for r in bench.get("results", [])}
        for row in rows:
            add_bench(row, by_target.get(row.target))
        eager = next((r for r in bench.get("results", []) if r.get("kind") == "reference"), None)
        if eager is not None:
            reference = Row(target=eager.get("target", "eager"), kind="reference", passed=True)
            add_bench(reference, eager)
            _reference_task(reference, manifest)
    mark_pareto(rows, by_latency=bench is not None)
    peers = [peer_row(r) for r in (bench or {}).get("results", []) if r.get("kind") == "peer"]
    for i, row in enumerate(rows + peers, start=1):
        row.mark = str(i)
    return ReportData(manifest=manifest, bench=bench, rows=rows, reference=reference, peers=peers)


def read_bench(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / BENCH
    if not path.is_file():
        return None
    bench = read_versioned_json(path, BENCH_SCHEMA_VERSION)
    if not isinstance(bench.get("results"), list):
        raise OutputDirError(f"{path}: no 'results' list")
    return bench


def artifact_row(a: dict[str, Any]) -> Row:
    v = a.get("validation") or {}
    worst = v.get("worst") or {}
    task = v.get("task") or {}
    failures = list(v.get("failures") or [])
    if a.get("error"):
        failures.insert(0, a["error"])
    passed = a.get("error") is None and bool(v.get("passed"))
    if not passed and not failures:
        failures = ["not validated" if not v else "validation did not pass"]
    size, cosine = a.get("bytes"), worst.get("min_cosine")
    return Row(target=a["target"], kind="artifact", precision=v.get("precision_class") or a.get("precision"),
               bytes=size, mb=None if size is None else size / 1e6, max_abs=worst.get("max_abs"),
               min_cosine=cosine, cosine_gap=None if cosine is None else 1.0 - cosine, agreement=worst.get("agreement"),
               task_metric=task.get("metric"), task=task.get("artifact"), task_reference=task.get("reference"),
               task_drop=task.get("drop"), passed=passed, failures=failures, recipe=kept_recipe(a.get("ladder")),
               judged_on=judged_on(a.get("validated_on")), batch_dependence=batched(v.get("batch_dependence")))


def batched(record: dict[str, int] | None) -> str:
    """'none of 125' or '2 of 125': decisions that changed when the texts ran in one padded batch."""
    if not record:
        return ""
    changed = "none" if not record["changed"] else str(record["changed"])
    return f"{changed} of {record['decisions']}"


def judged_on(validated_on: list[dict[str, Any]] | dict[str, Any] | None) -> str:
    """One verdict per CPU an artifact was judged on ("" when only on the build machine)."""
    if not isinstance(validated_on, list) or len(validated_on) < 2:
        return ""
    words = {True: "pass", False: "FAIL", None: "not run"}
    return ", ".join(f"{v.get('spec') or v.get('cpu_class')} {words[v.get('passed')]}"
                     + (" (emulated)" if v.get("emulated") else "") for v in validated_on)


def peer_row(result: dict[str, Any]) -> Row:
    """A peer's bench.json result (it carries its own validation summary) as a row; never on the Pareto front."""
    record = {"target": result["target"], "bytes": result.get("bytes"), "validation": result.get("validation"),
              "precision": result.get("precision_class"), "error": None}
    row = artifact_row(record)
    row.kind = "peer"
    add_bench(row, result)
    return row


def add_bench(row: Row, result: dict[str, Any] | None) -> None:
    """Copy one bench.json result onto a row; a missing result or one with an error leaves latency empty."""
    if result is None:
        row.bench_error = "not in bench.json"
        return
    if result.get("error"):
        row.bench_error = str(result["error"])
        return
    latency = result.get("latency_ms") or {}
    row.latency_p50, row.latency_p90, row.latency_p99 = latency.get("p50"), latency.get("p90"), latency.get("p99")
    seqs = result.get("by_sequence") or {}
    row.by_sequence = {s: seqs[s] for s in sorted(seqs, key=_seq_key)}
    row.ratio_eager, row.ratio_floor = result.get("ratio_eager"), result.get("ratio_floor")
    slower = result.get("slower_than_fp32")
    if slower:
        row.slower_than_fp32 = f"{slower['target']} ({slower['ratio']:.2f}x its p50)"
    if row.latency_p50 is None:
        row.bench_error = "bench.json has no p50 latency"


def _seq_key(s: str) -> tuple[int, str]:
    return (int(s), s) if s.isdigit() else (1 << 30, s)


def _reference_task(reference: Row, manifest: dict[str, Any]) -> None:
    task = (manifest.get("reference") or {}).get("task") or {}
    if task.get("metric") is not None:
        reference.task_metric, reference.task = task["metric"], task.get("value")
    reference.agreement = 1.0  # eager is the reference the agreement and the cosine are measured against
    reference.min_cosine, reference.cosine_gap, reference.mark = 1.0, 0.0, REFERENCE_MARK


def mark_pareto(rows: list[Row], *, by_latency: bool) -> None:
    """Mark the artifacts that passed validation and that no other passed artifact beats on both axes of the main
    plot: lower p50 latency (or, without bench.json, fewer bytes) and lower fidelity gap (Row.fidelity, floored as
    drawn). Rows missing either figure are never on the front."""
    def cost(r: Row) -> float | None:
        return r.latency_p50 if by_latency else r.bytes

    points = [(r, (cost(r), r.fidelity)) for r in rows if r.passed and cost(r) is not None and r.fidelity is not None]
    for r in rows:
        r.pareto = False
    for r, xy in points:
        r.pareto = not any(dominates(other, xy) for o, other in points if o is not r)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Point a is no worse than b on both axes and better on one; lower is better on both (cost, fidelity gap)."""
    return a[0] <= b[0] and a[1] <= b[1] and a != b
