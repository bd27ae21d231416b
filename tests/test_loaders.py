"""Every artifact folder loads, as it is, in the tool its users already run, with no file copied or renamed and no
file_name=: Optimum's ORTModelFor<Head> (every ONNX target), optimum-intel's OVModelFor<Head> (every OpenVINO target;
it has no multiple-choice class, so that head is fed to OpenVINO's runtime the way optimum-intel feeds it),
torch.jit.load and LiteRT's Interpreter. Each loader's outputs must be the ones our own runner validated, and the
pipelines built on them must make the eager pipeline's decisions (fp32 and fp16 targets; tiny random INT8 models
have near-tied logits, see conftest.TINY_TOLERANCES, so their decisions are checked on the default model in
test_end_to_end.py)."""

import numpy as np
import pytest
from conftest import installed_targets
from tiny import TINY_MODELS

from distilforge.artifacts.folder import CARD, CONFIG, OPTIMUM_HEADS, precision_hint
from distilforge.artifacts.records import ExportedArtifact
from distilforge.targets import TARGETS

TEXTS = ["the market price of the stock is up", "the team lost the game in the rain",
         "a new phone app for code and data", "bread and cheese soup"]
PIPELINE_TASKS = {"text-classification", "token-classification", "question-answering", "fill-mask",
                  "feature-extraction"}
ONNX = sorted(t for t in TARGETS if t.startswith("onnx:"))
OPENVINO = sorted(t for t in TARGETS if t.startswith("openvino:"))


def _folder(built, key, target):
    result = built(key)
    record = next(a for a in result.manifest["artifacts"] if a["target"] == target)
    assert record["validation"]["passed"], record["validation"]["failures"]
    return result.out / target.replace(":", "-"), record, result


def _inputs(tokenizer, tiny):
    if tiny.architecture == "DistilBertForMultipleChoice":
        enc = tokenizer([TEXTS[0]] * 3, TEXTS[1:], padding=True, return_tensors="np")
        return {k: enc[k][None].astype(np.int64) for k in ("input_ids", "attention_mask")}
    if tiny.architecture == "DistilBertForQuestionAnswering":
        enc = tokenizer(TEXTS[:2], TEXTS[2:], padding=True, return_tensors="np")
    else:
        enc = tokenizer(TEXTS, padding=True, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _ours(result, record, inputs):
    target = TARGETS[record["target"]]
    return target.open_runner(result.out, ExportedArtifact.from_dict(record), 1).run(inputs)


def _assert_same_outputs(got, ours, names, target):
    for name in names:
        a, b = np.asarray(got[name]), ours[name]
        scale = max(float(np.abs(b).max()), 1.0)
        assert a.shape == b.shape, (target, name)
        assert float(np.abs(a - b).max()) <= 1e-4 * scale, (target, name, float(np.abs(a - b).max()))


def _pipeline_calls(task):
    if task == "question-answering":
        return [dict(question="who lost the game", context=TEXTS[1] + " and " + TEXTS[0])]
    if task == "fill-mask":
        return [dict(inputs="the market [MASK] of the stock is up")]
    return [dict(inputs=t) for t in TEXTS]


def _decisions(pipe, task, labelled):
    """What a user reads off the pipeline: labels, entities, answer span, top token, or the embedding."""
    out = []
    for call in _pipeline_calls(task):
        if task == "text-classification":
            got = pipe(call["inputs"], top_k=None)
            out.append(sorted((r["label"], round(r["score"], 3)) for r in got) if not labelled else
                       max(got, key=lambda r: r["score"])["label"])
        elif task == "token-classification":
            out.append([(e["word"], e["entity"]) for e in pipe(call["inputs"])])
        elif task == "question-answering":
            got = pipe(**call)
            out.append((got["start"], got["end"]))
        elif task == "fill-mask":
            out.append(pipe(call["inputs"])[0]["token"])
        else:
            out.append(np.asarray(pipe(call["inputs"])))
    return out


def _check_pipeline(model, folder, tiny, ckpt, record):
    from transformers import AutoModel, AutoTokenizer, pipeline

    from distilforge.checkpoint import inspect_checkpoint

    task = inspect_checkpoint(ckpt).head.task
    if task not in PIPELINE_TASKS:
        return
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = pipeline(task, model=model, tokenizer=tokenizer)
    eager_model = getattr(__import__("transformers"), tiny.architecture).from_pretrained(ckpt) \
        if tiny.architecture != "DistilBertModel" else AutoModel.from_pretrained(ckpt)
    eager = pipeline(task, model=eager_model.eval(), tokenizer=AutoTokenizer.from_pretrained(ckpt))
    labelled = tiny.config.get("problem_type") not in ("regression", "multi_label_classification")
    got, want = _decisions(ours, task, labelled), _decisions(eager, task, labelled)
    if record["validation"]["precision_class"] == "int8":
        assert len(got) == len(want)  # it runs on real text through the pipeline; decisions: see the docstring
    elif task == "feature-extraction":
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, atol=2e-2 if "fp16" in record["target"] else 1e-4)
    elif not labelled:  # multi-label and regression scores: the fp16 rule's tolerance, read at 3 decimals
        for a, b in zip(got, want, strict=True):
            assert [x[0] for x in a] == [x[0] for x in b]
            assert np.allclose([x[1] for x in a], [x[1] for x in b], atol=2e-3)
    else:
        assert got == want, (record["target"], got, want)


@pytest.mark.parametrize("target", ONNX)
@pytest.mark.parametrize("tiny", TINY_MODELS, ids=lambda t: t.key)
def test_onnx_folder_loads_in_optimum(tiny, target, built, tiny_checkpoints):
    if target not in installed_targets():
        pytest.skip(f"{target}: backend not installed")
    import optimum.onnxruntime
    from transformers import AutoTokenizer

    folder, record, result = _folder(built, tiny.key, target)
    assert {CONFIG, CARD, "model.onnx", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    model = getattr(optimum.onnxruntime, "ORTModelFor" + OPTIMUM_HEADS[tiny.architecture]).from_pretrained(folder)
    inputs = _inputs(AutoTokenizer.from_pretrained(folder), tiny)
    got = model(**inputs)
    _assert_same_outputs(got, _ours(result, record, inputs), [o["name"] for o in record["outputs"]], target)
    _check_pipeline(model, folder, tiny, tiny_checkpoints[tiny.key], record)


@pytest.mark.parametrize("target", OPENVINO)
@pytest.mark.parametrize("tiny", TINY_MODELS, ids=lambda t: t.key)
def test_openvino_folder_loads_in_optimum_intel(tiny, target, built, tiny_checkpoints):
    if target not in installed_targets():
        pytest.skip(f"{target}: backend not installed")
    pytest.importorskip("optimum.intel")
    from transformers import AutoTokenizer

    folder, record, result = _folder(built, tiny.key, target)
    assert {CONFIG, CARD, "openvino_model.xml", "openvino_model.bin"} <= {p.name for p in folder.iterdir()}
    inputs = _inputs(AutoTokenizer.from_pretrained(folder), tiny)
    names = [o["name"] for o in record["outputs"]]
    # as the card's loads_with line says: without the hint, OpenVINO runs "fp32" in bf16 on an AVX-512 BF16 CPU
    hint = {"INFERENCE_PRECISION_HINT": precision_hint(record)}
    if tiny.architecture == "DistilBertForMultipleChoice":  # no OVModelForMultipleChoice: OpenVINO's runtime, fed as
        import openvino as ov  # optimum-intel feeds its models (named int64 inputs, outputs read by name)

        compiled = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", hint)
        result_ov = compiled(inputs)
        got = {n: result_ov[compiled.output(n)] for n in names}
        _assert_same_outputs(got, _ours(result, record, inputs), names, target)
        return
    import optimum.intel
    from openvino import Type as ov_type

    model = getattr(optimum.intel, "OVModelFor" + OPTIMUM_HEADS[tiny.architecture]).from_pretrained(
        folder, ov_config=hint)
    compiled_in = model.request.get_property("INFERENCE_PRECISION_HINT")
    assert compiled_in == getattr(ov_type, hint["INFERENCE_PRECISION_HINT"]), (compiled_in, "not the validated hint")
    got = model(**inputs)
    _assert_same_outputs(got, _ours(result, record, inputs), names, target)
    _check_pipeline(model, folder, tiny, tiny_checkpoints[tiny.key], record)


@pytest.mark.parametrize("target", ["torchscript:fp32", "torchscript:int8-dynamic"])
def test_torchscript_folder_loads_with_torch_jit(target, built):
    import torch
    from transformers import AutoTokenizer

    folder, record, result = _folder(built, "qa", target)
    inputs = _inputs(AutoTokenizer.from_pretrained(folder), next(t for t in TINY_MODELS if t.key == "qa"))
    model = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        outputs = model(*(torch.from_numpy(inputs[n]) for n in ("input_ids", "attention_mask")))
    names = [o["name"] for o in record["outputs"]]
    _assert_same_outputs(dict(zip(names, (o.numpy() for o in outputs), strict=True)),
                         _ours(result, record, inputs), names, target)


def test_tflite_folder_loads_in_litert(built):
    if "tflite:fp32" not in installed_targets():
        pytest.skip("tflite not installed")
    import json

    from ai_edge_litert.interpreter import Interpreter

    folder, record, result = _folder(built, "token", "tflite:fp32")
    card = json.loads((folder / CARD).read_text())
    (signature, shape), = record["details"]["signatures"].items()
    assert card["fixed_shapes"] == [shape] and card["inputs"][0]["dtype"] == "int32"
    runner = Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner(signature)
    ids = np.zeros(shape, dtype=np.int32)
    ids[0, :5] = [2, 10, 11, 12, 3]
    mask = (ids != 0).astype(np.int32)
    got = runner(input_ids=ids, attention_mask=mask)
    ours = _ours(result, record, {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})
    _assert_same_outputs(got, ours, ["logits"], "tflite:fp32")
