"""package_triton: a Triton model repository from one tiny build, each config.pbtxt parsed with Triton's own
protobuf definitions (tritonclient) and checked against the manifest. No Triton server runs here."""

import json
import shutil

import pytest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402
from tiny import make_checkpoint  # noqa: E402

from distilforge.artifacts.hashing import sha256_file  # noqa: E402
from distilforge.artifacts.manifest import read_manifest  # noqa: E402
from distilforge.errors import OutputDirError, UsageError  # noqa: E402
from distilforge.package import package_triton  # noqa: E402
from distilforge.package.triton import MARKER, QUEUE_DELAY_US, batching_off, triton_dims  # noqa: E402
from distilforge.targets import TARGETS  # noqa: E402

# what this module's fixtures build is built once: one xdist worker runs the whole module (a module-scoped
# fixture is per worker process)
pytestmark = pytest.mark.xdist_group("triton")

BUILT = ["onnx:fp32", "onnx:int8-dynamic", "torchscript:fp32", "openvino:fp32"]
# random tiny weights give near-tied logits: INT8 is held to "runs and stays close" (as in test_targets.py)
TINY_TOLERANCES = ["int8.min_agreement=0.5", "int8.min_cosine=0.85"]
SELECTOR = {"onnx": ("onnxruntime_onnx", ""), "openvino": ("", "openvino"), "torchscript": ("pytorch_libtorch", "")}
THREAD_KEY = {"onnx": "intra_op_thread_count", "openvino": "INFERENCE_NUM_THREADS",
              "torchscript": "INTRA_OP_THREAD_COUNT"}
TYPES = {"int64": model_config_pb2.TYPE_INT64, "int32": model_config_pb2.TYPE_INT32,
         "float32": model_config_pb2.TYPE_FP32, "float16": model_config_pb2.TYPE_FP16}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build of the QA head (two outputs, so their order matters) with the four Triton-servable targets."""
    missing = [t for t in BUILT if not TARGETS[t].installed()]
    if missing:
        pytest.skip(f"backends not installed: {', '.join(missing)}")
    import distilforge
    from distilforge.options import BuildOptions
    from distilforge.validate.tolerances import parse_overrides

    root = tmp_path_factory.mktemp("triton-build")
    result = distilforge.build(make_checkpoint(root, "qa"), root / "out", targets=BUILT,
                               options=BuildOptions(tolerances=parse_overrides(TINY_TOLERANCES)))
    assert result.manifest["passed"], result.failures
    return root / "out"


@pytest.fixture(scope="module")
def edited(built, tmp_path_factory):
    """A copy of the build whose manifest also lists a TFLite artifact and a failed target."""
    out = tmp_path_factory.mktemp("triton-edited") / "out"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = next(a for a in manifest["artifacts"] if a["target"] == "onnx:fp32")
    tflite = {**onnx, "target": "tflite:fp32", "format": "tflite"}
    failed = {**onnx, "target": "onnx:fp16", "precision": "fp16", "validation": None,
              "error": "onnx:fp16: export failed\nwith a long traceback"}
    manifest["artifacts"] += [tflite, failed]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


COMPANION_ROLES = {"config.json": "config", "distilforge.json": "card"}  # the rest: "tokenizer"


@pytest.fixture(scope="module", params=["old", "new"])
def layout(built, tmp_path_factory, request):
    """A copy of the build in the artifact-folder layout of older builds (model.onnx.data, model.xml/.bin, model
    files only, no roles) or of newer ones (model.onnx_data, openvino_model.xml/.bin, config.json, tokenizer files
    and a card beside them, every file with a role), whichever of the two the build itself writes today."""
    import onnx

    new = request.param == "new"
    out = tmp_path_factory.mktemp(f"triton-{request.param}") / "out"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        path = out / folder(entry["target"])
        data = [p for p in path.iterdir() if p.name.endswith(("_data", ".data"))]
        if data:  # external data is named inside the model: save it again under the other name
            model = onnx.load(str(path / "model.onnx"))
            data[0].unlink()
            onnx.save_model(model, str(path / "model.onnx"), save_as_external_data=True,
                            location="model.onnx_data" if new else "model.onnx.data")
        for p in [*path.glob("*.xml"), *path.glob("*.bin")]:
            p.rename(path / (("openvino_model" if new else "model") + p.suffix))
        model_files = [p for p in path.iterdir() if p.name.startswith(("model", "openvino_model"))]
        for p in set(path.iterdir()) - set(model_files):
            p.unlink()
        if new:
            for name in ("config.json", "tokenizer.json", "vocab.txt", "distilforge.json"):
                (path / name).write_text(json.dumps({"file": name, "target": entry["target"]}))
        entry["files"] = [{"path": f"{path.name}/{p.name}", "bytes": p.stat().st_size, "sha256": sha256_file(p),
                           **({"role": COMPANION_ROLES.get(p.name, "tokenizer") if p not in model_files else "model"}
                              if new else {})} for p in sorted(path.iterdir())]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return request.param, out


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def folder(target):
    return target.replace(":", "-")


def entries(out):
    return {a["target"]: a for a in read_manifest(out)["artifacts"]}


def expected_files(entry):
    """What REPO/<name>/ must hold besides config.pbtxt: {path: sha256 of the original}. The model and its weights
    go into 1/ under Triton's default names (OpenVINO's pair renamed; ONNX external data keeps the name the model
    records); companions (config, tokenizer, card) stay beside config.pbtxt."""
    expected = {}
    for f in entry["files"]:
        name = f["path"].split("/", 1)[1]
        if f.get("role") not in (None, "model", "weights"):
            pass  # a companion
        elif name.endswith((".onnx", ".xml", ".pt")):
            name = "1/model" + {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}[entry["format"]]
        elif f.get("role") or name.endswith((".onnx_data", ".data", ".bin")):
            name = "1/model.bin" if entry["format"] == "openvino" else f"1/{name}"
        expected[name] = f["sha256"]
    return expected


def snapshot(root):
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_config_matches_the_manifest(built, tmp_path):
    repo = tmp_path / "repo"
    folders = package_triton(built, repo)
    assert folders == [repo / folder(t) for t in BUILT]
    assert sorted(p.name for p in repo.iterdir()) == sorted([MARKER, *(folder(t) for t in BUILT)])
    threads = read_manifest(built)["settings"]["threads"]
    for target, entry in entries(built).items():
        fmt, batching = entry["format"], entry["format"] != "openvino"
        config = parse(repo / folder(target) / "config.pbtxt")
        assert config.name == folder(target)
        assert (config.platform, config.backend) == SELECTOR[fmt]
        assert config.max_batch_size == (32 if batching else 0)
        for tensors, specs in ((config.input, entry["inputs"]), (config.output, entry["outputs"])):
            assert [(t.name, t.data_type) for t in tensors] == [(s["name"], TYPES[s["dtype"]]) for s in specs]
            for t, s in zip(tensors, specs, strict=True):
                shape = s["shape"][1:] if batching else s["shape"]
                assert list(t.dims) == [d if isinstance(d, int) else -1 for d in shape], (target, t.name)
        # off for a model whose answers validation saw change in a padded batch (this QA head's dynamic INT8 on AVX2)
        off = batching_off(entry, "auto")
        assert config.HasField("dynamic_batching") == (batching and off is None), (target, off)
        if batching and off is None:
            assert 0 < config.dynamic_batching.max_queue_delay_microseconds == QUEUE_DELAY_US <= 1000
        assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU,
                                                                       1)]
        assert config.parameters[THREAD_KEY[fmt]].string_value == str(threads)
        written = snapshot(repo / folder(target))
        assert written.pop("config.pbtxt")
        assert written == expected_files(entry), target
        assert not any(p.is_symlink() for p in (repo / folder(target)).rglob("*"))
    assert not list(tmp_path.glob(".staging-*"))


def test_packaged_models_load_under_the_names_the_configs_give(built, tmp_path):
    """The layout and names the backends rely on, checked with the same runtimes (not Triton): ONNX Runtime finds
    the external data beside 1/model.onnx, OpenVINO finds 1/model.bin beside model.xml, and the TorchScript
    forward() takes the config's inputs as argument names and returns one tensor per config output, in order."""
    import numpy as np
    import onnxruntime
    import openvino
    import torch

    repo = tmp_path / "repo"
    package_triton(built, repo)
    for target in BUILT:
        config = parse(repo / folder(target) / "config.pbtxt")
        inputs, outputs = [t.name for t in config.input], [t.name for t in config.output]
        model = repo / folder(target) / "1" / {"onnx": "model.onnx", "openvino": "model.xml",
                                               "torchscript": "model.pt"}[target.split(":")[0]]
        if target.startswith("onnx"):
            session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            assert [i.name for i in session.get_inputs()] == inputs
            assert [o.name for o in session.get_outputs()] == outputs
        elif target.startswith("openvino"):
            ov_model = openvino.Core().read_model(str(model))
            assert [i.get_any_name() for i in ov_model.inputs] == inputs
            assert [o.get_any_name() for o in ov_model.outputs] == outputs
        else:
            module = torch.jit.load(str(model))
            assert [a.name for a in module.forward.schema.arguments[1:]] == inputs  # [0] is self
            assert not any("__" in name for name in outputs)  # else the backend reads them as <name>__<index>
            ids = torch.from_numpy(np.ones((2, 8), dtype=np.int64))
            result = module(ids, torch.ones_like(ids))
            assert len(result) == len(outputs)
            assert [r.dim() for r in result] == [len(t.dims) + 1 for t in config.output]


def test_old_and_new_artifact_folder_layouts(layout, tmp_path):
    import onnxruntime
    import openvino

    name, out = layout
    new = name == "new"
    repo = tmp_path / "repo"
    package_triton(out, repo)
    for target, entry in entries(out).items():
        written = snapshot(repo / folder(target))
        assert written.pop("config.pbtxt")
        assert written == expected_files(entry), target
        companions = {"config.json", "tokenizer.json", "vocab.txt", "distilforge.json"}
        assert set(written) - {n for n in written if n.startswith("1/")} == (companions if new else set())
    version = repo / "onnx-fp32" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "model.onnx_data" if new else "model.onnx.data"]
    assert sorted(p.name for p in (repo / "openvino-fp32" / "1").iterdir()) == ["model.bin", "model.xml"]
    onnxruntime.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert openvino.Core().read_model(str(repo / "openvino-fp32" / "1" / "model.xml")).inputs


def test_named_targets_narrow_the_repository(built, tmp_path):
    repo = tmp_path / "repo"
    assert package_triton(built, repo, targets=[" torchscript:fp32", "onnx:int8-dynamic", "onnx:int8-dynamic"]) \
        == [repo / "torchscript-fp32", repo / "onnx-int8-dynamic"]
    assert sorted(p.name for p in repo.iterdir()) == sorted([MARKER, "onnx-int8-dynamic", "torchscript-fp32"])


def test_max_batch_size_zero_keeps_the_batch_axis_in_dims(built, tmp_path):
    package_triton(built, tmp_path / "repo", targets=["onnx:fp32"], max_batch_size=0)
    config = parse(tmp_path / "repo" / "onnx-fp32" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in [*config.input, *config.output]] == [[-1, -1]] * 4


@pytest.mark.parametrize("shape, batching, dims", [
    (["batch", "sequence"], True, [-1]), (["batch", 3], True, [3]), (["batch", "sequence", 5], False, [-1, -1, 5]),
    (["batch", "choices"], True, [-1])])
def test_dims(shape, batching, dims):
    assert triton_dims(shape, batching) == dims


@pytest.mark.parametrize("target", ["tflite:fp32", "onnx:fp16", "openvino:fp16", "onnx:bogus"])
def test_a_target_that_cannot_be_served_is_refused(edited, tmp_path, target):
    with pytest.raises(UsageError) as caught:
        package_triton(edited, tmp_path / "repo", targets=["onnx:fp32", target])
    message = str(caught.value)
    assert message.startswith(f"{target}: ") and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_unnamed_targets_skip_tflite_and_failed_ones(edited, tmp_path):
    assert [p.name for p in package_triton(edited, tmp_path / "repo")] == [folder(t) for t in BUILT]


def test_a_bad_max_batch_size_is_refused(built, tmp_path):
    with pytest.raises(UsageError, match="max batch size -1"):
        package_triton(built, tmp_path / "repo", max_batch_size=-1)


def test_a_foreign_repository_is_refused(built, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty") as caught:
        package_triton(built, foreign)
    assert "\n" not in str(caught.value)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    ours = tmp_path / "ours"  # one of ours, with a model someone added by hand
    package_triton(built, ours, targets=["onnx:fp32"])
    shutil.copytree(ours / "onnx-fp32", ours / "their-model")
    before = snapshot(ours)
    with pytest.raises(UsageError, match="not empty"):
        package_triton(built, ours, targets=["onnx:fp32"])
    assert snapshot(ours) == before


def test_a_rerun_replaces_the_earlier_models(built, tmp_path):
    repo = tmp_path / "repo"
    package_triton(built, repo)
    (repo / "onnx-fp32" / "1" / "stale.onnx").write_bytes(b"old")
    package_triton(built, repo, targets=["onnx:fp32"])
    assert sorted(p.name for p in repo.iterdir()) == [MARKER, "onnx-fp32"]
    expected = {n.removeprefix("1/") for n in expected_files(entries(built)["onnx:fp32"]) if n.startswith("1/")}
    assert {p.name for p in (repo / "onnx-fp32" / "1").iterdir()} == expected
    assert json.loads((repo / MARKER).read_text())["models"] == ["onnx-fp32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_a_changed_model_file_writes_nothing(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    repo = tmp_path / "repo"
    package_triton(out, repo)
    before = snapshot(repo)
    model = out / "torchscript-fp32" / "model.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    model.write_bytes(bytes(data))
    for target in (repo, tmp_path / "new" / "repo"):
        with pytest.raises(OutputDirError) as caught:
            package_triton(out, target)
        assert "model.pt" in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(repo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "repo"]


def test_the_command_line(built, tmp_path):
    from test_bad_input import assert_one_line_error, run_cli

    repo = tmp_path / "repo"
    result = run_cli("package", str(built), "--format", "triton", "--out", str(repo), "--targets", "onnx:fp32")
    assert result.returncode == 0, result.stderr
    assert parse(repo / "onnx-fp32" / "config.pbtxt").name == "onnx-fp32"
    assert_one_line_error(run_cli("package", str(built), "--format", "triton", "--out", str(tmp_path / "other"),
                                  "--targets", "tflite:fp32"), "tflite:fp32")
    assert not (tmp_path / "other").exists()


def test_a_model_whose_answers_changed_in_a_batch_is_not_batched_by_the_server(built, tmp_path):
    """Issue 27: dynamic INT8 takes one activation scale over the whole batch, so a server batching strangers'
    requests together would give answers that depend on them. Validation counts the decisions that change
    (batch_dependence, measured on every dynamic INT8 target); the package turns the server's batching off where
    any did, and says so, unless told otherwise."""
    manifest = read_manifest(built)
    measured = {a["target"]: a["validation"]["batch_dependence"] for a in manifest["artifacts"]}
    assert measured["onnx:fp32"] is None and measured["torchscript:fp32"] is None
    record = measured["onnx:int8-dynamic"]
    assert record["texts"] > 0 and record["decisions"] >= record["texts"] and 0 <= record["changed"] <= \
        record["decisions"], record

    out = tmp_path / "out"
    shutil.copytree(built, out)
    edited = json.loads((out / "manifest.json").read_text())
    entry = next(a for a in edited["artifacts"] if a["target"] == "onnx:int8-dynamic")
    entry["validation"]["batch_dependence"] = {**record, "changed": 2}  # as the default model's did on AVX2
    (out / "manifest.json").write_text(json.dumps(edited))
    for mode, batched in (("auto", {"onnx-fp32"}), ("on", {"onnx-fp32", "onnx-int8-dynamic"}), ("off", set())):
        said: list[str] = []
        repo = tmp_path / mode
        package_triton(out, repo, targets=["onnx:fp32", "onnx:int8-dynamic"], dynamic_batching=mode, say=said.append)
        configs = {name: parse(repo / name / "config.pbtxt") for name in ("onnx-fp32", "onnx-int8-dynamic")}
        assert {n for n, c in configs.items() if c.HasField("dynamic_batching")} == batched, mode
        assert all(c.max_batch_size == 32 for c in configs.values())  # a client may still send its own batch
        text = (repo / "onnx-int8-dynamic" / "config.pbtxt").read_text()
        if mode == "auto":
            assert said == [f"onnx:int8-dynamic: dynamic batching off: 2 of {record['decisions']} decisions on real "
                            "text changed when its texts ran as one padded batch (validation.batch_dependence in "
                            "manifest.json), so an answer would depend on the requests batched with it; "
                            "--dynamic-batching on turns it on"]
            assert f"# dynamic batching off: 2 of {record['decisions']} decisions" in text
        else:
            assert said == []
    with pytest.raises(UsageError, match="dynamic batching 'sometimes'"):
        package_triton(out, tmp_path / "bad", dynamic_batching="sometimes")


def test_the_python_backend_serves_every_artifact_through_its_runner(built, tmp_path):
    """--backend python: one python-backend model per validated artifact (OpenVINO batched by the server too: the
    runner takes any batch), the model files under their own names in 1/ beside model.py and artifact.json, which
    opens the same runner validation used (tests/test_triton_server.py serves it with a real server)."""
    import numpy as np

    from distilforge.artifacts.records import ExportedArtifact
    from distilforge.package.triton_python import ARTIFACT_JSON, MODEL_PY, open_copied

    repo = tmp_path / "repo"
    assert package_triton(built, repo, backend="python") == [repo / folder(t) for t in BUILT]
    assert json.loads((repo / MARKER).read_text())["backend"] == "python"
    threads = read_manifest(built)["settings"]["threads"]
    for target, entry in entries(built).items():
        config = parse(repo / folder(target) / "config.pbtxt")
        assert (config.name, config.platform, config.backend, config.max_batch_size) == (folder(target), "",
                                                                                          "python", 32)
        for tensors, specs in ((config.input, entry["inputs"]), (config.output, entry["outputs"])):
            assert [(t.name, t.data_type, list(t.dims)) for t in tensors] == [
                (s["name"], TYPES[s["dtype"]], triton_dims(s["shape"], True)) for s in specs]
        assert config.parameters["threads"].string_value == str(threads)
        written = snapshot(repo / folder(target))
        assert written.pop("config.pbtxt") and written.pop(f"1/{ARTIFACT_JSON}")
        assert written.pop("1/model.py") == sha256_file(MODEL_PY)
        assert written == {("1/" if f.get("role") in (None, "model", "weights") else "") + f["path"].split("/", 1)[1]:
                           f["sha256"] for f in entry["files"]}, target
    ids = np.ones((2, 8), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.tril(ids)}
    for target in ("onnx:fp32", "openvino:fp32"):
        served, record = open_copied(repo / folder(target) / "1", threads)
        assert record["target"] == target
        direct = TARGETS[target].open_runner(built, ExportedArtifact.from_dict(entries(built)[target]), threads)
        for name, value in direct.run(feed).items():
            np.testing.assert_array_equal(served.run(feed)[name], value)


def test_the_python_backend_option_is_checked(built, tmp_path):
    from test_bad_input import assert_one_line_error, run_cli

    with pytest.raises(UsageError, match="backend 'grpc'"):
        package_triton(built, tmp_path / "repo", backend="grpc")
    assert_one_line_error(run_cli("package", str(built), "--format", "transformers.js", "--out",
                                  str(tmp_path / "web"), "--backend", "python"), "--backend")
    assert list(tmp_path.iterdir()) == []


def test_the_server_never_batches_past_a_programs_bound(built, tmp_path):
    """An ExecuTorch program takes at most its bound's rows (its `max_shape`): the python backend's max_batch_size
    is cut to it, so the server cannot batch requests into a batch the runtime refuses, and says so."""
    from distilforge.package.triton import batch_within_bound

    assert batch_within_bound({"details": {"max_shape": [4, 512]}}, 32) == 4
    assert batch_within_bound({"details": {"max_shape": [4, 512]}}, 2) == 2
    assert batch_within_bound({"details": {"max_shape": [4, 512]}}, 0) == 0
    assert batch_within_bound({"details": {}}, 32) == 32
    out = tmp_path / "out"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text())
    bounded = next(a for a in manifest["artifacts"] if a["target"] == "onnx:fp32")
    bounded["details"]["max_shape"] = [4, 128]  # as an ExecuTorch entry records it
    (out / "manifest.json").write_text(json.dumps(manifest))
    said = []
    package_triton(out, tmp_path / "repo", targets=["onnx:fp32", "openvino:fp32"], backend="python", say=said.append)
    assert parse(tmp_path / "repo" / folder("onnx:fp32") / "config.pbtxt").max_batch_size == 4
    assert parse(tmp_path / "repo" / folder("openvino:fp32") / "config.pbtxt").max_batch_size == 32
    assert said == ["onnx:fp32: max_batch_size 4: the program takes at most 4 rows at once (its bounds: rebuild "
                    "with a larger --executorch-max-shape for more)"]
