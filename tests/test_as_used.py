"""pipeline/as_used.py: each head's folder run as distilforge.load runs it agrees with the checkpoint's files on
every example, and a folder whose own files decode differently is named (the whole `validate` path: test_mutants)."""

import json
import shutil

import pytest
from tiny import TINY_MODELS

from distilforge.artifacts.manifest import read_manifest
from distilforge.artifacts.records import ExportedArtifact
from distilforge.default_model import sample_texts
from distilforge.heads import find_head
from distilforge.pipeline.as_used import EXAMPLES, as_used_problems, usage_examples
from distilforge.targets import get_target

HEADS = [t.key for t in TINY_MODELS]


def _check(out, tiny_checkpoints, key, target="onnx:fp32"):
    manifest = read_manifest(out)
    record = next(a for a in manifest["artifacts"] if a["target"] == target)
    head = find_head(manifest["checkpoint"]["head"], manifest["checkpoint"].get("problem_type"))
    runner = get_target(target).open_runner(out, ExportedArtifact.from_dict(record), 1)
    return as_used_problems(manifest, record, out, tiny_checkpoints[key], runner, sample_texts(), head)


@pytest.mark.parametrize("key", HEADS)
def test_every_head_runs_as_used_and_agrees_with_the_checkpoints_files(key, built, tiny_checkpoints):
    assert _check(built(key).out, tiny_checkpoints, key) == []


@pytest.mark.parametrize("key", HEADS)
def test_the_examples_are_what_a_user_of_the_head_gives(key, tiny_checkpoints):
    config = json.loads((tiny_checkpoints[key] / "config.json").read_text())
    head = find_head(config["architectures"][0], config.get("problem_type"))
    examples = usage_examples(head, sample_texts(), "[MASK]")
    assert len(examples) == EXAMPLES
    for args, kwargs in examples:
        if head.task == "question-answering":
            assert not args and kwargs["question"] and kwargs["context"]
        elif head.task == "multiple-choice":
            assert len(args) == 1 and len(kwargs["choices"]) == 2
        elif head.task == "fill-mask":
            assert "[MASK]" in args[0]
        else:
            assert len(args) == 1 and not kwargs


def test_a_changed_mask_token_is_named(built, tiny_checkpoints, tmp_path):
    """The masked-LM folder's tokenizer no longer knows [MASK] as its mask token: every example is refused or decodes
    differently, and the line says which text and what the checkpoint's files give."""
    out = tmp_path / "out"
    shutil.copytree(built("masked-lm").out, out)
    folder = out / "onnx-fp32"
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text())
            data["mask_token"] = "[UNK]"
            path.write_text(json.dumps(data))
    problems = _check(out, tiny_checkpoints, "masked-lm")
    assert len(problems) == 1, problems
    assert problems[0].startswith("onnx:fp32: run as distilforge.load runs it")
    assert f"{EXAMPLES} of {EXAMPLES} examples decode differently" in problems[0], problems[0]
