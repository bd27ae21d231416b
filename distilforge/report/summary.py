"""The summary table printed after a build or a check."""

from __future__ import annotations

from typing import Any

from distilforge.artifacts.manifest import ArtifactEntry


def summary_rows(entries: list[ArtifactEntry]) -> list[dict[str, Any]]:
    rows = []
    for e in entries:
        row: dict[str, Any] = {"target": e.artifact.target, "passed": e.passed, "mb": e.artifact.total_bytes / 1e6}
        if e.validation:
            worst = e.validation.worst()
            row.update(max_abs=worst["max_abs"], cosine=worst["min_cosine"], agreement=worst["agreement"],
                       decisions=worst["decisions"])
            if e.validation.task:
                row["task_metric"] = e.validation.task.metric
                row["task"] = e.validation.task.artifact
                row["task_reference"] = e.validation.task.reference
        row["recipe"] = kept_recipe(e.ladder)
        row["error"] = e.error
        row["reused"] = e.reused
        rows.append(row)
    return rows


def print_summary(entries: list[ArtifactEntry], *, title: str, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 140))  # keep target names whole in CI logs
    table = Table(title=title)
    for col in ("target", "MB", "max abs diff", "min cosine", "agree (n)", "task", "ref", "recipe", "status"):
        table.add_column(col, justify="left" if col in ("target", "recipe", "status") else "right")
    rows = summary_rows(entries)
    for row in rows:
        status = "[green]pass[/]" if row["passed"] else "[red]FAIL[/]"
        status += {"all": " (cached)", "export": " (re-validated)"}.get(row["reused"], "")
        table.add_row(row["target"], f"{row['mb']:.1f}", _fmt(row.get("max_abs"), ".1e"),
                      _fmt(row.get("cosine"), ".5f"), _agreement(row),
                      _fmt(row.get("task"), ".1f"), _fmt(row.get("task_reference"), ".1f"), row["recipe"] or "-",
                      status)
    metrics = sorted({r["task_metric"] for r in rows if r.get("task_metric")})
    if metrics:  # task and ref: the gated metric, which depends on the head
        table.caption = f"task, ref: {', '.join(metrics)} (points) on the labelled data"
    console.print(table)


def kept_recipe(ladder: dict[str, Any] | None) -> str | None:
    """An INT8 target's kept recipe and how far up its ladder it is, e.g. '2/3 ffn-out-float'."""
    if not ladder or not ladder.get("kept"):
        return None
    rungs = ladder.get("rungs") or [r["name"] for r in ladder["tried"]]
    return f"{rungs.index(ladder['kept']) + 1}/{len(rungs)} {ladder['kept']}"


def _agreement(row: dict[str, Any]) -> str:
    """Agreement with the number of decisions it counts, e.g. '100.0% (262)'."""
    if row.get("agreement") is None:
        return "-"
    return f"{row['agreement']:.1%} ({row['decisions']})"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_many(result: Any, *, console: Any = None) -> None:
    """build-many's summary: a row per checkpoint, and where its tasks ran (distilforge/many/run.py)."""
    from rich.console import Console
    from rich.table import Table

    from distilforge.progress import format_duration

    console = console or Console(width=max(Console().width, 140))
    table = Table(title=f"distilforge build-many -> {result.root}")
    for col in ("checkpoint", "targets", "passed", "failed", "up to date", "task time", "nodes (tasks)", "status"):
        table.add_column(col, justify="left" if col in ("checkpoint", "nodes (tasks)", "status") else "right")
    for o in result.outcomes:
        status = "[green]pass[/]" if o.ok else "[red]NOT BUILT[/]" if o.error else "[red]FAIL[/]"
        nodes = ", ".join(f"{n} ({k})" for n, k in sorted(o.nodes.items()))
        table.add_row(o.name, str(o.targets), str(o.passed), str(len(o.failed) or ("-" if o.error else 0)),
                      str(o.reused), format_duration(o.task_seconds), nodes, status)
    table.caption = (f"{len(result.nodes)} Ray node(s): "
                     + ", ".join(f"{n[:8]} {addr}" for n, addr in sorted(result.nodes.items())))
    console.print(table)
