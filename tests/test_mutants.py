"""The mutation suite (issue 27): deliberately broken artifacts and folders, each re-signed so every file hash, the
card and the manifest's digest agree with what is on disk (as a careless deploy script or a hand fix leaves them),
must each be caught by the check named for it; re-signed and unchanged, a folder passes. docs/validation.md's table
is this list (a test keeps them in step).

Each mutant is a copy of a session build (tests/conftest.py `built`) with one artifact or file changed, and only
that artifact is run again (`validate --targets`): every file of every folder is checked all the same."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import installed_targets

from distilforge.pipeline.revalidate import validate_dir

# what each named check prints (distilforge/pipeline/revalidate.py and the modules it calls)
CHECKS = {
    "pass rule": r"max abs diff .* > |cosine .* < |agreement .* < |output is not finite",
    "recorded figures": r"the manifest records ",
    "companion files": r" is not the checkpoint's ",
    "run as used": r": run as distilforge\.load runs it .* decode differently",
    "card": r" does not say what manifest\.json says",
    "pass-rule record": r" records a pass rule .* that is not the build's ",
}
NEVER = r"has changed \(sha256|is missing|bytes, the manifest says|edited after the build"  # the re-signing held


def resign(out: Path, target: str, *, card: bool = True) -> None:
    """Every file of `target`'s folder hashed again, its card rewritten from the manifest (unless `card` is False:
    then only hashed), and the manifest's digest recomputed."""
    from distilforge.artifacts.folder import card as make_card
    from distilforge.artifacts.folder import card_text
    from distilforge.artifacts.manifest import manifest_digest
    from distilforge.targets import FORMATS

    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["target"] == target)
    card_record = next(f for f in entry["files"] if f["role"] == "card")
    for record in [f for f in entry["files"] if f["role"] != "card"]:
        _rehash(out, record)
    if card:
        text = card_text(make_card(entry, manifest["checkpoint"], FORMATS[entry["format"]].loader))
        (out / card_record["path"]).write_text(text, encoding="utf-8")
    _rehash(out, card_record)
    manifest["digest"] = manifest_digest(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _rehash(out: Path, record: dict) -> None:
    data = (out / record["path"]).read_bytes()
    record.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


# -- the mutations: each changes one folder of `out` in place ------------------------------------------------------

def _onnx_edit(folder: Path, edit: Callable) -> None:
    import onnx

    path = folder / "model.onnx"
    model = onnx.load(str(path))
    edit(model)
    external = (folder / "model.onnx_data").exists()
    onnx.save(model, str(path), save_as_external_data=external, location="model.onnx_data" if external else None)


def _first_matrix(model, dtype):
    """The first weight matrix a MatMul or Gemm multiplies by (not an embedding table)."""
    from onnx import numpy_helper

    multiplied = {name for node in model.graph.node if node.op_type in ("MatMul", "Gemm") for name in node.input}
    for init in model.graph.initializer:
        if init.name not in multiplied:
            continue
        w = numpy_helper.to_array(init)
        if w.dtype == dtype and w.ndim == 2 and w.shape[0] > 8 and w.shape[1] > 8:
            return init, w
    raise AssertionError("no weight matrix")


def scale_a_layer(folder: Path) -> None:
    """One MatMul's weights x1.5, as a wrong checkpoint or a botched conversion would."""
    from onnx import numpy_helper

    def edit(model):
        init, w = _first_matrix(model, np.float32)
        init.CopyFrom(numpy_helper.from_array(w * np.float32(1.5), init.name))
    _onnx_edit(folder, edit)


def overflow_fp16(folder: Path) -> None:
    """One fp16 weight matrix near fp16's largest value: its products overflow to inf."""
    from onnx import numpy_helper

    def edit(model):
        init, w = _first_matrix(model, np.float16)
        init.CopyFrom(numpy_helper.from_array(np.full_like(w, 60000.0), init.name))
    _onnx_edit(folder, edit)


def ignore_the_attention_mask(folder: Path) -> None:
    """Every consumer of attention_mask reads ones instead: padding is attended to."""
    from onnx import TensorProto, helper

    def edit(model):
        for node in model.graph.node:
            node.input[:] = ["mask_of_ones" if name == "attention_mask" else name for name in node.input]
        zero = helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.INT64, [], [0]))
        one = helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [], [1]))
        times = helper.make_node("Mul", ["attention_mask", "zero"], ["mask_times_zero"])
        ones = helper.make_node("Add", ["mask_times_zero", "one"], ["mask_of_ones"])
        for i, node in enumerate([zero, one, times, ones]):
            model.graph.node.insert(i, node)
    _onnx_edit(folder, edit)


def swap_the_outputs(folder: Path) -> None:
    """The QA head's start_logits and end_logits exchange names."""
    swap = {"start_logits": "end_logits", "end_logits": "start_logits"}

    def edit(model):
        for node in model.graph.node:
            node.output[:] = [swap.get(n, n) for n in node.output]
            node.input[:] = [swap.get(n, n) for n in node.input]
    _onnx_edit(folder, edit)


def scale_torchscript_weights(folder: Path) -> None:
    import torch

    model = torch.jit.load(str(folder / "model.pt"))
    weight = next(p for p in model.parameters() if p.dim() == 2 and p.shape[0] > 8)
    with torch.no_grad():
        weight.mul_(1.5)
    torch.jit.save(model, str(folder / "model.pt"))


def _file_from(sibling: str, *names: str) -> Callable[[Path], None]:
    def copy(folder: Path) -> None:
        for name in names:
            shutil.copyfile(folder.parent / sibling / name, folder / name)
    copy.__doc__ = f"{', '.join(names)} replaced by {sibling}'s (the wrong file deployed)"
    return copy


def _json_edit(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data, indent=2))
    return change


def _swap_labels(config: dict) -> None:
    """Every label name moved to the next id (a tiny random classifier may give one class to every text, so
    swapping only two could leave its answers as they were)."""
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    config["id2label"] = {str(i): names[i - 1] for i in range(len(names))}


def swap_vocabulary(folder: Path) -> None:
    words = (folder / "vocab.txt").read_text().splitlines()
    words[10], words[11] = words[11], words[10]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")


def loosen_the_rule(out: Path, target: str) -> None:
    """The entry's pass rule loosened in the manifest (and the digest recomputed by resign)."""
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["target"] == target)
    entry["validation"]["tolerance"]["max_abs"] = 1.0
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def edit_the_card(folder: Path) -> None:
    card = json.loads((folder / "distilforge.json").read_text())
    card["loads_with"] = "onnxruntime.InferenceSession('model.onnx')  # edited"
    (folder / "distilforge.json").write_text(json.dumps(card, indent=2))


@dataclass(frozen=True)
class Mutant:
    name: str  # as docs/validation.md's table names it
    head: str
    target: str
    mutate: Callable[[Path], None] | None  # changes the target's folder; None: the control
    caught_by: str | None  # a key of CHECKS; None: must pass
    whole: Callable[[Path, str], None] | None = None  # changes the output directory instead
    card: bool = True  # resign rewrites the card from the manifest
    also: str | None = None  # a second check that must catch it too (a key of CHECKS)

    @property
    def checks(self) -> str:
        """The docs table's column."""
        return ", ".join(filter(None, [self.caught_by, self.also])) or "passes"


MUTANTS = [
    Mutant("control: re-signed, unchanged", "seq-single", "onnx:fp32", None, None),
    Mutant("a layer's weights scaled", "seq-single", "onnx:fp32", scale_a_layer, "pass rule"),
    # the base head: its hidden states are O(1) (a tiny classifier's logits are O(0.01): the same mutant moved them by
    # 8e-5, inside fp32's 1e-4, and only the recorded figures caught it)
    Mutant("the attention mask ignored", "base", "onnx:fp32", ignore_the_attention_mask, "pass rule"),
    Mutant("an fp16 overflow", "seq-single", "onnx:fp16", overflow_fp16, "pass rule"),
    Mutant("outputs swapped", "qa", "onnx:fp32", swap_the_outputs, "pass rule"),
    Mutant("TorchScript weights scaled", "seq-single", "torchscript:fp32", scale_torchscript_weights, "pass rule"),
    Mutant("TFLite fp32 file replaced by the fp16 one", "seq-single", "tflite:fp32",
           _file_from("tflite-fp16", "model.tflite"), "recorded figures"),
    Mutant("OpenVINO fp32 IR replaced by the int8-weights one", "seq-single", "openvino:fp32",
           _file_from("openvino-int8-weights", "openvino_model.xml", "openvino_model.bin"), "recorded figures"),
    Mutant("ExecuTorch fp32 program replaced by the int8-dynamic one", "seq-single", "executorch:fp32",
           _file_from("executorch-int8-dynamic", "model.pte"), "recorded figures"),
    Mutant("labels swapped", "seq-single", "onnx:fp32", _json_edit("config.json", _swap_labels), "companion files",
           also="run as used"),
    Mutant("head type changed", "seq-single", "onnx:fp32",
           _json_edit("config.json", lambda c: c.update(architectures=["DistilBertForTokenClassification"])),
           "companion files"),
    Mutant("vocabulary swapped", "seq-single", "onnx:fp32", swap_vocabulary, "companion files"),
    Mutant("a shorter maximum length", "seq-single", "onnx:fp32",
           _json_edit("tokenizer_config.json", lambda c: c.update(model_max_length=16)), "companion files"),
    Mutant("special tokens changed", "seq-single", "onnx:fp32",
           _json_edit("special_tokens_map.json", lambda c: c.update(cls_token="[SEP]")), "companion files"),
    Mutant("the card edited", "seq-single", "onnx:fp32", edit_the_card, "card", card=False),
    Mutant("the pass rule loosened in the manifest", "seq-single", "onnx:fp32", None, "pass-rule record",
           whole=loosen_the_rule),
]


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_is_caught_by_its_check(mutant, built, tmp_path):
    if mutant.target not in installed_targets():
        pytest.skip(f"{mutant.target}: backend not installed")
    out = tmp_path / "out"
    shutil.copytree(built(mutant.head).out, out)
    folder = out / mutant.target.replace(":", "-")
    if mutant.mutate:
        mutant.mutate(folder)
    if mutant.whole:
        mutant.whole(out, mutant.target)
    resign(out, mutant.target, card=mutant.card)

    # the checks of files, cards and records read no artifact: only the mutants a measurement catches are run
    runs = mutant.caught_by in (None, "pass rule", "recorded figures") or mutant.also is not None
    result = validate_dir(out, targets=[mutant.target] if runs else [])
    lines = result.problems + result.failures
    assert not [line for line in lines if re.search(NEVER, line)], lines
    if mutant.caught_by is None:
        assert result.passed, lines
        return
    assert not result.passed
    for check in filter(None, [mutant.caught_by, mutant.also]):
        caught = [line for line in lines if re.search(CHECKS[check], line)]
        assert caught and all(line.startswith(f"{mutant.target}: ") for line in caught), (check, lines)


def test_the_docs_table_lists_every_mutant_and_its_check():
    text = (Path(__file__).resolve().parent.parent / "docs" / "validation.md").read_text()
    section = text.split("## The mutation suite", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `([\w:-]+)` \| (.+?) \|$", section, flags=re.MULTILINE)
    assert [(m.name, m.target, m.checks) for m in MUTANTS] == rows
