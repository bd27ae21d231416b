"""TFLite specifics: declared fixed shapes, one signature each, and a runner that pads into them."""

import numpy as np
import pytest

from distilforge.checkpoint import inspect_checkpoint
from distilforge.errors import UsageError
from distilforge.options import BuildOptions, parse_shapes
from distilforge.targets import TARGETS

pytestmark = pytest.mark.skipif(not TARGETS["tflite:fp32"].installed(), reason="tflite extra not installed")


def test_parse_shapes():
    assert parse_shapes("1x128, 1x384,1x128") == ((1, 128), (1, 384))
    assert parse_shapes("2x4x64") == ((2, 4, 64),)
    for bad in ("", "128", "1x", "1x-3", "axb", "1x2x3x4"):
        with pytest.raises(UsageError):
            parse_shapes(bad)


def test_declared_shapes_default_and_multiple_choice(tiny_checkpoints):
    from distilforge.exporters.tflite import declared_shapes

    seq = inspect_checkpoint(tiny_checkpoints["seq-single"])
    assert declared_shapes(seq, BuildOptions()) == [(1, 64)]  # 1 x min(128, max positions 64)
    mc = inspect_checkpoint(tiny_checkpoints["multiple-choice"])
    assert declared_shapes(mc, BuildOptions(tflite_shapes=((1, 32), (2, 4, 16)))) == [(1, 2, 32), (2, 4, 16)]


def test_several_signatures_and_padding(tiny_checkpoints, tmp_path):
    from distilforge.artifacts.records import ExportedArtifact
    from distilforge.pipeline import build
    from distilforge.pipeline.source import load_source
    from distilforge.validate.runners.eager import EagerRunner
    from distilforge.validate.runners.tflite import open_runner

    result = build(tiny_checkpoints["token"], tmp_path / "out", targets=["tflite:fp32"],
                   options=BuildOptions(tflite_shapes=((1, 16), (2, 64))), force=True)
    assert result.passed, result.failures
    record = result.manifest["artifacts"][0]
    assert record["details"]["signatures"] == {"serving_1x16": [1, 16], "serving_2x64": [2, 64]}
    assert {tuple(c["shape"]) for c in record["validation"]["cases"]} >= {(1, 16), (2, 64)}

    artifact = ExportedArtifact.from_dict(record)
    runner = open_runner(result.out, artifact, 2)
    source = load_source(tiny_checkpoints["token"])
    eager = EagerRunner(source.ckpt.model, source.ckpt.head, 2)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, size=(5, 40))  # 5 rows in chunks of 2, each padded from 40 to 64
    mask = np.ones_like(ids)
    mask[1, 30:] = 0
    feed = {"input_ids": ids, "attention_mask": mask}
    got, want = runner.run(feed)["logits"], eager.run(feed)["logits"]
    assert got.shape == want.shape == (5, 40, want.shape[-1])
    assert np.abs(got - want)[mask == 1].max() < 1e-4

    with pytest.raises(ValueError, match="--tflite-shapes"):
        runner.run({"input_ids": ids[:, :1].repeat(65, axis=1)[:, :65], "attention_mask": np.ones((5, 65))})
