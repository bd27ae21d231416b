"""distilforge.report.write_report on a synthetic manifest.json + bench.json (no model build)."""

from __future__ import annotations

import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from distilforge.errors import OutputDirError, UsageError
from distilforge.report.data import dominates
from distilforge.report.writer import write_report

# target: (bytes, precision class, agreement, accuracy, p50 ms, passed[, min cosine, default 0.995])
ARTIFACTS = {
    "onnx:fp32": (91_696_962, "fp32", 1.0, 97.6, 14.0, True, 1 - 1e-12),
    "onnx:int8-dynamic": (58_700_000, "int8", 1.0, 97.6, 6.0, True, 0.9975),
    "openvino:int8-weights": (23_200_000, "int8", 0.99, 96.8, 8.0, True, 0.9991),
    "tflite:int8-static": (24_100_000, "int8", 0.986, 98.4, 7.0, True, 0.9931),
    "onnx:int8-static": (77_200_000, "int8", 0.95, 94.0, 4.0, False, 0.95),
}


def artifact(target: str, size: int, precision: str, agreement: float | None, accuracy: float | None,
             passed: bool, *, error: str | None = None, cosine: float = 0.995) -> dict[str, Any]:
    """One manifest entry shaped like ArtifactEntry.to_dict() writes it."""
    folder = target.replace(":", "-")
    failures = [] if passed or error else [f"{target}: logits on random 3x16: agreement {agreement:.4f} < 0.98"]
    task = None if accuracy is None else {"metric": "accuracy", "reference": 97.6, "artifact": accuracy,
                                          "examples": 125, "extra": {}, "drop": round(97.6 - accuracy, 6)}
    validation = None if error else {
        "passed": passed, "precision_class": precision,
        "tolerance": {"max_abs": None, "min_agreement": 0.98, "min_cosine": 0.99, "max_task_drop": 1.0},
        "worst": {"max_abs": 1.5, "mean_abs": 0.1, "min_cosine": cosine, "agreement": agreement},
        "task": task, "failures": failures, "shapes_note": "validated on the dynamic shape grid",
        "cases": [{"case": "random 1x8", "shape": [1, 8], "output": "logits", "max_abs": 1.5, "mean_abs": 0.1,
                   "cosine": cosine, "agreement": agreement, "decisions": 1, "compared": 5}],
    }
    return {"target": target, "format": target.split(":")[0], "precision": precision, "runtime": "test",
            "bytes": size, "files": [{"path": f"{folder}/model.bin", "bytes": size, "sha256": "0" * 64}],
            "inputs": [], "outputs": [], "fixed_shapes": None, "details": {}, "warnings": [],
            "validation": validation, "error": error}


def manifest(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema_version": 1, "tool": "distilforge",
            "checkpoint": {"path": "/ckpt", "default": True, "head": "DistilBertForSequenceClassification",
                           "task": "text-classification"},
            "reference": {"runtime": "PyTorch eager, fp32", "task": {"metric": "accuracy", "value": 97.6,
                                                                     "examples": 125}},
            "settings": {}, "tools": {}, "machine": {}, "passed": all(a["error"] is None and a["validation"]["passed"]
                                                                      for a in artifacts),
            "artifacts": artifacts}


def bench_result(target: str, p50: float | None, *, kind: str = "artifact", error: str | None = None,
                 size: int = 0) -> dict[str, Any]:
    lat = None if p50 is None else {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3}
    return {"target": target, "kind": kind, "precision_class": "fp32", "latency_ms": lat,
            "by_sequence": None if p50 is None else {"32": p50 / 3, "128": p50, "384": p50 * 3.5},
            "throughput": {"1": 100.0, "4": 300.0, "16": 800.0}, "load_ms": 50.0, "peak_rss_mb": 300.0,
            "bytes": size, "ratio_eager": None if p50 is None else p50 / 20.0,
            "ratio_floor": None if p50 is None else p50 / 2.0, "notes": [], "error": error}


def bench(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema_version": 1, "threads": 2, "machine": {"cpu": "test"}, "method": {"batch": 1, "sequence": 128},
            "floor": {"int8_gops_per_s": 100.0, "fp32_gflops_per_s": 50.0, "model_gop_1x128": 2.8, "int8_ms": 2.0,
                      "fp32_ms": 4.0},
            "results": results, "notes": ["p99 is over 20 samples per candidate"]}


def make_dir(tmp_path: Path, *, with_bench: bool = True, specs: dict[str, tuple] = ARTIFACTS,
             extra: list[dict[str, Any]] = (), bench_results: list[dict[str, Any]] | None = None) -> Path:
    entries = [spec_artifact(t, spec) for t, spec in specs.items()] + list(extra)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest(entries)))
    if with_bench:
        results = bench_results if bench_results is not None else (
            [bench_result(t, spec[4], size=spec[0]) for t, spec in specs.items()]
            + [bench_result("eager", 20.0, kind="reference")])
        (tmp_path / "bench.json").write_text(json.dumps(bench(results)))
    return tmp_path


def spec_artifact(target: str, spec: tuple) -> dict[str, Any]:
    size, precision, agreement, accuracy, _, passed, *cosine = spec
    return artifact(target, size, precision, agreement, accuracy, passed, cosine=cosine[0] if cosine else 0.995)


def rejected(result) -> dict[str, str]:
    return {r["target"]: r["reason"] for r in result.report["recommendation"]["rejected"]}


def test_writes_three_files_with_schema(tmp_path: Path) -> None:
    result = write_report(make_dir(tmp_path))
    for name in ("report.json", "report.md", "report.html"):
        assert (tmp_path / name).is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["schema_version"] == 1 and report["latency_measured"] is True
    row = report["rows"][0]
    for key in ("target", "bytes", "mb", "max_abs", "min_cosine", "agreement", "task_metric", "task", "task_drop",
                "latency_p50", "latency_p90", "latency_p99", "ratio_eager", "ratio_floor", "passed", "pareto"):
        assert key in row
    assert row["bytes"] == 91_696_962 and row["latency_p50"] == 14.0 and row["ratio_eager"] == 14.0 / 20.0
    assert set(report["recommendation"]) >= {"target", "why", "rejected"}
    assert report == result.report
    md = (tmp_path / "report.md").read_text()
    assert "| onnx:int8-dynamic | 58.7 |" in md and "Ship `onnx:int8-dynamic`" in md
    assert "bench.json note: p99 is over 20 samples" in md
    assert row["by_sequence"] == {"32": 14.0 / 3, "128": 14.0, "384": 14.0 * 3.5}


def test_fastest_passed_artifact_is_recommended(tmp_path: Path) -> None:
    result = write_report(make_dir(tmp_path))
    rec = result.report["recommendation"]
    # onnx:int8-static is faster (4 ms) but failed validation
    assert rec["target"] == "onnx:int8-dynamic"
    assert "fastest p50 latency (6.00 ms)" in rec["why"] and "runner-up tflite:int8-static" in rec["why"]
    assert rejected(result) == {"onnx:int8-static": rejected(result)["onnx:int8-static"]}
    assert rejected(result)["onnx:int8-static"].startswith("failed validation: ")


def test_max_latency(tmp_path: Path) -> None:
    result = write_report(make_dir(tmp_path), max_latency_ms=7.5)
    assert result.recommendation.target == "onnx:int8-dynamic"
    reasons = rejected(result)
    assert reasons["onnx:fp32"] == "too slow: p50 14.00 ms > 7.5 ms"
    assert reasons["openvino:int8-weights"] == "too slow: p50 8.00 ms > 7.5 ms"
    assert "tflite:int8-static" not in reasons
    assert write_report(tmp_path, max_latency_ms=1.0).recommendation.target is None


def test_max_size(tmp_path: Path) -> None:
    result = write_report(make_dir(tmp_path), max_size_mb=30)
    assert result.recommendation.target == "tflite:int8-static"  # 7 ms beats openvino's 8 ms
    assert rejected(result)["onnx:int8-dynamic"] == "too big: 58.7 MB > 30 MB"


@pytest.mark.parametrize("value", [0.99, 99, 99.0])
def test_min_agreement_fraction_or_percent(tmp_path: Path, value: float) -> None:
    result = write_report(make_dir(tmp_path), min_agreement=value, max_size_mb=30)
    assert result.limits.min_agreement == pytest.approx(0.99)
    assert result.recommendation.target == "openvino:int8-weights"
    assert rejected(result)["tflite:int8-static"] == "agreement too low: 98.6% < 99.0%"


@pytest.mark.parametrize("value", [0, -1, 101])
def test_min_agreement_out_of_range(tmp_path: Path, value: float) -> None:
    with pytest.raises(UsageError, match="--min-agreement"):
        write_report(make_dir(tmp_path), min_agreement=value)


def test_failed_and_errored_artifacts_are_rejected_with_reason(tmp_path: Path) -> None:
    broken = artifact("tflite:fp16", 45_700_000, "fp16", None, None, False, error="tflite:fp16: converter crashed")
    out = make_dir(tmp_path, extra=[broken])
    result = write_report(out)
    reasons = rejected(result)
    assert reasons["onnx:int8-static"] == ("failed validation: onnx:int8-static: logits on random 3x16: "
                                           "agreement 0.9500 < 0.98")
    assert reasons["tflite:fp16"] == "failed validation: tflite:fp16: converter crashed"
    rows = {r["target"]: r for r in result.report["rows"]}
    assert rows["onnx:int8-static"]["passed"] is False and rows["onnx:int8-static"]["pareto"] is False
    assert "FAIL" in (out / "report.md").read_text()


def test_several_reasons_are_all_listed(tmp_path: Path) -> None:
    result = write_report(make_dir(tmp_path), max_latency_ms=5, max_size_mb=50, min_agreement=99)
    reason = rejected(result)["onnx:fp32"]
    assert "too slow" in reason and "too big" in reason and "agreement" not in reason
    # failed validation, too big (77.2 MB), agreement 95 %; not too slow (4 ms)
    assert rejected(result)["onnx:int8-static"].count("; ") == 2
    assert result.recommendation.target is None and "no artifact" in result.recommendation.why


def test_pareto_front_hand_made(tmp_path: Path) -> None:
    """The front of the main plot: lower p50 and lower 1 - min cosine (floored at 1e-9, as drawn); the task metric
    plays no part."""
    specs = {
        "a": (10, "int8", 1.0, 96.0, 10.0, True, 1 - 1e-4),   # closest INT8
        "b": (10, "int8", 1.0, 96.0, 5.0, True, 1 - 1e-2),    # fastest passed
        "c": (10, "int8", 1.0, 99.0, 12.0, True, 1 - 5e-4),   # dominated by a, though its task metric is the best
        "d": (10, "int8", 1.0, 96.0, 5.0, True, 1 - 2e-2),    # dominated by b (same speed, further)
        "e": (10, "int8", 0.9, 99.0, 1.0, False, 1 - 1e-6),   # would dominate all INT8 but failed validation
        "f": (10, "int8", 1.0, 96.0, 10.0, True, 1 - 1e-4),   # identical to a: both stay on the front
        "g": (10, "fp32", 1.0, 96.0, 20.0, True, 1 - 1e-13),  # under the floor: drawn at 1e-9, on the front
        "h": (10, "fp32", 1.0, 96.0, 25.0, True, 1 - 1e-14),  # closer than g, but both are at the floor: behind g
    }
    result = write_report(make_dir(tmp_path, specs=specs))
    pareto = {r["target"]: r["pareto"] for r in result.report["rows"]}
    assert pareto == {"a": True, "b": True, "c": False, "d": False, "e": False, "f": True, "g": True, "h": False}
    assert result.report["pareto_axes"] == ["latency_p50_ms", "1 - min_cosine (at least 1e-9)"]
    assert result.report["fidelity_axis"]["floor"] == 1e-9
    html = (tmp_path / "report.html").read_text()
    assert html.count('data-pareto="true"') == 4
    assert 'class="front" data-marks="2 1 6 7"' in html  # b, then a and f (tied), then g: in latency order
    assert "≤ 1e-9" in html  # the floor's tick says values below it are drawn there


def test_agreement_axis_without_task_metric(tmp_path: Path) -> None:
    specs = {"x": (10, "fp32", 1.0, None, 9.0, True, 1.0), "y": (10, "int8", 0.99, None, 4.0, True, 0.999),
             "z": (10, "int8", 0.98, None, 6.0, True, 0.998)}
    result = write_report(make_dir(tmp_path, specs=specs))
    assert result.report["quality_axis"] == "agreement with eager (%)"
    assert {r["target"]: r["pareto"] for r in result.report["rows"]} == {"x": True, "y": True, "z": False}
    assert [r["cosine_gap"] for r in result.report["rows"]] == pytest.approx([0.0, 1e-3, 2e-3])


def test_dominates() -> None:
    assert dominates((1, 1), (2, 2)) and dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1))
    assert not dominates((1, 2), (2, 1))


def test_signs_read_as_drop_and_gain(tmp_path: Path) -> None:
    """'vs eager' is the task metric minus eager's: a 0.8-point drop prints as −0.8, a 0.8-point gain as +0.8, in
    the Markdown, HTML and terminal tables alike."""
    from rich.console import Console

    result = write_report(make_dir(tmp_path))
    md, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    buf = io.StringIO()
    result.print(Console(file=buf, width=250))
    assert "| vs eager |" in md and "<th>vs eager</th>" in html and "vs eager" in buf.getvalue()
    assert "| 96.8 | −0.8 |" in md and "| 98.4 | +0.8 |" in md and "| 97.6 | 0.0 |" in md
    assert "<td>96.8</td><td>−0.8</td>" in html and "<td>98.4</td><td>+0.8</td>" in html
    terminal = {cells[0]: cells for line in buf.getvalue().splitlines()
                if len(cells := [c.strip() for c in line.split("│")[1:-1]]) > 8}
    assert terminal["openvino:int8-weights"][6:8] == ["96.8", "−0.8"]
    assert terminal["tflite:int8-static"][6:8] == ["98.4", "+0.8"]
    assert "+1.6" not in md and "-0.8" not in md


def test_without_bench(tmp_path: Path) -> None:
    out = make_dir(tmp_path, with_bench=False)
    result = write_report(out, max_size_mb=60)
    report = result.report
    assert report["latency_measured"] is False and report["bench"] is None
    assert all(r["latency_p50"] is None for r in report["rows"])
    assert report["recommendation"]["target"] == "openvino:int8-weights"  # smallest passed
    assert "smallest (23.2 MB)" in report["recommendation"]["why"]
    assert report["pareto_axes"][0] == "bytes"
    for name in ("report.md", "report.html"):
        assert "distilforge bench DIR" in (out / name).read_text()
    assert "p50 ms" not in (out / "report.md").read_text()
    with pytest.raises(UsageError, match="bench.json"):
        write_report(out, max_latency_ms=10)


def test_bench_error_means_not_measured(tmp_path: Path) -> None:
    results = [bench_result(t, spec[4]) for t, spec in ARTIFACTS.items() if t != "onnx:int8-dynamic"]
    results.append(bench_result("onnx:int8-dynamic", None, error="session failed to load"))
    result = write_report(make_dir(tmp_path, bench_results=results))
    assert rejected(result)["onnx:int8-dynamic"] == "latency not measured (session failed to load)"
    assert result.recommendation.target == "tflite:int8-static"


def test_bad_bench_json(tmp_path: Path) -> None:
    out = make_dir(tmp_path)
    (out / "bench.json").write_text(json.dumps({"schema_version": 7, "results": []}))
    with pytest.raises(OutputDirError, match="schema_version 7"):
        write_report(out)
    (out / "bench.json").write_text("{")
    with pytest.raises(OutputDirError, match="not valid JSON"):
        write_report(out)
    assert not (out / "report.json").exists()


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(OutputDirError, match="manifest.json"):
        write_report(tmp_path)


class _SvgCounter(HTMLParser):
    """Per <svg>: how many elements carry data-target (the plotted data points and bars)."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: list[int] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append(0)
        elif self.svgs and "data-target" in a:
            self.svgs[-1] += 1
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k in a):
            self.external.append(tag)


def test_html_is_self_contained_with_three_plots(tmp_path: Path) -> None:
    write_report(make_dir(tmp_path))
    parser = _SvgCounter()
    parser.feed((tmp_path / "report.html").read_text())
    assert len(parser.svgs) == 3 and all(n > 0 for n in parser.svgs), parser.svgs
    assert parser.external == []


def test_terminal_summary(tmp_path: Path) -> None:
    from rich.console import Console

    result = write_report(make_dir(tmp_path), max_size_mb=30)
    buf = io.StringIO()
    result.print(Console(file=buf, width=200))
    text = buf.getvalue()
    assert "onnx:int8-dynamic" in text and "Ship tflite:int8-static" in text and "too big: 58.7 MB > 30 MB" in text


def test_axis_ticks() -> None:
    from distilforge.report.scales import log_ticks, nice_ticks

    assert log_ticks(13.2, 890) == [10, 20, 50, 100, 200, 500, 1000]
    assert nice_ticks(0, 91.7) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(97.6, 97.6)[0] <= 97.6 <= nice_ticks(97.6, 97.6)[-1]


def test_a_row_takes_its_format_colour_from_the_registry() -> None:
    from distilforge.report.svg import OTHER_COLOR, ROW_COLORS, format_color
    from distilforge.targets import FORMATS

    assert all(format_color(f"{name}:fp32") == spec.color for name, spec in FORMATS.items())
    assert format_color("eager") == ROW_COLORS["eager"]
    assert format_color("optimum:int8-dynamic") == ROW_COLORS["optimum"]
    assert format_color("unknown:fp32") == OTHER_COLOR
    assert len({spec.color for spec in FORMATS.values()} | set(ROW_COLORS.values())) == len(FORMATS) + len(ROW_COLORS)


def test_an_int8_artifact_slower_than_its_fp32_sibling_is_flagged_and_never_recommended(tmp_path: Path) -> None:
    """bench.json marks it (bench.mark_slower_than_fp32); the report shows it and never picks it, even when it is
    the fastest artifact left under the limits."""
    from distilforge.bench import mark_slower_than_fp32

    results = [bench_result("onnx:fp32", 14.0, size=91_696_962), bench_result("onnx:int8-dynamic", 15.0),
               bench_result("openvino:int8-weights", 8.0), bench_result("eager", 20.0, kind="reference")]
    results[1]["precision_class"] = results[2]["precision_class"] = "int8"
    mark_slower_than_fp32(results)
    assert results[1]["slower_than_fp32"] == {"target": "onnx:fp32", "ratio": 15.0 / 14.0}
    assert "slower than onnx:fp32 on this CPU (1.07x its p50)" in results[1]["notes"][0]
    assert "slower_than_fp32" not in results[2]  # no openvino fp32 artifact to compare with: no claim
    specs = {t: ARTIFACTS[t] for t in ("onnx:fp32", "onnx:int8-dynamic", "openvino:int8-weights")}
    result = write_report(make_dir(tmp_path, specs=specs, bench_results=results), max_size_mb=60)
    assert result.recommendation.target == "openvino:int8-weights"
    assert rejected(result)["onnx:int8-dynamic"] == "INT8 slower than onnx:fp32 (1.07x its p50) on the CPU measured"
    assert "pass, slower than fp32" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["rows"][1]["slower_than_fp32"].startswith("onnx:fp32")


def test_the_sensitivity_section_names_the_kept_recipe_its_float_groups_and_what_was_skipped() -> None:
    from distilforge.report.sensitivity import TITLE, html_section, markdown_lines

    table = {"method": "eager", "inputs": "2 batches",
             "layers": [{"layer": "layer.4.ffn_in", "cost": 0.004, "worst": 0.01},
                        {"layer": "layer.4.qkv", "cost": 0.002, "worst": 0.005}]}
    ladder = {"kept": "static-same-width", "sensitivity": table,
              "tried": [{"name": "static-widening", "float_layers": []},
                        {"name": "float-top1", "float_layers": ["layer.4.ffn_in"]},
                        {"name": "static-same-width", "float_layers": [], "summary": "same-width Linears only"}],
              "skipped": [{"name": "float-top2", "after": "float-top1"}]}
    manifest = {"artifacts": [{"target": "executorch:int8-static", "ladder": ladder},
                              {"target": "onnx:fp32", "ladder": None}]}
    lines = markdown_lines(manifest)
    assert lines[1] == f"## {TITLE}" and len([line for line in lines if line.startswith("| executorch")]) == 1
    row = next(line for line in lines if line.startswith("| executorch"))
    assert "static-same-width (float-top2 on: predicted no better)" in row
    assert "by role: same-width Linears only" in row and "layer.4.ffn_in 4.0e-03" in row
    assert "float-top2 on: predicted no better" in html_section(manifest)
    assert markdown_lines({"artifacts": [{"target": "onnx:fp32", "ladder": None}]}) == []


def test_the_report_says_how_many_decisions_changed_in_a_padded_batch(tmp_path: Path) -> None:
    """Dynamic INT8 targets carry validation.batch_dependence; the table shows it for them, blank for the others,
    and has no such column when nothing measured it."""
    (tmp_path / "plain").mkdir()
    plain = write_report(make_dir(tmp_path / "plain"))
    assert "changed in a batch" not in (tmp_path / "plain" / "report.md").read_text()
    assert all(r["batch_dependence"] == "" for r in plain.report["rows"])

    entries = [spec_artifact(t, spec) for t, spec in ARTIFACTS.items()]
    for entry in entries:
        if entry["target"] == "onnx:int8-dynamic":
            entry["validation"]["batch_dependence"] = {"texts": 125, "batch": 16, "decisions": 125, "changed": 2}
        elif entry["target"] == "openvino:int8-weights":
            entry["validation"]["batch_dependence"] = {"texts": 125, "batch": 16, "decisions": 125, "changed": 0}
    out = tmp_path / "measured"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(manifest(entries)))
    rows = {r["target"]: r["batch_dependence"] for r in write_report(out).report["rows"]}
    assert rows["onnx:int8-dynamic"] == "2 of 125" and rows["openvino:int8-weights"] == "none of 125"
    assert rows["tflite:int8-static"] == ""
    md = (out / "report.md").read_text()
    assert "changed in a batch" in md and "| 2 of 125 |" in md
