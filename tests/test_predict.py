"""`distilforge predict` and `distilforge.load`: every head says what it means, on the artifact's own runtime, and
agrees with the eager model; bad input is one line and exit 2."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from test_bad_input import assert_one_line_error, run_cli

import distilforge
from distilforge.artifacts.manifest import manifest_digest
from distilforge.errors import UsageError

TEXT = "the team won the game and the market price is up"


def _eager(ckpt, architecture):
    import transformers

    return getattr(transformers, architecture).from_pretrained(ckpt).eval()


def _encode(tokenizer, *texts):
    enc = tokenizer(*texts, return_tensors="pt", padding=True)
    return {k: enc[k] for k in ("input_ids", "attention_mask")}


def test_sequence_classification_label_and_score(built, tiny_checkpoints):
    out = built("seq-single").out
    predictor = distilforge.load(out, "onnx:fp32")
    (result,) = predictor(TEXT)
    model = _eager(tiny_checkpoints["seq-single"], "DistilBertForSequenceClassification")
    with torch.no_grad():
        logits = model(**_encode(predictor.tokenizer, TEXT)).logits[0]
    assert result["label"] == model.config.id2label[int(logits.argmax())]
    assert result["score"] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-5)


def test_multi_label_lists_every_label_above_zero(built, tiny_checkpoints):
    predictor = distilforge.load(built("seq-multi").out, "openvino:fp32")
    texts = [TEXT, "bread", "rain and snow and wind", "a new phone app"]
    results = predictor(*texts)
    model = _eager(tiny_checkpoints["seq-multi"], "DistilBertForSequenceClassification")
    for text, result in zip(texts, results, strict=True):
        with torch.no_grad():
            logits = model(**_encode(predictor.tokenizer, text)).logits[0]
        assert {x["label"] for x in result["labels"]} == {model.config.id2label[i] for i in range(len(logits))
                                                           if logits[i] > 0}
        assert all(x["score"] > 0.5 for x in result["labels"])


def test_regression_value(built, tiny_checkpoints):
    (result,) = distilforge.load(built("seq-regression").out, "torchscript:fp32")(TEXT)
    model = _eager(tiny_checkpoints["seq-regression"], "DistilBertForSequenceClassification")
    with torch.no_grad():
        value = float(model(**_encode(distilforge.load(built("seq-regression").out, "onnx:fp32").tokenizer,
                                      TEXT)).logits[0, 0])
    assert result["value"] == pytest.approx(value, abs=1e-4)


def test_token_classification_entities_are_the_pipelines(built, tiny_checkpoints):
    """Grouped as transformers' pipeline groups them (aggregation "simple"), words cut from the text."""
    from transformers import pipeline

    predictor = distilforge.load(built("token").out, "onnx:fp32")
    (result,) = predictor(TEXT)
    model = _eager(tiny_checkpoints["token"], "DistilBertForTokenClassification")
    expected = pipeline("token-classification", model=model, tokenizer=predictor.tokenizer,
                        aggregation_strategy="simple")(TEXT)
    assert result["entities"]
    assert [(e["entity"], e["start"], e["end"]) for e in result["entities"]] == \
        [(e["entity_group"], e["start"], e["end"]) for e in expected]
    for e in result["entities"]:
        assert TEXT[e["start"]:e["end"]] == e["word"]


def test_question_answering_span_is_in_the_context(built, tiny_checkpoints):
    predictor = distilforge.load(built("qa").out, "onnx:fp32")
    context = "the team won the game in the rain and the bank lost money"
    (result,) = predictor(question="who won the game", context=context)
    assert result["answer"] and result["answer"] == context[result["start"]:result["end"]]
    model = _eager(tiny_checkpoints["qa"], "DistilBertForQuestionAnswering")
    from transformers import pipeline

    expected = pipeline("question-answering", model=model, tokenizer=predictor.tokenizer)(
        question="who won the game", context=context)
    assert (result["start"], result["end"]) == (expected["start"], expected["end"])


def test_a_question_too_long_for_its_context_is_a_usage_error(built):
    """The tokenizers library raises a bare Exception when the question leaves no room for the context."""
    predictor = distilforge.load(built("qa").out, "onnx:fp32")
    with pytest.raises(UsageError, match=r"onnx:fp32: the first text is \d+ tokens and this artifact takes at most"):
        predictor(question="who " * (predictor.longest + 8), context="the team won the game")


def test_multiple_choice_picks_the_eager_choice(built, tiny_checkpoints):
    predictor = distilforge.load(built("multiple-choice").out, "onnx:fp32")
    choices = ["the bank", "the team", "the soup"]
    (result,) = predictor("who won the game", choices=choices)
    model = _eager(tiny_checkpoints["multiple-choice"], "DistilBertForMultipleChoice")
    enc = predictor.tokenizer(["who won the game"] * 3, choices, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"][None], attention_mask=enc["attention_mask"][None]).logits[0]
    assert result["choice"] == int(logits.argmax()) and result["text"] == choices[result["choice"]]


def test_fill_mask_top_tokens(built, tiny_checkpoints):
    predictor = distilforge.load(built("masked-lm").out, "openvino:fp32")
    (result,) = predictor("the market [MASK] is up")
    (mask,) = result["masks"]
    assert len(mask["top"]) == 5
    model = _eager(tiny_checkpoints["masked-lm"], "DistilBertForMaskedLM")
    enc = _encode(predictor.tokenizer, "the market [MASK] is up")
    with torch.no_grad():
        logits = model(**enc).logits[0, mask["position"]]
    assert mask["top"][0]["token"] == predictor.tokenizer.convert_ids_to_tokens(int(logits.argmax()))


def test_base_model_embedding_shape_and_norm(built, tiny_checkpoints):
    predictor = distilforge.load(built("base").out, "onnx:fp32")
    (result,) = predictor(TEXT)
    model = _eager(tiny_checkpoints["base"], "DistilBertModel")
    with torch.no_grad():
        hidden = model(**_encode(predictor.tokenizer, TEXT)).last_hidden_state[0]
    assert result["shape"] == list(hidden.shape)
    assert result["cls_norm"] == pytest.approx(float(hidden[0].norm()), rel=1e-4)


def test_fixed_shape_artifact_pads_short_text_and_refuses_long_text(built):
    predictor = distilforge.load(built("seq-single").out, "tflite:fp32")
    assert predictor.fixed
    eager = distilforge.load(built("seq-single").out, "onnx:fp32")
    assert predictor(TEXT)[0]["label"] == eager(TEXT)[0]["label"]
    result = run_cli("predict", str(built("seq-single").out), "--target", "tflite:fp32", " ".join(["game"] * 200))
    assert_one_line_error(result, "tflite:fp32", "takes at most")


def test_cli_prints_the_label_and_json(built):
    out = built("seq-single").out
    result = run_cli("predict", str(out), "--target", "onnx:int8-dynamic", TEXT, "bread")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    labels = set(json.loads((out / "onnx-int8-dynamic" / "config.json").read_text())["id2label"].values())
    assert len(lines) == 2 and lines[0].split()[0] in labels and lines[0].endswith(TEXT)
    data = json.loads(run_cli("predict", str(out), "--json", "--target", "onnx:fp32", TEXT).stdout)
    assert data["target"] == "onnx:fp32" and data["results"][0]["label"] in labels


def test_default_target_is_the_one_report_recommends(built):
    from distilforge.report.data import load
    from distilforge.report.recommend import make_limits, recommend

    out = built("seq-single").out
    data = load(out)
    limits = make_limits(max_latency_ms=None, min_agreement=None, max_size_mb=None, have_bench=False)
    assert distilforge.load(out).target == recommend(data.rows, limits, have_bench=False).target


def _copy(built, key, tmp_path):
    out = tmp_path / key
    shutil.copytree(built(key).out, out)
    return out


def test_bad_input_is_one_line(built, tmp_path):
    out = _copy(built, "qa", tmp_path)
    assert_one_line_error(run_cli("predict", str(out), "--target", "onnx:nope", "x"), "no target 'onnx:nope'")
    assert_one_line_error(run_cli("predict", str(out), "--target", "onnx:fp32", "--question", "who"),
                          "needs --question and --context")
    assert_one_line_error(run_cli("predict", str(tmp_path / "missing"), "x"), "missing")
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["target"] == "onnx:fp16")
    record["validation"]["passed"] = False
    record["validation"]["failures"] = ["onnx:fp16: agreement 90.0% < 100.0% on real-text-1x12"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("predict", str(out), "--target", "onnx:fp16", "--question", "a", "--context", "b"),
                          "onnx:fp16 failed validation")
    (out / "onnx-fp32" / "model.onnx_data").write_bytes(b"changed")
    assert_one_line_error(run_cli("predict", str(out), "--target", "onnx:fp32", "--question", "a", "--context", "b"),
                          "model.onnx_data", "validate")
    masked = _copy(built, "masked-lm", tmp_path)
    assert_one_line_error(run_cli("predict", str(masked), "--target", "onnx:fp32", "no mask here"), "[MASK]")


def test_a_build_with_the_old_file_names_still_validates_and_predicts(built, tmp_path):
    """Manifests written before folders were self-contained: OpenVINO's model.xml/.bin, no roles, no companions.
    Schema version 1 still reads them; config and tokenizer come from the recorded checkpoint."""
    out = _copy(built, "seq-single", tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["target"] == "openvino:fp32"]
    (record,) = manifest["artifacts"]
    folder = out / "openvino-fp32"
    for f in list(record["files"]):
        if f["role"] != "model":
            (out / f["path"]).unlink()
    record["files"] = [{k: v for k, v in f.items() if k != "role"} for f in record["files"] if f["role"] == "model"]
    for f in record["files"]:
        old = f["path"].replace("openvino_model.", "model.")
        (out / f["path"]).rename(out / old)
        f["path"] = old
    manifest["digest"] = manifest_digest(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml"]
    check = distilforge.validate_dir(out)
    assert check.passed, check.failures
    (result,) = distilforge.load(out, "openvino:fp32")(TEXT)
    assert result["label"] == distilforge.load(built("seq-single").out, "openvino:fp32")(TEXT)[0]["label"]


def test_validate_catches_a_card_that_disagrees_with_the_manifest(built, tmp_path):
    out = _copy(built, "seq-single", tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(a for a in manifest["artifacts"] if a["target"] == "onnx:fp32")
    card_file = next(f for f in record["files"] if f["role"] == "card")
    card = json.loads((out / card_file["path"]).read_text())
    # each field set to what it cannot already be, on any CPU class: a figure lowered, a class that does not exist
    card["validation"]["worst"]["agreement"] = card["validation"]["worst"]["agreement"] / 2
    card["validated_on"][0]["cpu_class"] = "not-" + card["validated_on"][0]["cpu_class"]
    text = json.dumps(card, indent=2) + "\n"
    (out / card_file["path"]).write_text(text)
    from distilforge.artifacts.hashing import sha256_file

    card_file["sha256"], card_file["bytes"] = sha256_file(out / card_file["path"]), len(text.encode())
    manifest["digest"] = manifest_digest(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    check = distilforge.validate_dir(out)
    assert any("distilforge.json does not say what manifest.json says" in p for p in check.problems), check.problems


def test_every_file_of_a_folder_is_in_the_manifest(built):
    result = built("token")
    for record in result.manifest["artifacts"]:
        folder = result.out / record["target"].replace(":", "-")
        listed = {f["path"] for f in record["files"]}
        assert listed == {p.relative_to(result.out).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert {f["role"] for f in record["files"]} == {"model", "config", "tokenizer", "card"}
        card = json.loads((folder / "distilforge.json").read_text())
        assert card["target"] == record["target"] and card["validated_on"] == record["validated_on"]
        assert card["head"]["labels"] == result.manifest["checkpoint"]["labels"]
        assert {f["path"] for f in card["files"]} == {p.split("/", 1)[1] for p in listed} - {"distilforge.json"}
        assert record["bytes"] == sum(f["bytes"] for f in record["files"] if f["role"] == "model")


def test_python_api_is_lazy():
    code = "import distilforge, sys; assert 'torch' not in sys.modules and 'distilforge.predict' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("target, torch_imported", [("onnx:fp32", False), ("torchscript:fp32", True)])
def test_cli_predict_imports_torch_only_for_a_target_that_runs_on_it(built, target, torch_imported):
    """`distilforge predict` on an ONNX/OpenVINO/TFLite folder needs only the tokenizer from transformers: the
    command runs without importing torch (USE_TORCH=0), 1.5 s instead of 8 on the default model."""
    out = built("seq-single").out
    code = (f"import sys; from distilforge.cli import main; code = main(['predict', {str(out)!r}, '--target', "
            f"{target!r}, {TEXT!r}]); print('torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "USE_TORCH"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].endswith(TEXT) and lines[-1] == str(torch_imported)
