"""report.html rendered in real headless Chromium: the plots are there, no text overlaps, the front is the front.

The reports are written from synthetic manifest.json + bench.json (test_report's helpers): the default model's own
figures (17 rows, a saturated task metric, near ties at the floor), a slow outlier, identical points and a report
without bench.json. Chromium lays the page out; the checks read the boxes it computed (getBoundingClientRect).
Skipped only when /usr/bin/chromium (Debian's `chromium`) or the `playwright` package that drives it is missing.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_report import artifact, bench, bench_result, manifest

from distilforge.report.data import dominates
from distilforge.report.writer import write_report

# what this module's fixtures build is built once: one xdist worker runs the whole module (a module-scoped
# fixture is per worker process)
pytestmark = pytest.mark.xdist_group("browser")

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SLACK = 0.5  # px: boxes that only touch do not overlap

# The default model's figures from a full build on the 2-core machine:
# target: (precision class, p50 ms, min cosine, accuracy, agreement, MB)
DEFAULT_MODEL = {
    "onnx:fp32": ("fp32", 62.11, 0.9999999999990256, 97.6, 1.0, 91.7),
    "onnx:fp32-optimized": ("fp32", 55.72, 0.9999999999993, 97.6, 1.0, 90.9),
    "onnx:fp16": ("fp16", 73.24, 0.9999995236016599, 97.6, 1.0, 46.3),
    "onnx:int8-dynamic": ("int8", 48.99, 0.9975116161851191, 98.4, 0.9928, 80.3),
    "onnx:int8-static": ("int8", 50.49, 0.9992033802346448, 97.6, 0.9928, 87.8),
    "torchscript:fp32": ("fp32", 90.21, 0.9999999999999953, 97.6, 1.0, 91.0),
    "torchscript:int8-dynamic": ("int8", 56.17, 0.9966157246870306, 97.6, 1.0, 23.8),
    "openvino:fp32": ("fp32", 47.94, 0.9999999999995985, 97.6, 1.0, 91.1),
    "openvino:fp16": ("fp16", 52.15, 0.9999996358129554, 97.6, 1.0, 45.7),
    "openvino:int8-weights": ("int8", 53.21, 0.9991551382627205, 97.6, 1.0, 23.2),
    "openvino:int8-static": ("int8", 60.38, 0.9949119373565793, 97.6, 0.9928, 23.4),
    "tflite:fp32": ("fp32", 46.34, 0.9999999999993187, 97.6, 1.0, 90.6),
    "tflite:fp16": ("fp16", 44.40, 0.9999998562553256, 97.6, 1.0, 45.7),
    "tflite:int8-dynamic": ("int8", 45.46, 0.9942390052881948, 97.6, 0.993, 23.8),
    "tflite:int8-static": ("int8", 44.39, 0.9931094394520484, 97.6, 1.0, 24.1),
}
PEERS = {"optimum:fp32": ("fp32", 62.32, 0.999999999999248, 97.6, 1.0, 91.0),
         "optimum:int8": ("int8", 48.28, 0.922274202168546, 97.6, 0.9493, 23.0)}


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package (which drives Chromium) is not installed: pip install playwright")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)  # a new empty profile each launch
        yield browser.new_page(viewport={"width": 1280, "height": 1000})
        browser.close()


def write_dir(out: Path, specs: dict[str, tuple], *, peers: dict[str, tuple] | None = None,
              with_bench: bool = True, reference_ms: float = 102.9) -> Path:
    """manifest.json (+ bench.json) for artifacts given as (precision, p50 ms, min cosine, accuracy, agreement, MB)."""
    entries = []
    for target, (precision, _, cosine, accuracy, agreement, mb) in specs.items():
        entry = artifact(target, int(mb * 1e6), precision, agreement, accuracy, cosine >= 0.99, cosine=cosine)
        entries.append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest(entries)))
    if with_bench:
        results = [bench_result(t, spec[1], size=int(spec[5] * 1e6)) for t, spec in specs.items()]
        results += [peer_result(t, spec) for t, spec in (peers or {}).items()]
        results.append(bench_result("eager", reference_ms, kind="reference"))
        (out / "bench.json").write_text(json.dumps(bench(results)))
    write_report(out)
    return out


def peer_result(target: str, spec: tuple) -> dict[str, Any]:
    precision, p50, cosine, accuracy, agreement, mb = spec
    result = bench_result(target, p50, kind="peer", size=int(mb * 1e6))
    result["validation"] = artifact(target, 0, precision, agreement, accuracy, cosine >= 0.99,
                                    cosine=cosine)["validation"]
    return result


def scenarios(tmp: Path) -> dict[str, Path]:
    slow = dict(DEFAULT_MODEL, **{"torchscript:int8-dynamic": ("int8", 4200.0, 0.9966, 97.6, 1.0, 23.8)})
    same = {f"onnx:int8-v{i}": ("int8", 10.0, 0.999, 97.6, 1.0, 23.0) for i in range(20)}
    folders = {"default-model": (DEFAULT_MODEL, {"peers": PEERS}), "slow-outlier": (slow, {}),
               "identical-points": (same, {}), "no-bench": (DEFAULT_MODEL, {"with_bench": False})}
    out = {}
    for name, (specs, kwargs) in folders.items():
        (tmp / name).mkdir()
        out[name] = write_dir(tmp / name, specs, **kwargs)
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    return scenarios(tmp_path_factory.mktemp("reports"))


SCENARIOS = ["default-model", "slow-outlier", "identical-points", "no-bench"]

# Per <svg>: its box, every <text> with its box, the key and legend entries, the scatter's markers and front.
READ_PLOTS = """() => [...document.querySelectorAll('svg')].map(svg => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const front = svg.querySelector('polyline.front');
  return {
    box: box(svg),
    texts: [...svg.querySelectorAll('text')].map(t => ({text: t.textContent, box: box(t)})),
    entries: [...svg.querySelectorAll('.key-entry, .legend-entry')].map(e => ({text: e.textContent, box: box(e)})),
    points: [...svg.querySelectorAll('g.point')].map(g => ({
      target: g.dataset.target, kind: g.getAttribute('class'), x: +g.dataset.x, y: +g.dataset.y,
      px: +g.dataset.px, py: +g.dataset.py, pareto: g.dataset.pareto === 'true', box: box(g)})),
    front: front ? [...front.points].map(p => [p.x, p.y]) : null,
    leaders: [...svg.querySelectorAll('line.leader')].map(l => ['x1', 'y1', 'x2', 'y2'].map(a => +l.getAttribute(a))),
    labels: [...svg.querySelectorAll('text')].map(t => t.textContent),
  };
})"""


def open_report(page, folder: Path) -> list[dict[str, Any]]:
    page.goto((folder / "report.html").as_uri())
    return page.evaluate(READ_PLOTS)


def overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] - SLACK and b[0] < a[2] - SLACK and a[1] < b[3] - SLACK and b[1] < a[3] - SLACK


def overlapping(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["text"], b["text"]) for a, b in itertools.combinations(items, 2) if overlaps(a["box"], b["box"])]


def touching_markers(points: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Scatter markers (boxes wider than the line plot's 3 px dots) closer than their radii allow."""
    marks = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, p["target"])
             for p in points if (b := p["box"])[2] - b[0] > 10]
    return [(a[3], b[3]) for a, b in itertools.combinations(marks, 2)
            if math.dist(a[:2], b[:2]) < a[2] + b[2] - SLACK]


@pytest.mark.parametrize("name", SCENARIOS)
def test_three_plots_are_drawn(page, reports, name: str) -> None:
    plots = open_report(page, reports[name])
    assert len(plots) == 3
    for plot in plots:
        left, top, right, bottom = plot["box"]
        assert right - left > 300 and bottom - top > 100, plot["labels"][:1]
    main = plots[0]
    rows = 20 if name == "identical-points" else len(DEFAULT_MODEL) + (len(PEERS) if name == "default-model" else 0)
    reference = name != "no-bench"  # eager has a latency, not a size: it is drawn only against latency
    assert len(main["points"]) == rows + reference
    assert all(right - left > 10 for left, _, right, _ in (p["box"] for p in main["points"]))


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_text_overlaps(page, reports, name: str) -> None:
    """No two texts of a plot overlap (tick labels, titles, marker numbers, key and legend rows), no two key or
    legend entries overlap, no two scatter markers overlap, and every text lies inside its plot."""
    for plot in open_report(page, reports[name]):
        title = plot["labels"][0]
        assert overlapping(plot["texts"]) == [], title
        assert overlapping(plot["entries"]) == [], title
        assert touching_markers(plot["points"]) == [], title
        left, top, right, bottom = plot["box"]
        outside = [t["text"] for t in plot["texts"]
                   if t["box"][0] < left - SLACK or t["box"][2] > right + SLACK or t["box"][1] < top - SLACK
                   or t["box"][3] > bottom + SLACK]
        assert outside == [], title


@pytest.mark.parametrize("name", SCENARIOS)
def test_front_polyline_joins_exactly_the_front(page, reports, name: str) -> None:
    """The points marked on the front are the Pareto front of the plotted values (our passed artifacts: lower x,
    lower y), and the dashed polyline runs through exactly their positions, in x order."""
    main = open_report(page, reports[name])[0]
    ours = [p for p in main["points"] if p["kind"] == "point"]  # not failed, peer or reference
    expected = {p["target"] for p in ours
                if not any(dominates((o["x"], o["y"]), (p["x"], p["y"])) for o in ours if o is not p)}
    assert {p["target"] for p in main["points"] if p["pareto"]} == expected and expected
    front = sorted((p for p in main["points"] if p["pareto"]), key=lambda p: (p["x"], p["y"]))
    assert len(main["front"]) == len(front)
    assert [c for xy in main["front"] for c in xy] == pytest.approx([c for p in front for c in (p["px"], p["py"])],
                                                                    abs=0.06)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_marker_sits_on_its_point_or_is_tied_to_it(page, reports, name: str) -> None:
    """A marker is centred on its point's position (data-px, data-py), or a leader line runs from there to it."""
    main = open_report(page, reports[name])[0]
    left, top = main["box"][:2]
    for p in main["points"]:
        b = p["box"]
        center = ((b[0] + b[2]) / 2 - left, (b[1] + b[3]) / 2 - top)
        if math.dist(center, (p["px"], p["py"])) <= 1:
            continue
        ties = [line for line in main["leaders"] if math.dist(line[:2], (p["px"], p["py"])) <= 0.1
                and math.dist(line[2:], center) <= 1]
        assert ties, (p["target"], center, (p["px"], p["py"]))


def test_default_model_plot_separates_artifacts(page, reports) -> None:
    """On the default model every artifact scores 97.6, yet the fidelity axis spreads them: fp32 at the floor,
    fp16 around 1e-7, INT8 from 1e-4 up; the key still gives the task metric; the table's marks match the plot's."""
    main = open_report(page, reports["default-model"])[0]
    by_target = {p["target"]: p for p in main["points"]}
    assert by_target["onnx:fp32"]["y"] == by_target["eager"]["y"] == 1e-9
    assert 1e-8 < by_target["tflite:fp16"]["y"] < 1e-6 < 1e-4 < by_target["onnx:int8-static"]["y"]
    assert by_target["tflite:fp16"]["py"] - by_target["tflite:int8-static"]["py"] > 150  # px apart on the page
    assert "≤ 1e-9" in main["labels"] and "98.4 (+0.8)" in main["labels"] and "accuracy (vs eager)" in main["labels"]
    assert any("(log scale)" in t for t in main["labels"])
    marks = page.evaluate("() => [...document.querySelectorAll('td.mark')].map(td => td.textContent)")
    assert marks == [str(i) for i in range(1, len(DEFAULT_MODEL) + len(PEERS) + 1)]


def test_slow_outlier_gets_log_latency_axes(page, reports) -> None:
    """One target 80x slower than the rest: the main plot's latency axis and the sequence plot's latency axis turn
    logarithmic, so the others keep their spread."""
    main, _, sequence = open_report(page, reports["slow-outlier"])
    assert "latency p50 (ms) (log scale)" in main["labels"]
    assert "latency (ms) (log scale)" in sequence["labels"]
    xs = sorted(p["px"] for p in main["points"] if p["target"] not in ("torchscript:int8-dynamic", "eager"))
    assert xs[-1] - xs[0] > 40  # 44 to 73 ms still spread over the plot
