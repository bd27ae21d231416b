"""package_transformersjs: a Transformers.js folder from a tiny build, its layout checked here and its models run in
real Node by @huggingface/transformers's own pipeline (tests/node: the pinned package, `npm ci` from the lock by
`make test`), every dtype's labels and scores compared with distilforge.load's on the same texts."""

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from distilforge.artifacts.hashing import sha256_file
from distilforge.errors import OutputDirError, UsageError
from distilforge.package import package_transformersjs
from distilforge.package.transformersjs import DTYPES, MARKER
from distilforge.targets import TARGETS

# the module fixtures package and run Node once per head: one worker runs the whole module
pytestmark = pytest.mark.xdist_group("transformersjs")

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "run_pipeline.mjs"
NODE_VERSION = (20, 9)  # @huggingface/transformers 4 needs sharp, which needs Node >= 20.9
TASKS = {"seq-single": "text-classification", "token": "token-classification"}
TEXTS = ["the market price of bread", "who won the game", "rain and snow in the new app",
         "a big goal for the team", "what is this cloud chip xyz"]
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
ONNX_TARGETS = ("onnx:fp32", "onnx:fp32-optimized", "onnx:fp16", "onnx:int8-dynamic", "onnx:int8-static")


@dataclass
class Packaged:
    head: str
    out: Path  # the build
    folder: Path  # the package


def folder(target):
    return target.replace(":", "-")


def entries(out):
    return {a["target"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}


def passed_dtypes(out):
    """dtype -> target of every ONNX artifact that passed, as the package must hold them."""
    return {DTYPES[t]: t for t, a in entries(out).items() if t in DTYPES and a["validation"]
            and a["validation"]["passed"] and not a["error"]}


def require_passed(out, targets):
    """Skip when the onnx extra is not installed; else every one of `targets` must have passed in the session's
    build (a failure there is a failure here, not a skipped check)."""
    if not all(TARGETS[t].installed() for t in targets):
        pytest.skip("the onnx extra is not installed")
    passed = set(passed_dtypes(out).values())
    assert set(targets) <= passed, f"not passed in the session's build: {sorted(set(targets) - passed)}"


def model_name(dtype):
    return {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "q8": "model_quantized.onnx",
            "int8": "model_int8.onnx"}[dtype]


def snapshot(root):
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def copy_build(out, dst, edit=None):
    """The build's manifest and ONNX folders (all the package reads), the manifest changed by `edit`."""
    shutil.copytree(out, dst, ignore=lambda d, names: [n for n in names if Path(d) == out
                                                       and n != "manifest.json" and not n.startswith("onnx-")])
    if edit:
        manifest = json.loads((dst / "manifest.json").read_text())
        edit(manifest)
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def locations(model_path):
    import onnx
    from onnx.external_data_helper import uses_external_data

    from distilforge.package.transformersjs import all_tensors

    model = onnx.load(str(model_path), load_external_data=False)
    return {next(e.value for e in t.external_data if e.key == "location")
            for t in all_tensors(model.graph) if uses_external_data(t)}


@pytest.fixture(scope="module", params=list(TASKS))
def packaged(request, built, tmp_path_factory):
    head = request.param
    out = built(head).out
    require_passed(out, ["onnx:fp32"])
    dest = tmp_path_factory.mktemp(f"transformersjs-{head}") / "web"
    package_transformersjs(out, dest)
    return Packaged(head, out, dest)


@pytest.fixture(scope="module")
def node():
    """The node executable, with tests/node's packages installed; else the test is skipped, saying why."""
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("node not found: the Transformers.js checks need Node >= 20.9 and npm "
                    "(make test then runs npm ci in tests/node)")
    version = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    found = re.match(r"v?(\d+)\.(\d+)", version)
    if not found or tuple(map(int, found.groups())) < NODE_VERSION:
        pytest.skip(f"node {version or '(no version)'}: @huggingface/transformers needs Node >= 20.9")
    if not (NODE_DIR / "node_modules" / "@huggingface" / "transformers" / "package.json").is_file():
        pytest.skip("tests/node/node_modules has no @huggingface/transformers: run `make test` (or "
                    "`cd tests/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci`)")
    return executable


def run_node(node, package, dtypes, task, texts=TEXTS):
    """One Node process: every dtype of `dtypes` loaded by pipeline() and run on every text."""
    result = subprocess.run([node, str(SCRIPT), str(package), ",".join(dtypes), task, json.dumps(texts)],
                            capture_output=True, text=True, timeout=600, cwd=NODE_DIR)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def node_report(packaged, node):
    return run_node(node, packaged.folder, [*passed_dtypes(packaged.out), "auto"], TASKS[packaged.head])


def reference(out, target, texts=TEXTS):
    """distilforge.load's run of `target` on each text: its result, the token ids, each row's probabilities."""
    import distilforge

    predictor = distilforge.load(out, target)
    rows = []
    for text in texts:
        ids = predictor.tokenizer(text)["input_ids"]
        batch = np.array([ids], dtype=np.int64)
        logits = predictor.runner.run({"input_ids": batch, "attention_mask": np.ones_like(batch)})["logits"][0]
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        rows.append({"result": predictor(text)[0], "ids": ids, "probs": probs / probs.sum(axis=-1, keepdims=True)})
    return predictor.config["id2label"], rows


def paired_scores(task, node_results, id2label, rows):
    """Node's scores and distilforge's for the same labels and tokens; asserts the labels are the same."""
    ours, theirs = [], []
    for text, result, row in zip(TEXTS, node_results, rows, strict=True):
        if task == "text-classification":
            assert result[0]["label"] == row["result"]["label"], text
            scores = {r["label"]: r["score"] for r in result}
            ours += [scores[id2label[str(i)]] for i in range(len(row["probs"]))]
            theirs += list(row["probs"])
        else:  # every token but [CLS] and [SEP], by its index
            assert [r["index"] for r in result] == list(range(1, len(row["ids"]) - 1)), text
            for r in result:
                best = int(np.argmax(row["probs"][r["index"]]))
                assert r["entity"] == id2label[str(best)], (text, r)
                ours.append(r["score"])
                theirs.append(row["probs"][r["index"]][best])
    return np.array(ours, dtype=np.float64), np.array(theirs, dtype=np.float64)


def assert_within(tolerance, ours, theirs, what):
    """The artifact's own pass rule: its max abs diff and min cosine, those it has."""
    if tolerance.get("max_abs") is not None:
        assert np.abs(ours - theirs).max() <= tolerance["max_abs"], what
    if tolerance.get("min_cosine") is not None:
        cosine = ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs))
        assert cosine >= tolerance["min_cosine"], (what, cosine)


def assert_agrees(report, out, dtypes, task, texts=TEXTS):
    """Every dtype's Node results against distilforge.load of its target on `out`."""
    built = entries(out)
    for dtype, target in dtypes.items():
        id2label, rows = reference(out, target, texts)
        assert report["input_ids"] == [r["ids"] for r in rows]  # Transformers.js's tokenizer gives our ids
        ours, theirs = paired_scores(task, report["runs"][dtype]["results"], id2label, rows)
        assert_within(built[target]["validation"]["tolerance"], ours, theirs, f"{dtype} ({target})")


def test_the_layout_is_transformersjs_s(packaged):
    out, dest = packaged.out, packaged.folder
    dtypes = passed_dtypes(out)
    source = out / "onnx-fp32"
    companions = ["config.json", *(n for n in TOKENIZER if (source / n).is_file())]
    written = snapshot(dest)
    models = {f"onnx/{model_name(d)}" for d in dtypes} | {"onnx/model.onnx_data"}
    assert set(written) == {MARKER, *companions, *models}
    for dtype, target in dtypes.items():  # ONNX weights beside the model already had Transformers.js's name
        assert written[f"onnx/{model_name(dtype)}"] == sha256_file(out / folder(target) / "model.onnx")
    assert written["onnx/model.onnx_data"] == sha256_file(source / "model.onnx_data")
    assert locations(dest / "onnx" / "model.onnx") == {"model.onnx_data"}
    for name in companions[1:]:
        assert written[name] == sha256_file(source / name), name
    config = json.loads((dest / "config.json").read_text())
    assert config.pop("transformers.js_config") == {"use_external_data_format": {"model.onnx": 1}}
    assert config == json.loads((source / "config.json").read_text())
    marker = json.loads((dest / MARKER).read_text())
    assert marker["models"] == {f"onnx/{model_name(d)}": {"dtype": d, "target": t} for d, t in dtypes.items()}
    assert not list(dest.parent.glob(".staging-*"))


def test_node_runs_every_dtype_as_distilforge_load_does(packaged, node_report):
    dtypes = passed_dtypes(packaged.out)
    assert node_report["transformers"] == json.loads((NODE_DIR / "package.json").read_text())[
        "dependencies"]["@huggingface/transformers"]
    assert sorted(node_report["available_dtypes"]) == sorted(dtypes)
    for dtype in dtypes:
        run = node_report["runs"][dtype]
        assert run["loaded_dtype"] == dtype
        assert run["files"] == ["config.json", f"onnx/{model_name(dtype)}",
                                *(["onnx/model.onnx_data"] if dtype == "fp32" else [])]
    assert node_report["runs"]["auto"]["loaded_dtype"] == "fp32"  # Node's default, with no dtype asked
    assert_agrees(node_report, packaged.out, dtypes, TASKS[packaged.head])


def _older_build(out):
    """An older build's folders (model files only, no roles; onnx:fp32's weights as model.onnx.data), with onnx:fp16
    given external weights too (as past ONNX's 2 GB limit) under the name every folder gives them today
    (model.onnx_data): beside each other in onnx/ the two would collide."""
    import onnx

    for name, location in (("onnx-fp32", "model.onnx.data"), ("onnx-fp16", "model.onnx_data")):
        path = out / name
        model = onnx.load(str(path / "model.onnx"))
        for p in path.iterdir():
            p.unlink()
        onnx.save_model(model, str(path / "model.onnx"), save_as_external_data=True, location=location)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        path = out / folder(entry["target"])
        entry["files"] = [{"path": f"{path.name}/{p.name}", "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                          for p in sorted(path.iterdir())]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_an_older_build_with_external_data_renamed(built, node, tmp_path):
    original = built("seq-single").out
    require_passed(original, ["onnx:fp32", "onnx:fp16"])
    keep = {"onnx:fp32", "onnx:fp16"}
    out = _older_build(copy_build(original, tmp_path / "out", edit=lambda m: m.update(
        artifacts=[a for a in m["artifacts"] if a["target"] in keep])))
    for name in [p.name for p in out.iterdir() if p.is_dir() and p.name not in ("onnx-fp32", "onnx-fp16")]:
        shutil.rmtree(out / name)
    dest = tmp_path / "web"
    package_transformersjs(out, dest)
    onnx_dir = dest / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.onnx", "model.onnx_data", "model_fp16.onnx",
                                                           "model_fp16.onnx_data"]
    assert sha256_file(onnx_dir / "model.onnx_data") == sha256_file(out / "onnx-fp32" / "model.onnx.data")
    assert sha256_file(onnx_dir / "model_fp16.onnx_data") == sha256_file(out / "onnx-fp16" / "model.onnx_data")
    assert locations(onnx_dir / "model.onnx") == {"model.onnx_data"}
    assert locations(onnx_dir / "model_fp16.onnx") == {"model_fp16.onnx_data"}
    # config and tokenizer from the checkpoint the manifest names, as its record of them says
    checkpoint = Path(json.loads((out / "manifest.json").read_text())["checkpoint"]["path"])
    for name in TOKENIZER:
        assert sha256_file(dest / name) == sha256_file(checkpoint / name), name
    config = json.loads((dest / "config.json").read_text())
    # q8 (the browser's default) is not here: the config names the dtype to load by default
    assert config.pop("transformers.js_config") == {
        "use_external_data_format": {"model.onnx": 1, "model_fp16.onnx": 1}, "dtype": "fp32"}
    assert config == json.loads((checkpoint / "config.json").read_text())

    report = run_node(node, dest, ["fp32", "fp16", "auto"], "text-classification")
    assert report["runs"]["fp16"]["files"] == ["config.json", "onnx/model_fp16.onnx", "onnx/model_fp16.onnx_data"]
    assert report["runs"]["auto"]["loaded_dtype"] == "fp32"
    assert_agrees(report, original, {"fp32": "onnx:fp32", "fp16": "onnx:fp16"}, "text-classification")


def test_named_targets_and_the_default_dtype(built, tmp_path):
    out = built("seq-single").out
    require_passed(out, ["onnx:int8-dynamic"])
    dest = tmp_path / "web"
    assert package_transformersjs(out, dest, targets=[" onnx:int8-dynamic", "onnx:int8-dynamic"]) == \
        [dest / "onnx" / "model_quantized.onnx"]
    assert sorted(p.name for p in (dest / "onnx").iterdir()) == ["model_quantized.onnx"]
    config = json.loads((dest / "config.json").read_text())
    assert config["transformers.js_config"] == {"dtype": "q8"}  # no model.onnx: fp32 would not load


def test_fp32_optimized_stands_in_only_for_a_missing_fp32(built, tmp_path):
    out = built("seq-single").out
    require_passed(out, ["onnx:fp32"])
    if not TARGETS["onnx:fp32-optimized"].installed():
        pytest.skip("the onnx extra is not installed")
    assert entries(out)["onnx:fp32-optimized"]["validation"]["passed"]
    package_transformersjs(out, tmp_path / "both")
    assert json.loads((tmp_path / "both" / MARKER).read_text())["models"]["onnx/model.onnx"]["target"] == "onnx:fp32"

    def fail_fp32(manifest):
        entry = next(a for a in manifest["artifacts"] if a["target"] == "onnx:fp32")
        entry["validation"] = {**entry["validation"], "passed": False, "failures": ["onnx:fp32: max abs diff 1"]}

    edited = copy_build(out, tmp_path / "out", edit=fail_fp32)
    package_transformersjs(edited, tmp_path / "web")
    assert sha256_file(tmp_path / "web" / "onnx" / "model.onnx") == \
        sha256_file(out / "onnx-fp32-optimized" / "model.onnx")
    assert not (tmp_path / "web" / "onnx" / "model.onnx_data").exists()
    with pytest.raises(UsageError, match="both would be onnx/model.onnx"):
        package_transformersjs(out, tmp_path / "named", targets=["onnx:fp32-optimized", "onnx:fp32"])
    assert not (tmp_path / "named").exists()


@pytest.mark.parametrize("tampered", ["onnx-int8-dynamic/model.onnx", "onnx-fp32/model.onnx_data",
                                      "onnx-fp32/model.onnx", "onnx-fp32/tokenizer.json"])
def test_a_changed_file_writes_nothing(built, tmp_path, tampered):
    require_passed(built("seq-single").out, ["onnx:fp32", "onnx:int8-dynamic"])
    out = copy_build(built("seq-single").out, tmp_path / "out")
    assert (out / tampered).is_file(), tampered
    earlier = tmp_path / "earlier"
    package_transformersjs(out, earlier)
    before = snapshot(earlier)
    data = bytearray((out / tampered).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    (out / tampered).write_bytes(bytes(data))
    for dest in (earlier, tmp_path / "new" / "web"):
        with pytest.raises(OutputDirError) as caught:
            package_transformersjs(out, dest)
        message = str(caught.value)
        assert message.startswith(str(out / tampered)) and "sha256" in message and "\n" not in message
    assert snapshot(earlier) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "out"]


def _fail_onnx(manifest):
    for entry in manifest["artifacts"]:
        if entry["target"] in ONNX_TARGETS:
            entry["error"] = f"{entry['target']}: export failed"


def _multiple_choice(manifest):
    manifest["checkpoint"]["head"] = "DistilBertForMultipleChoice"


def _no_tokenizer_json(manifest):
    for entry in manifest["artifacts"]:
        entry["files"] = [f for f in entry["files"] if not f["path"].endswith("/tokenizer.json")]
    manifest["checkpoint"]["files"] = [f for f in manifest["checkpoint"].get("files", [])
                                       if f["path"] != "tokenizer.json"]


@pytest.mark.parametrize("edit, targets, error, needle", [
    (_fail_onnx, None, UsageError, "no validated ONNX artifact to package for Transformers.js"),
    (None, ["torchscript:fp32"], UsageError, "torchscript:fp32: Transformers.js runs ONNX files"),
    (None, ["onnx:bogus"], UsageError, "onnx:bogus: not built in"),
    (_fail_onnx, ["onnx:fp16"], UsageError, "onnx:fp16: failed in the build (onnx:fp16: export failed)"),
    (_multiple_choice, None, UsageError, "Transformers.js has no class for a DistilBertForMultipleChoice model"),
    (_no_tokenizer_json, None, UsageError, "no tokenizer.json; Transformers.js needs"),
], ids=["no-onnx", "not-onnx", "not-built", "failed", "multiple-choice", "no-tokenizer-json"])
def test_bad_input_is_one_line_and_writes_nothing(built, tmp_path, edit, targets, error, needle):
    out = copy_build(built("seq-single").out, tmp_path / "out", edit=edit)
    with pytest.raises(error) as caught:
        package_transformersjs(out, tmp_path / "new" / "web", targets=targets)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_not_a_build(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(OutputDirError, match="manifest.json: not found"):
        package_transformersjs(tmp_path / "nothing", tmp_path / "web")
    assert not (tmp_path / "web").exists()


def test_a_foreign_folder_is_refused_and_an_earlier_package_replaced(built, tmp_path):
    out = built("seq-single").out
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="not empty"):
        package_transformersjs(out, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    dest = tmp_path / "web"
    package_transformersjs(out, dest)
    (dest / "onnx" / "stale.onnx").write_bytes(b"old")
    written = package_transformersjs(out, dest, targets=["onnx:fp32"])
    assert written == [dest / "onnx" / "model.onnx"]
    assert sorted(p.name for p in (dest / "onnx").iterdir()) == ["model.onnx", "model.onnx_data"]
    (dest / "README.md").write_text("added by hand")
    with pytest.raises(OutputDirError, match="not empty"):
        package_transformersjs(out, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "web"]


def test_the_command_line(built, tmp_path):
    from test_bad_input import assert_one_line_error, run_cli

    out = built("seq-single").out
    dest = tmp_path / "web"
    result = run_cli("package", str(out), "--format", "transformers.js", "--out", str(dest), "--targets", "onnx:fp32")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(dest / "onnx" / "model.onnx")]
    assert_one_line_error(run_cli("package", str(out), "--format", "transformers.js", "--out", str(tmp_path / "x"),
                                  "--max-batch-size", "8"), "--max-batch-size: a Triton option")
    assert_one_line_error(run_cli("package", str(out), "--format", "transformers.js", "--out", str(tmp_path / "y"),
                                  "--targets", "tflite:fp32"), "tflite:fp32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web"]
