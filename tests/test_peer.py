"""The peers in `distilforge bench` (Optimum's ONNX export and INT8, optimum-intel's OpenVINO export and INT8):
built from the same checkpoint, judged by our validator, timed in the same rounds, shown (never recommended) by
`report`; a missing extra or a failed step is a one-line note."""

import copy
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from distilforge.artifacts.hashing import sha256_file
from distilforge.artifacts.records import Tolerance
from distilforge.bench import BENCH_FILE, BenchSettings, bench_dir
from distilforge.bench import peer as peer_mod
from distilforge.bench import peer_openvino as ov_peer
from distilforge.cli import main
from distilforge.pipeline import build
from distilforge.pipeline.source import source_for
from distilforge.report.writer import write_report

# what this module's fixtures build is built once: one xdist worker runs the whole module (a module-scoped
# fixture is per worker process)
pytestmark = pytest.mark.xdist_group("peer")

OURS = ["onnx:fp32", "onnx:int8-dynamic", "openvino:fp32", "openvino:int8-weights"]
OPTIMUM_ROWS = {peer_mod.PEER_FP32, peer_mod.PEER_INT8}
OPENVINO_ROWS = {ov_peer.FP32, ov_peer.INT8_WEIGHTS, ov_peer.INT8_STATIC}
needs_peer = pytest.mark.skipif(not (peer_mod.peer_installed() and ov_peer.openvino_peer_installed()),
                                reason="the `peer` extra is not installed")


def test_the_quantize_option_matches_the_cpu():
    flag = peer_mod.optimum_flag
    assert flag({"avx2": True, "avx512f": True, "avx512_vnni": True}, "x86_64") == "--avx512_vnni"
    assert flag({"avx2": True, "avx512f": True, "avx512_vnni": False}, "x86_64") == "--avx512"
    assert flag({"avx2": True}, "x86_64") == "--avx2"
    assert flag({}, "aarch64") == "--arm64"


@pytest.fixture(scope="module")
def built(tiny_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("peer") / "out"
    result = build(tiny_checkpoints["seq-single"], out, targets=OURS)
    assert result.passed, result.failures
    return out


@pytest.fixture(scope="module")
def benched(built):
    """One quick bench with the peer; its bench.json as it was written."""
    result = bench_dir(built, settings=BenchSettings.quick())
    assert not result.errors
    return result.report


@needs_peer
def test_peer_rows_are_validated_by_us_and_timed_in_the_same_rounds(built, benched):
    manifest = json.loads((built / "manifest.json").read_text())
    assert [a["target"] for a in manifest["artifacts"]] == OURS  # not listed as our artifacts
    rows = {r["target"]: r for r in benched["results"]}
    assert set(rows) == {*OURS, "eager", *OPTIMUM_ROWS, *OPENVINO_ROWS}
    peer = benched["peer"]
    assert peer["note"] is None and peer["checkpoint"] == manifest["checkpoint"]["path"]
    machine = benched["machine"]
    assert peer["flag"] == peer_mod.optimum_flag(machine["flags"], machine["arch"])
    assert "export onnx --model" in peer["commands"][0] and "--task text-classification" in peer["commands"][0]
    assert f"{built.absolute()}/.staging-peer-" in peer["commands"][0]  # exact and absolute: as they ran
    assert "onnxruntime quantize --onnx_model" in peer["commands"][1] and peer["flag"] in peer["commands"][1]
    floor, eager_p50 = benched["floor"], rows["eager"]["latency_ms"]["p50"]
    tolerances = manifest["settings"]["tolerances"]
    for name, klass in ((peer_mod.PEER_FP32, "fp32"), (peer_mod.PEER_INT8, "int8")):
        r = rows[name]
        assert r["kind"] == "peer" and r["precision_class"] == klass and r["error"] is None
        p50 = r["latency_ms"]["p50"]
        assert p50 > 0 and r["ratio_eager"] == pytest.approx(p50 / eager_p50)
        assert r["ratio_floor"] == pytest.approx(p50 / floor[f"{klass}_ms"])
        assert r["load_ms"] > 0 and r["peak_rss_mb"] > 0 and r["throughput"]["16"] > 0
        v = r["validation"]
        assert v["passed"] and v["precision_class"] == klass and v["tolerance"] == tolerances[klass]
        assert v["worst"]["agreement"] == 1.0 and v["worst"]["min_cosine"] > 0.99
        model = next(m for m in peer["models"] if m["target"] == name)
        for f in model["files"]:  # the files that were timed are the ones recorded, under DIR/peer
            assert f["path"].startswith("peer/") and sha256_file(built / f["path"]) == f["sha256"]
        assert r["bytes"] == sum(f["bytes"] for f in model["files"])
    assert rows[peer_mod.PEER_FP32]["validation"]["worst"]["max_abs"] <= 1e-4
    int8 = next(c for c in peer["comparisons"] if c["peer"] == peer_mod.PEER_INT8)
    assert int8["ours"] == "onnx:int8-dynamic" and int8["peer_passed"]
    assert int8["ratio"] == pytest.approx(rows["onnx:int8-dynamic"]["latency_ms"]["p50"]
                                          / rows[peer_mod.PEER_INT8]["latency_ms"]["p50"])
    assert not list(built.glob(".staging-*"))


@needs_peer
def test_the_report_shows_peer_rows_but_never_ships_one(built, benched, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    bench = copy.deepcopy(benched)
    fastest = min(r["latency_ms"]["p50"] for r in bench["results"] if r["kind"] == "artifact")
    for r in bench["results"]:  # make the peers the fastest: they must still not be recommended
        if r["kind"] == "peer":
            r["latency_ms"] = {k: fastest / 10 for k in r["latency_ms"]}
    (out / BENCH_FILE).write_text(json.dumps(bench))
    result = write_report(out)
    report = result.report
    assert {r["target"] for r in report["peers"]} == OPTIMUM_ROWS | OPENVINO_ROWS
    assert all(r["kind"] == "peer" and not r["pareto"] for r in report["peers"])
    assert all(r["passed"] for r in report["peers"] if r["target"] != ov_peer.INT8_STATIC)
    assert result.recommendation.target in OURS
    assert not any(r.target.startswith("optimum") for r in result.recommendation.rejected)
    assert report["peer"]["comparisons"] == bench["peer"]["comparisons"]
    markdown = (out / "report.md").read_text()
    assert "| optimum:int8 (peer) |" in markdown and "Ours vs the peer: onnx:int8-dynamic / optimum:int8 = " in markdown
    assert "| optimum-intel:int8-weights (peer) |" in markdown
    assert "Ours vs the peer: openvino:fp32 / optimum-intel:fp32 = " in markdown
    assert "Peer: optimum-cli export openvino, as is and with --weight-format int8, then optimum-intel's" in markdown
    assert report["peer_openvino"]["commands"] == bench["peer_openvino"]["commands"]
    html = (out / "report.html").read_text()
    for plot_mark in ('class="point peer" data-target="optimum:int8 (peer)"', 'data-target="optimum:fp32 (peer)"'):
        assert plot_mark in html


@needs_peer
def test_the_peer_is_held_to_our_pass_rules(built, benched):
    """validate_peer applies the manifest's rules through our validator: a rule the INT8 peer cannot meet fails it,
    with a line naming it, the output, the case and the figure."""
    manifest = json.loads((built / "manifest.json").read_text())
    model = peer_mod.describe_model(built / "peer", built / "peer" / "optimum-int8", peer_mod.PEER_INT8, ["x"], 0.0)
    options = peer_mod.peer_options(manifest, threads=2)
    strict = replace(options, tolerances={**options.tolerances, "int8": Tolerance(min_cosine=0.99999999)})
    peer_mod.validate_peer(built, [model], source_for(manifest), strict, say=lambda _m: None)
    assert not model.passed
    assert any(f.startswith("optimum:int8: logits on") and "cosine" in f for f in model.entry.validation.failures)


def test_without_the_extra_bench_runs_and_says_so(built, tmp_path, monkeypatch, capsys):
    out = tmp_path / "copy"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns("peer", "peer-openvino"))
    monkeypatch.setattr(peer_mod, "peer_installed", lambda: False)
    monkeypatch.setattr(ov_peer, "openvino_peer_installed", lambda: False)
    code = main(["bench", str(out), "--quick", "--targets", "onnx:fp32"])
    assert code == 0
    printed = " ".join(capsys.readouterr().out.split())
    for note in (peer_mod.NOT_INSTALLED, ov_peer.NOT_INSTALLED):
        assert f"note: {note}" in printed and "pip install 'distilforge[peer]'" in note
    report = json.loads((out / BENCH_FILE).read_text())
    assert report["peer"]["note"] == peer_mod.NOT_INSTALLED and peer_mod.NOT_INSTALLED in report["notes"]
    assert report["peer_openvino"]["note"] == ov_peer.NOT_INSTALLED and ov_peer.NOT_INSTALLED in report["notes"]
    assert report["peer_openvino"]["tool"] == "optimum-intel" and report["peer_openvino"]["models"] == []
    assert {r["target"] for r in report["results"]} == {"onnx:fp32", "eager"}
    assert not (out / "peer").exists() and not (out / ov_peer.OPTIMUM_INTEL.folder).exists()
    write_report(out)
    markdown = (out / "report.md").read_text()
    assert "Peer rows skipped: the `peer` extra is not installed" in markdown
    assert "Optimum-intel rows skipped: optimum-intel is not installed" in markdown


@needs_peer
def test_a_failed_peer_step_is_a_note_and_leaves_no_half_built_peer(built, benched, monkeypatch):
    before = sorted(p.name for p in (built / "peer").rglob("*"))
    fail = [sys.executable, "-c", "import sys; print('noise'); sys.exit('Unable to find data type for weight')"]
    monkeypatch.setattr(peer_mod, "optimum_commands", lambda *_a: [fail, fail])
    manifest = json.loads((built / "manifest.json").read_text())
    result = peer_mod.build_peer(built, manifest, threads=2, say=lambda _m: None)
    assert not result.models
    assert result.note.startswith("peer rows skipped: optimum-cli export onnx failed (exit 1): ")
    assert result.note.endswith("Unable to find data type for weight") and "\n" not in result.note
    assert sorted(p.name for p in (built / "peer").rglob("*")) == before
    assert not list(built.glob(".staging-*"))


@needs_peer
def test_a_failed_optimum_intel_step_is_a_note_and_leaves_no_half_built_peer(built, benched, monkeypatch):
    folder = built / ov_peer.OPTIMUM_INTEL.folder
    before = sorted(p.name for p in folder.rglob("*"))
    ok = [sys.executable, "-c", "pass"]
    fail = [sys.executable, "-c", "import sys; print('noise'); sys.exit('Unsupported model type')"]
    monkeypatch.setattr(ov_peer, "openvino_commands", lambda *_a: [ok, fail, ok])  # the first one's IR is missing
    manifest = json.loads((built / "manifest.json").read_text())
    result = ov_peer.build_openvino_peer(built, manifest, threads=2, say=lambda _m: None)
    assert not result.models and result.note == (f"optimum-intel rows skipped: {ov_peer.FP32}: no openvino_model.xml "
                                                 f"and .bin in optimum-intel-fp32")
    monkeypatch.setattr(ov_peer, "describe_ir", lambda *_a: None)
    result = ov_peer.build_openvino_peer(built, manifest, threads=2, say=lambda _m: None)
    assert result.note == ("optimum-intel rows skipped: optimum-cli export openvino --weight-format int8 failed "
                           "(exit 1): Unsupported model type")
    assert sorted(p.name for p in folder.rglob("*")) == before
    assert not list(built.glob(".staging-*"))


@needs_peer
def test_optimum_intel_rows_are_validated_by_us_and_timed_in_the_same_rounds(built, benched):
    """optimum-intel's fp32, INT8 weight-only and static INT8 (calibrated on the shipped calibration text, as our
    static targets would be) are judged by the manifest's rules, timed through our OpenVINO runner, and compared
    with our openvino targets of the same precision."""
    manifest = json.loads((built / "manifest.json").read_text())
    rows = {r["target"]: r for r in benched["results"]}
    peer = benched["peer_openvino"]
    assert peer["tool"] == "optimum-intel" and peer["note"] is None and peer["versions"]["optimum-intel"]
    assert peer["checkpoint"] == manifest["checkpoint"]["path"] and peer["dir"] == "peer-openvino"
    fp32, weights, static = peer["commands"]
    assert "optimum-cli export openvino --model" in fp32 and "--task text-classification" in fp32
    assert "--weight-format int8" in weights and "--weight-format" not in fp32
    assert static.startswith("OVQuantizer(optimum.intel.OVModelForSequenceClassification.from_pretrained(")
    assert "nncf.Dataset(<128 texts of distilforge/data/calibration.txt (shipped), tokenized>)" in static
    assert peer["calibration"]["samples"] == 128
    floor, eager_p50 = benched["floor"], rows["eager"]["latency_ms"]["p50"]
    tolerances = manifest["settings"]["tolerances"]
    for name, klass in ((ov_peer.FP32, "fp32"), (ov_peer.INT8_WEIGHTS, "int8"), (ov_peer.INT8_STATIC, "int8")):
        r = rows[name]
        assert r["kind"] == "peer" and r["precision_class"] == klass and r["error"] is None
        p50 = r["latency_ms"]["p50"]
        assert p50 > 0 and r["ratio_eager"] == pytest.approx(p50 / eager_p50)
        assert r["ratio_floor"] == pytest.approx(p50 / floor[f"{klass}_ms"])
        assert "OpenVINO runner" in r["notes"][0]
        v = r["validation"]
        assert v["precision_class"] == klass and v["tolerance"] == tolerances[klass] and v["worst"]["decisions"] > 0
        model = next(m for m in peer["models"] if m["target"] == name)
        assert [f["path"].rsplit("/", 1)[-1] for f in model["files"]] == ["openvino_model.xml", "openvino_model.bin"]
        for f in model["files"]:
            assert f["path"].startswith("peer-openvino/") and sha256_file(built / f["path"]) == f["sha256"]
    assert rows[ov_peer.FP32]["validation"]["passed"] and rows[ov_peer.FP32]["validation"]["worst"]["max_abs"] <= 1e-4
    assert rows[ov_peer.INT8_WEIGHTS]["validation"]["passed"]
    pairs = {c["ours"]: c for c in benched["peer"]["comparisons"]}
    assert {k: c["peer"] for k, c in pairs.items() if k.startswith("openvino:")} == \
        {"openvino:fp32": ov_peer.FP32, "openvino:int8-weights": ov_peer.INT8_WEIGHTS}  # no static target of ours
    for ours, c in pairs.items():
        assert c["ratio"] == pytest.approx(rows[ours]["latency_ms"]["p50"] / rows[c["peer"]]["latency_ms"]["p50"])


def test_a_changed_checkpoint_is_not_given_to_optimum(tmp_path):
    from tiny import make_checkpoint

    ckpt = make_checkpoint(tmp_path, "seq-single")
    out = tmp_path / "out"
    assert build(ckpt, out, targets=["onnx:fp32"]).passed
    manifest = json.loads((out / "manifest.json").read_text())
    (Path(ckpt) / "config.json").write_text((Path(ckpt) / "config.json").read_text().replace("\n", "\n "))
    result = peer_mod.build_peer(out, manifest, threads=2, say=lambda _m: None)
    if not peer_mod.peer_installed():
        assert result.note == peer_mod.NOT_INSTALLED
        return
    assert not result.models and "config.json changed" in result.note and not (out / "peer").exists()
    result = ov_peer.build_openvino_peer(out, manifest, threads=2, say=lambda _m: None)
    if ov_peer.openvino_peer_installed():
        assert result.note.startswith("optimum-intel rows skipped: optimum-intel must run on the checkpoint our "
                                      "artifacts came from, and ") and "config.json changed" in result.note


def test_a_peer_that_cannot_run_does_not_fail_bench(tmp_path):
    from distilforge.bench import BenchResult

    rows = [{"target": "onnx:fp32", "kind": "artifact", "error": None},
            {"target": peer_mod.PEER_INT8, "kind": "peer", "error": "optimum:int8: running it failed: Fail: x"}]
    assert BenchResult(tmp_path / BENCH_FILE, {"results": rows}).errors == []
    rows[0]["error"] = "the worker failed to load it"
    assert BenchResult(tmp_path / BENCH_FILE, {"results": rows}).errors == ["onnx:fp32: the worker failed to load it"]


@needs_peer
def test_the_peer_commands_run_beside_the_build_give_the_same_models(built, benched, tmp_path):
    """`build --bench` starts the peers' commands once the build has loaded the checkpoint (PeerHeadStart:
    Optimum's, then optimum-intel's); the bench adopts their folders as DIR/peer and DIR/peer-openvino: the same
    files as the peer steps make on their own, judged the same."""
    source = source_for(json.loads((built / "manifest.json").read_text()))
    head_start = peer_mod.start_head_start(source.ckpt.info.path, source.ckpt.head.task, threads=2)
    openvino = ov_peer.start_openvino_head_start(source, after=head_start)
    out = tmp_path / "out"
    shutil.copytree(built, out, ignore=shutil.ignore_patterns(peer_mod.PEER_DIR, ov_peer.OPTIMUM_INTEL.folder,
                                                              BENCH_FILE))
    try:
        report = bench_dir(out, settings=BenchSettings.quick(), peer_head_starts=[head_start, openvino]).report
    finally:
        head_start.cancel()
        openvino.cancel()
    assert not head_start.folder.exists() and not openvino.folder.exists()
    assert f"{head_start.folder}/optimum-fp32" in report["peer"]["commands"][0]
    assert f"{openvino.folder}/optimum-intel-fp32" in report["peer_openvino"]["commands"][0]
    for key in ("peer", "peer_openvino"):
        peer, alone = report[key], benched[key]
        assert peer["note"] is None and peer["commands_ran_in"].startswith("a temporary folder while build --bench")
        for model, reference in zip(peer["models"], alone["models"], strict=True):
            assert [(f["path"], f["sha256"]) for f in model["files"]] == \
                [(f["path"], f["sha256"]) for f in reference["files"]], model["target"]
            assert model["validation"] == reference["validation"]
            for f in model["files"]:
                assert sha256_file(out / f["path"]) == f["sha256"]


@needs_peer
def test_a_cancelled_head_start_leaves_nothing_behind(built):
    source = source_for(json.loads((built / "manifest.json").read_text()))
    head_start = peer_mod.start_head_start(source.ckpt.info.path, source.ckpt.head.task, threads=2)
    head_start.cancel()  # at once: the export is still running, and is stopped
    assert not head_start.folder.exists()
    assert all(proc.poll() is not None for proc in head_start._started)


@needs_peer
def test_build_bench_runs_the_peer_beside_the_build(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    """The whole `build --bench` path, as `make demo` runs it: exit 0, the peer rows made beside the build, the
    summary's last line the wall time, and no temporary folder left."""
    import tempfile

    # A temporary folder of this test's own: other tests run beside it (xdist) and make peer folders of theirs.
    own_tmp = tmp_path / "tmp"
    own_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_tmp))
    out = tmp_path / "out"
    code = main(["build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", "onnx:fp32",
                 "--bench"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    bench = json.loads((out / BENCH_FILE).read_text())
    assert {r["target"] for r in bench["results"]} == {"eager", "onnx:fp32", *OPTIMUM_ROWS, *OPENVINO_ROWS}
    for key in ("peer", "peer_openvino"):
        assert bench[key]["commands_ran_in"].startswith("a temporary folder while build --bench"), key
    assert printed.strip().splitlines()[-1].startswith("wall time ")
    assert not list(own_tmp.glob("distilforge-peer-*"))
