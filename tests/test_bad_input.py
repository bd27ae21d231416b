"""Bad input: one line naming the file (or argument) and the problem, the documented exit code, and
nothing changed in the output directory.

Every case here is a row of the table in docs/bad-input.md (`test_bad_input_table_matches_the_cases`
keeps the two in step). Each runs through the real command line: `cli.main(argv)` in this process, or
a subprocess where the case needs one (file permissions while running as root, a file-size limit).
Cases that leave the output directory alone are run twice: against a path that does not exist yet
(it must not be created) and against the output of an earlier build (not a byte may change).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from distilforge import cli
from distilforge.artifacts.layout import exclusive

BAD_INPUT_DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distilforge", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress lines ("[distilforge] ...") that may come before an error."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[distilforge]")]


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("distilforge: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---- running a case ---------------------------------------------------------------------------------


@dataclass
class Bad:
    """What a case runs and what the user must see."""

    argv: list[str]
    needles: tuple[str, ...]  # in the error line: the file or argument, and the problem
    code: int = 2
    mode: str = "inline"  # "inline": cli.main here; "unprivileged": no root override of file permissions;
    #                       "disk-full": a subprocess whose files may not grow past DISK_FULL_BYTES
    out_states: tuple[str, ...] = ("fresh", "earlier-build")  # ("prepared",): the case set the directory up


class Ctx:
    """A case's inputs: a private copy of the tiny classifier, a place for files, the output path."""

    def __init__(self, tmp: Path, tiny: dict[str, Path], request: pytest.FixtureRequest | None = None) -> None:
        self.tmp, self.tiny, self.request = tmp, tiny, request
        self.ckpt = tmp / "ckpt"
        shutil.copytree(tiny["seq-single"], self.ckpt)
        self.out = tmp / "out"
        self.cleanups: list[Callable[[], object]] = []

    def build(self, *extra: str, checkpoint: Path | None = None, targets: str = "onnx:fp32") -> list[str]:
        return ["build", str(checkpoint or self.ckpt), "--out", str(self.out), "--targets", targets, *extra]

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def use_foreign(self, framework: str, key: str = "seq-single") -> Path:
        """Make the case's checkpoint the tiny head TensorFlow or Flax wrote (tests/foreign.py); its weights file."""
        assert self.request is not None
        shutil.rmtree(self.ckpt)
        shutil.copytree(self.request.getfixturevalue("foreign_checkpoints")[framework] / key, self.ckpt)
        return self.ckpt / {"tensorflow": "tf_model.h5", "flax": "flax_model.msgpack"}[framework]

    def edit_config(self, **changes: object) -> Path:
        config = json.loads((self.ckpt / "config.json").read_text())
        config.update(changes)
        (self.ckpt / "config.json").write_text(json.dumps(config))
        return self.ckpt / "config.json"


CASES: dict[str, Callable[[Ctx], Bad]] = {}


def case(name: str) -> Callable[[Callable[[Ctx], Bad]], Callable[[Ctx], Bad]]:
    def register(fn: Callable[[Ctx], Bad]) -> Callable[[Ctx], Bad]:
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return register


def earlier_build(out: Path) -> None:
    """What a finished build leaves (as far as the checks before a build can tell)."""
    (out / "onnx-fp32").mkdir(parents=True)
    (out / "onnx-fp32" / "model.onnx").write_bytes(b"\x08\x09 an earlier artifact")
    (out / "manifest.json").write_text(json.dumps({"schema_version": 1, "checkpoint": {}, "settings": {},
                                                   "artifacts": []}))


def snapshot(path: Path) -> dict[str, bytes | None] | None:
    """Every entry under `path` (hidden ones too) with its bytes; None when `path` does not exist."""
    if not os.path.lexists(path):
        return None
    if not path.is_dir():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def run_inline(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capfd.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code if isinstance(e.code, int) else 2
    return code, capfd.readouterr().err


def _drop_file_permission_override() -> None:
    """In the child, before exec: without CAP_DAC_OVERRIDE/READ_SEARCH root obeys file modes like anyone."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _can_drop_override() -> bool:
    try:
        subprocess.run(["true"], preexec_fn=_drop_file_permission_override, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


DISK_FULL_BYTES = 40_000  # the tiny model's ONNX file is about 100 kB


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_FULL_BYTES, DISK_FULL_BYTES))


def run_subprocess(argv: list[str], mode: str) -> tuple[int, str]:
    preexec = None
    if mode == "unprivileged" and os.geteuid() == 0:
        if not _can_drop_override():
            pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE: file modes are not enforced")
        preexec = _drop_file_permission_override
    elif mode == "disk-full":
        preexec = _file_size_limit
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "distilforge", *argv], capture_output=True, text=True, env=env,
                            timeout=600, preexec_fn=preexec)
    return result.returncode, result.stderr


# ---- the checkpoint ---------------------------------------------------------------------------------


@case("checkpoint-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build(checkpoint=ctx.tmp / "nope"), ("nope", "no such checkpoint directory"))


@case("checkpoint-not-a-directory")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build(checkpoint=ctx.file("file.txt", "x")), ("file.txt", "not a directory"))


@case("config-missing")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "config.json").unlink()
    return Bad(ctx.build(), ("config.json", "not found"))


@case("config-not-json")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "config.json").write_text("{ not json")
    return Bad(ctx.build(), ("config.json", "not valid JSON"))


@case("config-not-utf8")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "config.json").write_bytes('{"model_type": "distilbert", "x": "caf\xe9"}'.encode("latin-1"))
    return Bad(ctx.build(), ("config.json", "not UTF-8"))


@case("config-not-an-object")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "config.json").write_text("[1, 2]")
    return Bad(ctx.build(), ("config.json", "expected a JSON object, got list"))


@case("config-unreadable")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "config.json").chmod(0)
    return Bad(ctx.build(), ("config.json", "cannot be read", "Permission denied"), mode="unprivileged",
               out_states=("earlier-build",))


@case("config-wrong-model-type")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build(), (str(ctx.edit_config(model_type="bert")), "'bert'", "expected 'distilbert'"))


@case("config-unknown-architecture")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(architectures=["DistilBertForCausalLM"])
    return Bad(ctx.build(), ("config.json", "'DistilBertForCausalLM' is not supported"))


@case("config-unknown-problem-type")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(problem_type="ranking")
    return Bad(ctx.build(), ("config.json", "problem_type 'ranking' is not supported"))


@case("config-dim-not-divisible")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(dim=30, n_heads=4)
    return Bad(ctx.build(), ("config.json", "dim 30 is not divisible by n_heads 4"))


@case("config-negative-n-layers")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(n_layers=-2)
    return Bad(ctx.build(), ("config.json", "n_layers is -2, expected a positive integer"))


@case("config-dimension-not-a-number")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(hidden_dim="64")
    return Bad(ctx.build(), ("config.json", "hidden_dim is '64', expected a positive integer"))


@case("config-no-vocab-size")
def _(ctx: Ctx) -> Bad:
    config = json.loads((ctx.ckpt / "config.json").read_text())
    del config["vocab_size"]
    (ctx.ckpt / "config.json").write_text(json.dumps(config))
    return Bad(ctx.build(), ("config.json", "vocab_size is missing"))


@case("config-bad-id2label")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(id2label=["a", "b", "c"])
    return Bad(ctx.build(), ("config.json", "id2label must be an object"))


@case("weights-missing")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "model.safetensors").unlink()
    return Bad(ctx.build(), ("ckpt", "no weights found"))


@case("weights-truncated")
def _(ctx: Ctx) -> Bad:
    weights = ctx.ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return Bad(ctx.build(), ("model.safetensors", "truncated"))


@case("weights-not-safetensors")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, or something else entirely")
    return Bad(ctx.build(), ("model.safetensors", "not a readable safetensors file"))


@case("weights-wrong-tensor-shape")
def _(ctx: Ctx) -> Bad:
    from safetensors.numpy import load_file, save_file

    weights = ctx.ckpt / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("q_lin.weight"))
    tensors[name] = tensors[name][:, :16].copy()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return Bad(ctx.build(), ("model.safetensors", "q_lin.weight", "shape"))


@case("weights-missing-tensors")
def _(ctx: Ctx) -> Bad:
    ctx.edit_config(n_layers=3)
    return Bad(ctx.build(), ("model.safetensors", "missing tensor"))


@case("weights-shard-missing")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"distilbert.embeddings.word_embeddings.weight": "model-00001.safetensors"}}
    (ctx.ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    return Bad(ctx.build(), ("model.safetensors.index.json", "shard model-00001.safetensors is missing"))


@case("weights-shard-index-not-json")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "model.safetensors.index.json").write_text("{ no")
    return Bad(ctx.build(), ("model.safetensors.index.json", "not a valid shard index"))


# TensorFlow's tf_model.h5 and Flax's flax_model.msgpack (distilforge/weights/): the tiny classifier those
# frameworks wrote, made once per session (the foreign_checkpoints fixture)

Q_LIN = "distilbert/transformer/layer_._0/attention/q_lin/kernel:0"  # a TF variable name, less the model's level
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 192856\n"


def _edit_h5(path: Path, change: Callable[..., None]) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        group = f["distilbert"]
        name = next(n for n in group.attrs["weight_names"] if (n.decode() if isinstance(n, bytes) else n)
                    .endswith(Q_LIN))
        change(group, name.decode() if isinstance(name, bytes) else name)


def _edit_msgpack(path: Path, change: Callable[[dict], None]) -> None:
    import msgpack

    tree = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)  # arrays stay ExtType
    change(tree)
    path.write_bytes(msgpack.packb(tree, use_bin_type=True))


def _flax_array(shape: tuple[int, ...]):
    import msgpack
    import numpy as np

    data = np.zeros(shape, dtype=np.float32)
    return msgpack.ExtType(1, msgpack.packb((shape, "float32", data.tobytes()), use_bin_type=True))


@case("tf-weights-not-hdf5")
def _(ctx: Ctx) -> Bad:
    ctx.use_foreign("tensorflow").write_bytes(b"PK\x03\x04 this is a zip, or something else entirely")
    return Bad(ctx.build(), ("tf_model.h5", "not a readable HDF5 file"))


@case("tf-weights-truncated")
def _(ctx: Ctx) -> Bad:
    weights = ctx.use_foreign("tensorflow")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return Bad(ctx.build(), ("tf_model.h5", "not a readable HDF5 file", "truncated"))


@case("tf-weights-lfs-pointer")
def _(ctx: Ctx) -> Bad:
    ctx.use_foreign("tensorflow").write_text(LFS_POINTER)
    return Bad(ctx.build(), ("tf_model.h5", "a Git LFS pointer, not the weights", "git lfs pull"))


@case("tf-weights-missing-tensor")
def _(ctx: Ctx) -> Bad:
    def drop(group, name):
        group.attrs["weight_names"] = [n for n in group.attrs["weight_names"]
                                       if (n.decode() if isinstance(n, bytes) else n) != name]
        del group[name]
    _edit_h5(ctx.use_foreign("tensorflow"), drop)
    return Bad(ctx.build(), ("tf_model.h5", "1 missing tensor(s), e.g. distilbert.transformer.layer.0.attention."
                                            "q_lin.weight"))


@case("tf-weights-wrong-tensor-shape")
def _(ctx: Ctx) -> Bad:
    def narrow(group, name):
        value = group[name][()]
        del group[name]
        group.create_dataset(name, data=value[:, :16])
    _edit_h5(ctx.use_foreign("tensorflow"), narrow)
    return Bad(ctx.build(), ("tf_model.h5", "q_lin.weight: (16, 32) in the file, (32, 32) for config.json"))


@case("tf-weights-unexpected-tensors")
def _(ctx: Ctx) -> Bad:
    ctx.use_foreign("tensorflow")
    ctx.edit_config(architectures=["DistilBertModel"])  # the file holds a classifier
    return Bad(ctx.build(), ("tf_model.h5", "unexpected tensor(s) that DistilBertModel has no place for",
                             "classifier"))


@case("tf-shard-missing")
def _(ctx: Ctx) -> Bad:
    ctx.use_foreign("tensorflow", "seq-single-sharded")
    shard = sorted(ctx.ckpt.glob("tf_model-*.h5"))[0]
    shard.unlink()
    return Bad(ctx.build(), ("tf_model.h5.index.json", f"shard {shard.name} is missing"))


@case("flax-weights-not-msgpack")
def _(ctx: Ctx) -> Bad:
    ctx.use_foreign("flax").write_bytes(b"PK\x03\x04 this is a zip, or something else entirely")
    return Bad(ctx.build(), ("flax_model.msgpack", "not a readable Flax msgpack file"))


@case("flax-weights-truncated")
def _(ctx: Ctx) -> Bad:
    weights = ctx.use_foreign("flax")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return Bad(ctx.build(), ("flax_model.msgpack", "not a readable Flax msgpack file", "incomplete input"))


@case("flax-weights-missing-tensor")
def _(ctx: Ctx) -> Bad:
    def drop(tree):
        del tree["distilbert"]["transformer"]["layer"]["0"]["attention"]["q_lin"]["kernel"]
    _edit_msgpack(ctx.use_foreign("flax"), drop)
    return Bad(ctx.build(), ("flax_model.msgpack", "1 missing tensor(s), e.g. distilbert.transformer.layer.0."
                                                   "attention.q_lin.weight"))


@case("flax-weights-wrong-tensor-shape")
def _(ctx: Ctx) -> Bad:
    def narrow(tree):
        tree["distilbert"]["transformer"]["layer"]["0"]["attention"]["q_lin"]["kernel"] = _flax_array((32, 16))
    _edit_msgpack(ctx.use_foreign("flax"), narrow)
    return Bad(ctx.build(), ("flax_model.msgpack", "q_lin.weight: (16, 32) in the file, (32, 32) for config.json"))


@case("flax-weights-unexpected-tensor")
def _(ctx: Ctx) -> Bad:
    def add(tree):
        tree["pooler"] = {"kernel": _flax_array((32, 32)), "bias": _flax_array((32,))}
    _edit_msgpack(ctx.use_foreign("flax"), add)
    return Bad(ctx.build(), ("flax_model.msgpack", "2 unexpected tensor(s) that DistilBertForSequenceClassification "
                                                   "has no place for, e.g. pooler.bias"))


@case("tokenizer-broken")
def _(ctx: Ctx) -> Bad:
    (ctx.ckpt / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    return Bad(ctx.build(), ("ckpt", "tokenizer files cannot be loaded"))


# ---- sentence-transformers folders (modules.json) --------------------------------------------------------


def _sentence_folder(ctx: Ctx) -> Path:
    """sentence-transformers 2.x's layout over the tiny base model: 0_Transformer/, 1_Pooling/, 2_Normalize/."""
    from tiny import write_legacy_sentence_folder

    return write_legacy_sentence_folder(ctx.tiny["base"], ctx.tmp / "st")


def _edit_json(path: Path, edit: Callable[[object], object]) -> Path:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    return path


@case("sentence-modules-not-json")
def _(ctx: Ctx) -> Bad:
    folder = _sentence_folder(ctx)
    (folder / "modules.json").write_text("[{")
    return Bad(ctx.build(checkpoint=folder), ("modules.json", "not valid JSON"))


@case("sentence-unsupported-module")
def _(ctx: Ctx) -> Bad:
    folder = _sentence_folder(ctx)
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    _edit_json(folder / "modules.json", lambda modules: [*modules, dense])
    return Bad(ctx.build(checkpoint=folder), ("modules.json", "module 'sentence_transformers.models.Dense' is not "
                                                              "supported"))


@case("sentence-transformer-folder-missing")
def _(ctx: Ctx) -> Bad:
    folder = _sentence_folder(ctx)
    shutil.rmtree(folder / "0_Transformer")
    return Bad(ctx.build(checkpoint=folder), ("modules.json", "'0_Transformer' has no config.json"))


@case("sentence-pooling-unsupported")
def _(ctx: Ctx) -> Bad:
    folder = _sentence_folder(ctx)
    _edit_json(folder / "1_Pooling" / "config.json", lambda c: {**c, "pooling_mode_mean_tokens": False,
                                                                "pooling_mode_weightedmean_tokens": True})
    return Bad(ctx.build(checkpoint=folder), ("1_Pooling/config.json", "pooling mode 'weightedmean' is not supported"))


@case("sentence-pooling-dimension")
def _(ctx: Ctx) -> Bad:
    folder = _sentence_folder(ctx)
    _edit_json(folder / "1_Pooling" / "config.json", lambda c: {**c, "word_embedding_dimension": 48})
    return Bad(ctx.build(checkpoint=folder), ("0_Transformer/config.json", "dim is 32, but the Pooling module pools "
                                                                           "48-wide token embeddings"))


@case("eval-similarity-no-score")
def _(ctx: Ctx) -> Bad:
    path = ctx.file("sts.jsonl", _jsonl({"sentence1": "up", "sentence2": "down", "score": 1.0},
                                        {"sentence1": "up", "sentence2": "rain"}))
    return Bad(ctx.build("--eval", str(path), checkpoint=_sentence_folder(ctx)),
               ("sts.jsonl:2:", "missing field 'score'"))


# ---- calibration files (--calibration) ---------------------------------------------------------------


def _calibration(ctx: Ctx, name: str, content: str | bytes, *needles: str, samples: str = "2") -> Bad:
    path = ctx.file(name, content)
    return Bad(ctx.build("--calibration", str(path), "--calibration-samples", samples), (name, *needles))


@case("calibration-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--calibration", str(ctx.tmp / "calib.txt")), ("calib.txt", "no such file"))


@case("calibration-is-a-directory")
def _(ctx: Ctx) -> Bad:
    (ctx.tmp / "calib.txt").mkdir()
    return Bad(ctx.build("--calibration", str(ctx.tmp / "calib.txt")), ("calib.txt", "not a file"))


@case("calibration-unreadable")
def _(ctx: Ctx) -> Bad:
    bad = _calibration(ctx, "calib.txt", "the market is up\nrain and snow\n", "cannot be read", "Permission denied")
    (ctx.tmp / "calib.txt").chmod(0)
    bad.mode, bad.out_states = "unprivileged", ("earlier-build",)
    return bad


@case("calibration-empty")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.txt", "", "the file is empty")


@case("calibration-blank-lines")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.jsonl", "\n   \n\n", "the file is empty")


@case("calibration-not-utf8")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.txt", "caf\xe9 au lait\nrain\n".encode("latin-1"), "not UTF-8", "byte 3")


@case("calibration-unknown-extension")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.parquet", "x", "unknown file type '.parquet'")


@case("calibration-jsonl-not-json")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.jsonl", '{"text": "up"}\n{"text": \n', "calib.jsonl:2: not valid JSON")


@case("calibration-jsonl-not-an-object")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.jsonl", '{"text": "up"}\n["down"]\n', "calib.jsonl:2: expected a JSON object")


@case("calibration-no-text-column")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.csv", "id,body\n1,up\n2,down\n", "no 'text' field or column", "found: body, id")


@case("calibration-csv-without-header")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.csv", "the market is up\nrain and snow\nthe team won\n",
                        "no 'text' field or column", "first row is the header")


@case("calibration-text-not-a-string")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.jsonl", '{"text": "up"}\n{"text": 5}\n', "row 2: 'text' is missing or not a str")


@case("calibration-csv-ragged-rows")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.csv", "id,body\n1,up,and more cells\n2,down\n", "no 'text' field or column",
                        "found: body, id")


@case("calibration-lone-surrogate")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.jsonl", '{"text": "up"}\n{"text": "a \\ud800 b"}\n', "calib.jsonl:2:",
                        "lone surrogate")


@case("calibration-choices-empty")
def _(ctx: Ctx) -> Bad:
    path = ctx.file("calib.jsonl", '{"prompt": "the team", "choices": []}\n')
    return Bad(ctx.build("--calibration", str(path), "--calibration-samples", "1",
                         checkpoint=ctx.tiny["multiple-choice"]),
               ("calib.jsonl", "row 1: 'choices' must be a list of one or more non-empty strings"))


@case("calibration-too-few-samples")
def _(ctx: Ctx) -> Bad:
    return _calibration(ctx, "calib.txt", "up\ndown\nleft\n", "3 calibration samples, 128 asked for", samples="128")


# ---- labelled data (--eval) --------------------------------------------------------------------------


def _jsonl(*rows: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


EVAL_CASES: dict[str, tuple[str, str, str | bytes, tuple[str, ...]]] = {
    # case: (tiny checkpoint, file name, content, what the error line says)
    "eval-empty": ("seq-single", "e.jsonl", "", ("e.jsonl", "empty")),
    "eval-not-utf8": ("seq-single", "l.jsonl", '{"text": "caf\xe9", "label": 0}\n'.encode("latin-1"),
                      ("l.jsonl", "not UTF-8")),
    "eval-txt-file": ("seq-single", "e.txt", "the market is up\n", ("e.txt", "needs labels: use .jsonl or .csv")),
    "eval-missing-field": ("seq-single", "m.jsonl", _jsonl({"text": "up", "label": 0}, {"text": "down"}),
                           ("m.jsonl:2:", "missing field 'label'")),
    "eval-unknown-label": ("seq-single", "u.csv", "text,label\nup,LABEL_0\ndown,sports\n",
                           ("u.csv:3:", "'sports' is not in id2label")),
    "eval-label-out-of-range": ("seq-single", "r.jsonl", _jsonl({"text": "up", "label": 7}),
                                ("r.jsonl:1:", "label 7 is not in id2label")),
    "eval-label-wrong-type": ("seq-single", "t.jsonl", _jsonl({"text": "up", "label": [0]}),
                              ("t.jsonl:1:", "must be a class id (int) or a label name, not list")),
    "eval-label-not-ascii-digits": ("seq-single", "d.csv", "text,label\nup,\u00b2\n",
                                    ("d.csv:2:", "label '\u00b2' is not in id2label")),
    "eval-label-huge-id": ("seq-single", "h.jsonl", _jsonl({"text": "up", "label": "9" * 5000}),
                           ("h.jsonl:1:", "label '99999", "... is not in id2label")),
    "eval-regression-huge-number": ("seq-regression", "n.jsonl",
                                    _jsonl({"text": "up", "label": 1.0}, {"text": "x", "label": 10**400}),
                                    ("n.jsonl:2:", "must be a finite number")),
    "eval-lone-surrogate": ("seq-single", "s.jsonl", '{"text": "a \\udc80 b", "label": 0}\n',
                            ("s.jsonl:1:", "lone surrogate")),
    "eval-text-not-a-string": ("seq-single", "s.jsonl", _jsonl({"text": 12, "label": 0}),
                               ("s.jsonl:1:", "'text' must be text, got int")),
    "eval-regression-not-a-number": ("seq-regression", "w.jsonl",
                                     _jsonl({"text": "up", "label": 1.0}, {"text": "x", "label": "hi"}),
                                     ("w.jsonl:2:", "must be a finite number")),
    "eval-regression-one-value": ("seq-regression", "o.jsonl",
                                  _jsonl({"text": "up", "label": 1.0}, {"text": "x", "label": 1}),
                                  ("o.jsonl", "every label is the same value")),
    "eval-tags-length": ("token", "t.jsonl", _jsonl({"tokens": ["the", "bank"], "tags": ["O"]}),
                         ("t.jsonl:1:", "1 tags for 2 tokens")),
    "eval-answer-not-in-context": ("qa", "a.jsonl", _jsonl({"question": "who", "context": "the team won",
                                                            "answer": "bank"}),
                                   ("a.jsonl:1:", "answer 'bank' not found in its context")),
    "eval-choices-not-a-list": ("multiple-choice", "c.jsonl", _jsonl({"prompt": "the", "choices": "up", "label": 0}),
                                ("c.jsonl:1:", "'choices' must be a list")),
    "eval-one-choice": ("multiple-choice", "c.jsonl", _jsonl({"prompt": "the", "choices": ["up"], "label": 0}),
                        ("c.jsonl:1:", "'choices' has 1 entries; at least 2 are needed")),
    "eval-base-model": ("base", "b.jsonl", _jsonl({"text": "up", "label": 0}), ("DistilBertModel", "no labels")),
    "eval-masked-lm": ("masked-lm", "b.jsonl", _jsonl({"text": "up", "label": 0}),
                       ("DistilBertForMaskedLM", "no labels to score")),
}


def _eval_case(name: str) -> Callable[[Ctx], Bad]:
    def make(ctx: Ctx) -> Bad:
        key, file_name, content, needles = EVAL_CASES[name]
        path = ctx.file(file_name, content)
        return Bad(ctx.build("--eval", str(path), checkpoint=ctx.tiny[key]), needles)
    return make


for _name in EVAL_CASES:
    case(_name)(_eval_case(_name))


@case("eval-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--eval", str(ctx.tmp / "dev.jsonl")), ("dev.jsonl", "no such file"))


# ---- arguments ---------------------------------------------------------------------------------------


@case("out-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(["build", str(ctx.ckpt)], ("the following arguments are required: --out",))


@case("unknown-option")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--frobnicate"), ("unrecognized arguments: --frobnicate",))


@case("threads-zero")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--threads", "0"), ("--threads", "'0' must be at least 1"))


@case("threads-not-a-number")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--threads", "two"), ("--threads", "'two' is not an integer"))


@case("calibration-samples-zero")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--calibration-samples", "0"), ("--calibration-samples '0': must be at least 1",))


@case("calibration-samples-negative")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--calibration-samples", "-5"), ("--calibration-samples '-5': must be at least 1",))


@case("targets-unknown")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build(targets="onnx:fp64"), ("'onnx:fp64'", "known targets: onnx:fp32"))


@case("targets-empty")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build(targets=" , "), ("--targets", "no target named"))


@case("tolerance-no-value")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tolerance", "fp32.max_abs"), ("--tolerance 'fp32.max_abs'", "CLASS.FIELD=VALUE"))


@case("tolerance-unknown-class")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tolerance", "fp8.max_abs=1"), ("--tolerance 'fp8.max_abs=1'", "CLASS in fp32, fp16"))


@case("tolerance-not-a-number")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tolerance", "fp32.max_abs=lots"), ("fp32.max_abs=lots", "'lots' is not a number"))


@case("tolerance-negative")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tolerance", "int8.min_cosine=-1"), ("int8.min_cosine=-1", "non-negative"))


@case("tflite-shapes-malformed")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tflite-shapes", "1x128x", targets="tflite:fp32"), ("'1x128x'", "BATCHxSEQUENCE"))


@case("tflite-shapes-zero")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tflite-shapes", "0x16", targets="tflite:fp32"), ("'0x16'", "BATCHxSEQUENCE"))


@case("tflite-shapes-too-long")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tflite-shapes", "1x9999", targets="tflite:fp32"),
               ("1x9999", "longer than the model's maximum of 64"))


@case("tflite-shapes-choices")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--tflite-shapes", "1x2x16", targets="tflite:fp32"), ("1x2x16", "multiple-choice"))


@case("executorch-max-shape-malformed")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--executorch-max-shape", "4x", targets="executorch:fp32"), ("'4x'", "BATCHxSEQUENCE"))


@case("executorch-max-shape-two")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--executorch-max-shape", "1x16,2x32", targets="executorch:fp32"), ("1x16,2x32", "one shape"))


@case("executorch-max-shape-too-long")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--executorch-max-shape", "1x9999", targets="executorch:fp32"),
               ("1x9999", "longer than the model's maximum of 64"))


@case("executorch-max-shape-rank")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--executorch-max-shape", "1x2x16", targets="executorch:fp32"),
               ("1x2x16", "takes BATCHxSEQUENCE"))


# ---- the output directory ----------------------------------------------------------------------------


@case("out-not-empty")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    (ctx.out / "keep.txt").write_text("mine")
    return Bad(ctx.build(), (str(ctx.out), "not empty", "--force"), out_states=("prepared",))


@case("out-is-a-file")
def _(ctx: Ctx) -> Bad:
    ctx.out.write_text("x")
    return Bad(ctx.build(), (str(ctx.out), "exists and is not a directory"), out_states=("prepared",))


@case("out-parent-is-a-file")
def _(ctx: Ctx) -> Bad:
    parent = ctx.file("parent", "x")
    ctx.out = parent / "out"
    return Bad(ctx.build(), (str(ctx.out), "cannot be created", "is not a directory"), out_states=("prepared",))


@case("out-not-writable")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    ctx.out.chmod(0o500)
    return Bad(ctx.build(), (str(ctx.out), "not writable"), mode="unprivileged", out_states=("prepared",))


@case("out-parent-not-writable")
def _(ctx: Ctx) -> Bad:
    parent = ctx.tmp / "readonly"
    parent.mkdir()
    parent.chmod(0o500)
    ctx.out = parent / "out"
    return Bad(ctx.build(), (str(ctx.out), "cannot be created", "not writable"), mode="unprivileged",
               out_states=("prepared",))


@case("out-locked")
def _(ctx: Ctx) -> Bad:
    lock = exclusive(ctx.out)  # another build holds the directory until the case is over
    lock.__enter__()
    ctx.cleanups.append(lambda: lock.__exit__(None, None, None))
    return Bad(ctx.build(), (str(ctx.out), "another distilforge process is writing into it"), out_states=("prepared",))


@case("out-disk-full")
def _(ctx: Ctx) -> Bad:
    ctx.out = ctx.tmp / "new" / "out"  # both folders are the build's to create, and to remove again
    return Bad(ctx.build(), (str(ctx.out), "no space left", "File too large"), mode="disk-full",
               out_states=("fresh",))


# ---- validate, bench, report: the output directory as input ------------------------------------------


@case("validate-no-manifest")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    return Bad(["validate", str(ctx.out)], ("manifest.json", "not found"), out_states=("prepared",))


@case("validate-dir-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(["validate", str(ctx.out)], (str(ctx.out), "not a directory"), out_states=("prepared",))


@case("validate-manifest-not-json")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    (ctx.out / "manifest.json").write_text("{ no")
    return Bad(["validate", str(ctx.out)], ("manifest.json", "not valid JSON"), out_states=("prepared",))


@case("validate-manifest-other-schema")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    (ctx.out / "manifest.json").write_text('{"schema_version": 7}')
    return Bad(["validate", str(ctx.out)], ("manifest.json", "schema_version 7 is not 1 or 2"),
               out_states=("prepared",))


@case("validate-manifest-incomplete")
def _(ctx: Ctx) -> Bad:
    ctx.out.mkdir()
    (ctx.out / "manifest.json").write_text('{"schema_version": 1, "checkpoint": {}, "settings": {}}')
    return Bad(["validate", str(ctx.out)], ("manifest.json", "'artifacts' is missing"), out_states=("prepared",))


@case("validate-cpu-unknown")
def _(ctx: Ctx) -> Bad:
    return Bad(["validate", str(ctx.out), "--cpu", "arm64:cortex-a99"], ("arm64:cortex-a99", "arm64:cortex-a76"),
               out_states=("earlier-build",))


@case("validate-targets-not-built")
def _(ctx: Ctx) -> Bad:
    return Bad(["validate", str(ctx.out), "--targets", "onnx:fp16"], ("manifest.json", "onnx:fp16", "--targets"),
               out_states=("earlier-build",))


@case("validate-on-unknown-cpu")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--validate-on", "arm64:cortex-a76,arm64:pixel"), ("arm64:pixel", "arm64:neoverse-n2"))


# ---- merge and build-many: parts and plans --------------------------------------------------------------

_PARTS: dict[tuple[str, str], Path] = {}
PART_TARGETS = "onnx:fp32,torchscript:fp32"


def shard(ctx: Ctx, key: str, k: int, *extra: str) -> Path:
    """Shard k/2 of PART_TARGETS for a tiny checkpoint, built once per session, copied for the case."""
    from distilforge.options import BuildOptions
    from distilforge.pipeline import Part, build
    from distilforge.validate.tolerances import parse_overrides

    cache = (key, f"{k}{extra}")
    if cache not in _PARTS:
        assert ctx.request is not None  # in the session's folders, which pytest removes (not /tmp's)
        where = ctx.request.getfixturevalue("tmp_path_factory").mktemp("merge-parts") / f"{key}-{k}"
        build(ctx.tiny[key], where, targets=PART_TARGETS.split(","), part=Part(index=k, count=2),
              options=BuildOptions(threads=1, tolerances=parse_overrides(list(extra))))
        _PARTS[cache] = where
    copy = ctx.tmp / f"{key}-{k}-{len(list(ctx.tmp.glob(f'{key}-{k}-*')))}"
    shutil.copytree(_PARTS[cache], copy)
    return copy


def rewrite_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    """Edit a part's manifest and give it a matching digest, as a build with other inputs would have written it."""
    from distilforge.artifacts.manifest import manifest_digest

    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    manifest["digest"] = manifest_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def merge_argv(ctx: Ctx, *parts: Path) -> list[str]:
    return ["merge", *map(str, parts), "--out", str(ctx.out)]


@case("shard-malformed")
def _(ctx: Ctx) -> Bad:
    return Bad(ctx.build("--shard", "4/3"), ("--shard '4/3'", "K/N"))


@case("merge-other-checkpoint")
def _(ctx: Ctx) -> Bad:
    other = shard(ctx, "token", 2)
    return Bad(merge_argv(ctx, shard(ctx, "seq-single", 1), other),
               (str(other), "different checkpoint bytes", "config.json"))


@case("merge-other-settings")
def _(ctx: Ctx) -> Bad:
    other = shard(ctx, "seq-single", 2, "fp32.max_abs=0.001")
    return Bad(merge_argv(ctx, shard(ctx, "seq-single", 1), other), (str(other), "different settings", "max_abs"))


@case("merge-other-tools")
def _(ctx: Ctx) -> Bad:
    other = shard(ctx, "seq-single", 2)
    rewrite_manifest(other, lambda m: m["tools"].update(distilforge="0.0.1"))
    return Bad(merge_argv(ctx, shard(ctx, "seq-single", 1), other),
               (str(other), "different tool versions", "tools.distilforge"))


@case("merge-shard-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(merge_argv(ctx, shard(ctx, "seq-single", 1)), ("no part has torchscript:fp32", "every shard"))


@case("merge-overlap-differs")
def _(ctx: Ctx) -> Bad:
    one, other = shard(ctx, "seq-single", 1), shard(ctx, "seq-single", 1)
    path = other / "onnx-fp32" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")

    def rehash(m: dict) -> None:
        f = next(f for f in m["artifacts"][0]["files"] if f["path"] == "onnx-fp32/model.onnx")
        f["bytes"], f["sha256"] = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    rewrite_manifest(other, rehash)
    return Bad(merge_argv(ctx, one, shard(ctx, "seq-single", 2), other),
               (str(other), "onnx:fp32 with different bytes", "overlap"))


@case("merge-file-changed")
def _(ctx: Ctx) -> Bad:
    one = shard(ctx, "seq-single", 1)
    with open(one / "onnx-fp32" / "model.onnx", "ab") as f:
        f.write(b"\0")
    return Bad(merge_argv(ctx, one, shard(ctx, "seq-single", 2)),
               (str(one), "onnx-fp32/model.onnx", "the manifest says"))


@case("merge-manifest-edited")
def _(ctx: Ctx) -> Bad:
    one = shard(ctx, "seq-single", 1)
    manifest = json.loads((one / "manifest.json").read_text())
    manifest["passed"] = not manifest["passed"]
    (one / "manifest.json").write_text(json.dumps(manifest))
    return Bad(merge_argv(ctx, one, shard(ctx, "seq-single", 2)), ("manifest.json", "edited after the build"))


@case("merge-not-an-output")
def _(ctx: Ctx) -> Bad:
    (ctx.tmp / "empty").mkdir()
    return Bad(merge_argv(ctx, shard(ctx, "seq-single", 1), ctx.tmp / "empty"), ("manifest.json", "not found"))


def plan_case(ctx: Ctx, text: str) -> list[str]:
    plan = ctx.file("plan.toml", text)
    return ["build-many", str(plan), "--out", str(ctx.out)]


@case("plan-not-toml")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, "targets = [\n"), ("plan.toml", "not a valid TOML file"))


@case("plan-unknown-key")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, f'thread = 1\n[[checkpoint]]\npath = "{ctx.ckpt}"\n'),
               ("plan.toml", "unknown key 'thread'"))


@case("plan-no-checkpoint")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, 'targets = ["onnx:fp32"]\n'), ("plan.toml", "no [[checkpoint]] entries"))


@case("plan-file-missing")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, f'[[checkpoint]]\npath = "{ctx.ckpt}"\neval = "dev.jsonl"\n'),
               ("plan.toml", "checkpoint[0].eval", "dev.jsonl: no such file"))


@case("plan-duplicate-name")
def _(ctx: Ctx) -> Bad:
    entry = f'[[checkpoint]]\npath = "{ctx.ckpt}"\n'
    return Bad(plan_case(ctx, entry * 2), ("plan.toml", "ROOT/ckpt", "distinct names"))


@case("plan-unknown-target")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, f'targets = ["onnx:int3"]\n[[checkpoint]]\npath = "{ctx.ckpt}"\n'),
               ("plan.toml", "onnx:int3"))


@case("plan-bad-option")
def _(ctx: Ctx) -> Bad:
    return Bad(plan_case(ctx, f'[options]\nexecutorch_max_shape = "1x16,2x32"\n[[checkpoint]]\npath = "{ctx.ckpt}"\n'),
               ("plan.toml", "[options]: executorch_max_shape '1x16,2x32': give one shape"))


@case("ray-address-unreachable")
def _(ctx: Ctx) -> Bad:
    argv = plan_case(ctx, f'targets = ["onnx:fp32"]\n[[checkpoint]]\npath = "{ctx.ckpt}"\n')
    return Bad(argv + ["--ray-address", "127.0.0.1:1"], ("--ray-address 127.0.0.1:1", "nothing answers there"))


def test_disk_full_after_an_earlier_build_lists_nothing_half_written(tmp_path: Path, tiny_checkpoints: dict[str, Path],
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """Out of space while replacing an earlier build: like a killed build, no manifest vouches for anything,
    no staging folder is left, and `validate` says so. (TorchScript: libtorch's own file writer used to
    abort the whole process on a full disk.)"""
    from distilforge.pipeline import build

    out = tmp_path / "out"
    assert build(tiny_checkpoints["seq-single"], out, targets=["torchscript:fp32"]).passed
    argv = ["build", str(tiny_checkpoints["seq-single"]), "--out", str(out), "--targets", "torchscript:fp32",
            "--rebuild"]  # without it the rerun would reuse everything and write nothing
    code, stderr = run_subprocess(argv, "disk-full")
    lines = error_lines(stderr)
    assert code == 2 and len(lines) == 1, stderr
    assert "no space left for torchscript:fp32 (File too large)" in lines[0]
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".staging-*"))
    code, stderr = run_inline(["validate", str(out)], capfd)
    assert code == 2 and "manifest.json: not found" in stderr


# ---- the tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name: str, tmp_path: Path, tiny_checkpoints: dict[str, Path],
                   capfd: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    ctx = Ctx(tmp_path, tiny_checkpoints, request)
    bad = CASES[name](ctx)
    try:
        _check(bad, ctx, capfd)
    finally:
        for undo in ctx.cleanups:
            undo()


def _check(bad: Bad, ctx: Ctx, capfd: pytest.CaptureFixture[str]) -> None:
    for state in bad.out_states:
        if state in ("fresh", "earlier-build"):
            shutil.rmtree(ctx.out, ignore_errors=True)
        if state == "earlier-build":
            earlier_build(ctx.out)
        before = snapshot(ctx.out)
        if bad.mode == "inline":
            code, stderr = run_inline(bad.argv, capfd)
        else:
            code, stderr = run_subprocess(bad.argv, bad.mode)
        lines = error_lines(stderr)
        assert code == bad.code, (state, code, stderr)
        assert len(lines) == 1, (state, stderr)
        assert lines[0].startswith("distilforge: error: "), lines[0]
        for needle in bad.needles:
            assert needle in lines[0], (needle, lines[0])
        assert snapshot(ctx.out) == before, f"{state}: the output directory changed"
        if state == "fresh":
            assert not (ctx.tmp / "new").exists()  # nor a parent of it


def test_bad_input_table_matches_the_cases() -> None:
    """Every row of docs/bad-input.md's table is a case here, and every case is a row."""
    text = BAD_INPUT_DOC.read_text(encoding="utf-8")
    section = text.split("\n## The cases\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    assert len(rows) == len(set(rows)), "a row is listed twice"
    assert sorted(rows) == sorted(CASES)
    assert len(CASES) >= 25
