"""Every registered target, on every tiny head: built, run through its runner, validated.

Each head is built once with every installed target (as `distilforge build` does with no
--targets), and each (head, target) pair is then its own test."""

import pytest
from conftest import installed_targets, targets_for
from tiny import TINY_MODELS

from distilforge.targets import TARGETS

# Each registered target must appear here (see test_every_target_is_tested). Random tiny
# weights give near-tied logits, so INT8 classes get the looser rules below; fp32 and fp16
# keep DESIGN.md's defaults.
TESTED_TARGETS = {"onnx:fp32", "onnx:fp32-optimized", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static",
                  "torchscript:fp32", "torchscript:int8-dynamic", "openvino:fp32", "openvino:fp16",
                  "openvino:int8-weights", "openvino:int8-static",
                  "tflite:fp32", "tflite:fp16", "tflite:int8-dynamic", "tflite:int8-static",
                  "executorch:fp32", "executorch:int8-dynamic", "executorch:int8-static"}
def test_every_target_is_tested():
    assert set(TARGETS) == TESTED_TARGETS, "add every registered target to TESTED_TARGETS"


def installed():
    return installed_targets()


@pytest.mark.parametrize("target", sorted(TESTED_TARGETS))
@pytest.mark.parametrize("tiny", TINY_MODELS, ids=lambda t: t.key)
def test_target_builds_and_validates(target, tiny, built):
    if target not in installed():
        pytest.skip(f"{target}: backend not installed")
    if target not in targets_for(tiny.key):
        pytest.skip(f"{target}: {tiny.key} exports seq-single's graph (conftest.SAME_GRAPH_AS_SEQ_SINGLE)")
    result = built(tiny.key)
    entry = next(e for e in result.manifest["artifacts"] if e["target"] == target)
    failures = [f for f in result.failures if f.startswith(target + ":")]
    assert entry["validation"] and entry["validation"]["passed"], "\n".join(failures) or entry["error"]
    assert entry["files"] and all((result.out / f["path"]).is_file() for f in entry["files"])
    shapes = {tuple(c["shape"]) for c in entry["validation"]["cases"]}
    assert len(shapes) >= (1 if entry["fixed_shapes"] else 4)


def test_torchscript_records_the_tracing_deprecation(built):
    entry = next(e for e in built("qa").manifest["artifacts"] if e["target"] == "torchscript:fp32")
    assert any("torch.jit.trace` is deprecated" in w for w in entry["warnings"]), entry["warnings"]


def test_onnx_artifact_runs_under_openvino_too(built):
    """The ONNX file is usable by a runtime other than the one that made it."""
    if not TARGETS["openvino:fp32"].installed():
        pytest.skip("openvino not installed")
    from distilforge.artifacts.records import ExportedArtifact
    from distilforge.pipeline.source import load_source
    from distilforge.validate import Reference, validate_artifact
    from distilforge.validate.inputs import validation_cases
    from distilforge.validate.runners.eager import EagerRunner
    from distilforge.validate.runners.openvino import OpenVinoRunner
    from distilforge.validate.tolerances import DEFAULT_TOLERANCES

    result = built("token")
    record = next(e for e in result.manifest["artifacts"] if e["target"] == "onnx:fp32")
    artifact = ExportedArtifact.from_dict(record)
    source = load_source(result.manifest["checkpoint"]["path"])
    runner = OpenVinoRunner(result.out / artifact.files[0].path, artifact, 2)
    cases = validation_cases(source.ckpt.info, source.ckpt.tokenizer, source.texts)
    check = validate_artifact(artifact, runner, Reference(EagerRunner(source.ckpt.model, source.ckpt.head, 2)), cases,
                              head=source.ckpt.head, tolerance=DEFAULT_TOLERANCES["fp32"], precision_class="fp32")
    assert check.passed, check.failures


def test_each_target_belongs_to_its_format_and_the_format_knows_its_options():
    """The pipeline, the CLI and predict read a format's needs from its FormatSpec (no branch on its name)."""
    from dataclasses import fields

    from distilforge.options import BuildOptions
    from distilforge.targets import FORMATS, format_settings

    assert all(FORMATS[t.format] is t.spec for t in TARGETS.values())
    names = {f.name for f in fields(BuildOptions)}
    assert all(set(spec.reads) <= names for spec in FORMATS.values())
    assert format_settings(BuildOptions(tflite_shapes=((1, 128), (2, 64)))) == {
        "onnx_opset": 18, "tflite_shapes": [[1, 128], [2, 64]], "executorch_max_shape": "default"}


def test_each_format_runs_on_the_emulated_arm64_cpu_and_under_triton_or_says_why_not():
    from distilforge.targets import FORMATS

    for spec in FORMATS.values():
        assert spec.arm64.runnable != bool(spec.arm64.why_not), spec.name
        assert bool(spec.arm64.wheels) == bool(spec.arm64.module), spec.name
        assert (spec.triton is None) == bool(spec.triton_why_not), spec.name


def test_onnx_graphs_load_without_the_slow_skip_layer_norm(built, tmp_path):
    """Every loader's ORT session (default options) runs our optimized, fp16 and INT8 graphs as written: their
    residual Adds are Sums, so SkipLayerNormFusion finds nothing to fuse (its kernel is slower than Add + LayerNorm)."""
    import onnx
    import onnxruntime as ort

    result = built("seq-single")
    checked = 0
    for entry in result.manifest["artifacts"]:
        if entry["target"] not in ("onnx:fp32-optimized", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static"):
            continue
        path = result.out / next(f["path"] for f in entry["files"] if f["path"].endswith(".onnx"))
        written = [n.op_type for n in onnx.load(str(path)).graph.node]
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{entry['target'].replace(':', '-')}.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        loaded = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
        assert written.count("Sum") == written.count("LayerNormalization") > 0, entry["target"]
        assert "SkipLayerNormalization" not in loaded, entry["target"]
        assert loaded.count("LayerNormalization") == written.count("LayerNormalization"), entry["target"]
        checked += 1
    assert checked == 4
