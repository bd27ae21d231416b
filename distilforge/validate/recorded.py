"""Recorded figures against fresh ones: `distilforge validate` measures every artifact again and
reports where the manifest's numbers are not what the artifact gives now (an edited manifest, or an
artifact swapped for another that happens to pass)."""

from __future__ import annotations

from typing import Any

from distilforge.artifacts.records import ValidationResult

# How far a fresh figure may move from the recorded one without being called a mismatch. At the
# build's thread count validation is deterministic (tests/test_determinism.py: same manifest bytes),
# so the figures must match exactly; a different --threads changes summation order, hence SLACK.
EXACT = {"max_abs": (1e-12, 0.0), "mean_abs": (1e-12, 0.0), "min_cosine": (1e-12, 0.0), "agreement": (1e-12, 0.0)}
SLACK = {"max_abs": (1e-6, 0.1), "mean_abs": (1e-6, 0.1), "min_cosine": (1e-4, 0.0), "agreement": (0.005, 0.0)}
TASK_SLACK = 0.5  # points


def figure_mismatches(target: str, recorded: dict[str, Any], fresh: ValidationResult, *,
                      same_threads: bool) -> list[str]:
    problems = []
    allowed = EXACT if same_threads else SLACK
    if recorded.get("passed") != fresh.passed:
        problems.append(f"{target}: the manifest records passed={recorded.get('passed')}, "
                        f"measured now passed={fresh.passed}")
    worst, now = recorded.get("worst") or {}, fresh.worst()
    for name, (absolute, relative) in allowed.items():
        a, b = worst.get(name), now.get(name)
        if (a is None) != (b is None) or (a is not None and abs(a - b) > absolute + relative * max(abs(a), abs(b))):
            problems.append(f"{target}: the manifest records {name} {_fmt(a)}, measured now {_fmt(b)}")
    task = recorded.get("task")
    task_slack = TASK_SLACK if not same_threads else 1e-9
    if task and fresh.task and abs(task.get("artifact", float("nan")) - fresh.task.artifact) <= task_slack:
        return problems
    if task and fresh.task:
        problems.append(f"{target}: the manifest records {task.get('metric')} {task.get('artifact')}, "
                        f"measured now {fresh.task.artifact:.2f}")
    return problems


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"
