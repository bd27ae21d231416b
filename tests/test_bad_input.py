"""Bad input: one line naming the file and the problem, exit code 2, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import make_checkpoint


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "distilforge", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    # progress lines ("[distilforge] ...") may come first; the error itself is one line
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[distilforge]")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("distilforge: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def checkpoint(tmp_path):
    return make_checkpoint(tmp_path / "ckpt", "seq-single")


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _case_not_a_directory(tmp_path, checkpoint):
    f = tmp_path / "file.txt"
    f.write_text("x")
    return f, ["file.txt", "not a directory"]


def _case_missing(tmp_path, checkpoint):
    return tmp_path / "nope", ["nope", "no such checkpoint"]


def _case_no_config(tmp_path, checkpoint):
    (checkpoint / "config.json").unlink()
    return checkpoint, ["config.json", "not found"]


def _case_config_not_json(tmp_path, checkpoint):
    (checkpoint / "config.json").write_text("{ not json")
    return checkpoint, ["config.json", "not valid JSON"]


def _case_not_distilbert(tmp_path, checkpoint):
    _edit_config(checkpoint, model_type="bert")
    return checkpoint, ["config.json", "'bert'", "distilbert"]


def _case_unknown_architecture(tmp_path, checkpoint):
    _edit_config(checkpoint, architectures=["DistilBertForCausalLM"])
    return checkpoint, ["config.json", "DistilBertForCausalLM"]


def _case_bad_dimension(tmp_path, checkpoint):
    _edit_config(checkpoint, n_heads=0)
    return checkpoint, ["config.json", "n_heads"]


def _case_no_weights(tmp_path, checkpoint):
    (checkpoint / "model.safetensors").unlink()
    return checkpoint, ["no weights found"]


def _case_truncated_weights(tmp_path, checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return checkpoint, ["model.safetensors", "truncated"]


def _case_weights_do_not_match(tmp_path, checkpoint):
    _edit_config(checkpoint, dim=64, hidden_dim=128)
    return checkpoint, ["model.safetensors", "weights"]


def _case_missing_layer_weights(tmp_path, checkpoint):
    _edit_config(checkpoint, n_layers=3)
    return checkpoint, ["model.safetensors", "missing tensor"]


BAD_CHECKPOINTS = {name[6:]: fn for name, fn in list(globals().items()) if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint(case, tmp_path, checkpoint):
    path, needles = BAD_CHECKPOINTS[case](tmp_path, checkpoint)
    out = tmp_path / "out"
    result = run_cli("build", str(path), "--out", str(out), "--targets", "onnx:fp32")
    assert_one_line_error(result, *needles)
    assert not out.exists()


def test_unknown_target(tmp_path, checkpoint):
    out = tmp_path / "out"
    result = run_cli("build", str(checkpoint), "--out", str(out), "--targets", "onnx:fp64")
    assert_one_line_error(result, "onnx:fp64", "onnx:fp32")
    assert not out.exists()


def test_out_dir_not_empty_without_manifest(tmp_path, checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("build", str(checkpoint), "--out", str(out), "--targets", "onnx:fp32")
    assert_one_line_error(result, str(out), "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_out_dir_is_a_file(tmp_path, checkpoint):
    out = tmp_path / "out"
    out.write_text("x")
    assert_one_line_error(run_cli("build", str(checkpoint), "--out", str(out)), "not a directory")


def test_bad_tolerance_override(tmp_path, checkpoint):
    out = tmp_path / "out"
    result = run_cli("build", str(checkpoint), "--out", str(out), "--tolerance", "fp32.max_abs=lots")
    assert_one_line_error(result, "fp32.max_abs=lots")
    assert not out.exists()


def test_validate_dir_without_manifest(tmp_path):
    assert_one_line_error(run_cli("validate", str(tmp_path)), "manifest.json", "not found")


def test_usage_error_exits_2():
    result = run_cli("build")
    assert result.returncode == 2
    assert "--out" in result.stderr


@pytest.mark.parametrize("shapes, needles", [
    ("1x128x", ["'1x128x'", "BATCHxSEQUENCE"]),
    ("0x16", ["'0x16'"]),
    ("1x9999", ["1x9999", "longer than the model's maximum of 64"]),
    ("1x2x16", ["1x2x16", "multiple-choice"]),
])
def test_bad_tflite_shapes(tmp_path, checkpoint, shapes, needles):
    out = tmp_path / "out"
    result = run_cli("build", str(checkpoint), "--out", str(out), "--targets", "tflite:fp32",
                     "--tflite-shapes", shapes)
    assert_one_line_error(result, *needles)
    assert not out.exists()
