"""`distilforge bench`: every artifact, eager and the floor, measured in one run; a crashing worker is contained."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from distilforge.bench import BENCH_FILE, BenchSettings, bench_dir
from distilforge.cli import main
from distilforge.pipeline import build

# what this module's fixtures build is built once: one xdist worker runs the whole module (a module-scoped
# fixture is per worker process)
pytestmark = pytest.mark.xdist_group("bench")

TARGETS = ["onnx:fp32", "torchscript:fp32"]
if all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert")):
    TARGETS.append("tflite:fp32")


@pytest.fixture(scope="module")
def built(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    result = build(tiny_checkpoints["seq-single"], out, targets=TARGETS)
    assert result.passed, result.failures
    return out


def test_bench_measures_every_artifact_and_eager(built):
    result = bench_dir(built, settings=BenchSettings.quick(), peer=False)  # the peer: tests/test_peer.py
    report = json.loads((built / BENCH_FILE).read_text())
    assert report == result.report and not result.errors
    assert report["schema_version"] == 1 and report["threads"] == 2
    assert report["method"]["interleaved"] and report["method"]["process_per_candidate"]
    assert report["method"]["stopping"]["min_rounds"] == report["method"]["stopping"]["max_rounds"] == 2
    assert "flags" in report["machine"]
    rows = {r["target"]: r for r in report["results"]}
    assert set(rows) == {*TARGETS, "eager"}
    assert report["peer"]["note"] == "peer rows skipped: --no-peer" and report["peer"]["note"] in report["notes"]
    assert rows["eager"]["kind"] == "reference" and rows["eager"]["ratio_eager"] == pytest.approx(1.0)
    floor = report["floor"]
    assert floor["int8_ms"] > 0 and floor["fp32_ms"] > 0 and floor["int8_gops_per_s"] > 0
    eager_p50 = rows["eager"]["latency_ms"]["p50"]
    for r in rows.values():
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["ratio_eager"] == pytest.approx(lat["p50"] / eager_p50)
        assert r["ratio_floor"] == pytest.approx(lat["p50"] / floor["fp32_ms"])
        assert r["load_ms"] > 0 and r["peak_rss_mb"] > 0 and r["bytes"] > 0
        assert r["rounds"] == 2 and r["samples"] == 6  # --quick: 2 rounds x 3 runs, whatever the error
        low, high = r["p50_interval_ms"]
        assert low <= lat["p50"] <= high and r["p50_rel_error"] >= 0
        # on a tiny model eager can be over 10x slower than ORT: then it is time-boxed, and says so
        assert r["time_boxed"] is any(n.startswith("time-boxed") for n in r["notes"])
        assert r["by_sequence"]["32"] > 0 and r["by_sequence"]["384"] is None  # the tiny model takes 64 at most
        assert all(r["throughput"][b] > 0 for b in ("1", "4", "16"))
        assert r["seq"] == 64
    if "tflite:fp32" in rows:
        assert any("fixed shapes 1x64" in n for n in rows["tflite:fp32"]["notes"])


def test_a_crashing_worker_leaves_the_others_measured(built, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    model = out / "onnx-fp32" / "model.onnx"
    model.write_bytes(b"\x00" * model.stat().st_size)  # same size, not a model: the worker fails to load it
    code = main(["bench", str(out), "--quick", "--json", "--targets", "onnx:fp32,torchscript:fp32", "--no-peer"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert (Path(report["logs"]) / "onnx-fp32.log").is_file()  # the failed worker's traceback is kept
    shutil.rmtree(report["logs"])
    rows = {r["target"]: r for r in report["results"]}
    assert set(rows) == {"onnx:fp32", "torchscript:fp32", "eager"}
    assert rows["onnx:fp32"]["error"] and rows["onnx:fp32"]["latency_ms"] is None
    assert any("has changed" in n for n in rows["onnx:fp32"]["notes"])
    assert rows["torchscript:fp32"]["latency_ms"]["p50"] > 0 and rows["eager"]["latency_ms"]["p50"] > 0
    assert json.loads((out / BENCH_FILE).read_text())["results"][0]["target"] == "eager"


def test_bench_without_manifest_is_a_one_line_usage_error(tmp_path, capfd):
    assert main(["bench", str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert "manifest.json: not found" in err and len(err.strip().splitlines()) == 1
