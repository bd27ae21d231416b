"""Every registered target, on every tiny head: built, run through its runner, validated."""

import pytest
from tiny import TINY_MODELS

from distilforge.pipeline import build
from distilforge.targets import TARGETS

# Each registered target must appear here (see test_every_target_is_tested), with the tolerance
# overrides its test needs on random weights (none: the defaults of DESIGN.md apply).
TARGET_TESTS: dict[str, list[str]] = {
    "onnx:fp32": [],
    "torchscript:fp32": [],
}


def test_every_target_is_tested():
    assert set(TARGETS) == set(TARGET_TESTS), "register a test for every target in TARGET_TESTS"


@pytest.mark.parametrize("target", sorted(TARGET_TESTS))
@pytest.mark.parametrize("tiny", TINY_MODELS, ids=lambda t: t.key)
def test_target_builds_and_validates(target, tiny, tiny_checkpoints, tmp_path):
    from distilforge.options import BuildOptions
    from distilforge.validate.tolerances import parse_overrides

    if not TARGETS[target].installed():
        pytest.skip(f"{target}: backend not installed")
    options = BuildOptions(tolerances=parse_overrides(TARGET_TESTS[target]))
    result = build(tiny_checkpoints[tiny.key], tmp_path / "out", targets=[target], options=options)
    assert result.passed, "\n".join(result.failures)
    entry = result.manifest["artifacts"][0]
    assert entry["target"] == target and entry["validation"]["passed"]
    assert entry["files"] and all((tmp_path / "out" / f["path"]).is_file() for f in entry["files"])
    shapes = {tuple(c["shape"]) for c in entry["validation"]["cases"]}
    assert len(shapes) >= (1 if entry["fixed_shapes"] else 4)


def test_torchscript_records_the_tracing_deprecation(tiny_checkpoints, tmp_path):
    result = build(tiny_checkpoints["qa"], tmp_path / "out", targets=["torchscript:fp32"])
    warnings = result.manifest["artifacts"][0]["warnings"]
    assert any("torch.jit.trace` is deprecated" in w for w in warnings), warnings
