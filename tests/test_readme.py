"""The README's "Use an artifact" lines are run as written, on a tiny build standing in for `artifacts/`."""

import re
from pathlib import Path

import pytest
from conftest import installed_targets

README = Path(__file__).resolve().parent.parent / "README.md"
FORMATS = ("onnx", "openvino", "torchscript", "tflite")


def loading_blocks() -> dict[str, str]:
    """format -> the python block in "Use an artifact" whose first line is `# <format>: ...`."""
    section = README.read_text(encoding="utf-8").split("\n## Use an artifact\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return {b.split(":", 1)[0].removeprefix("# "): b for b in blocks}


def test_every_format_has_its_lines():
    assert sorted(loading_blocks()) == sorted(FORMATS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_readme_lines_load_the_folder(fmt, built, monkeypatch):
    code = loading_blocks()[fmt]
    folder = re.search(r'folder = "artifacts/([a-z0-9-]+)"', code).group(1)
    target = folder.replace("-", ":", 1)
    if target not in installed_targets():
        pytest.skip(f"{target}: backend not installed")
    if fmt == "openvino":
        pytest.importorskip("optimum.intel")
    out = built("seq-single").out
    monkeypatch.chdir(out.parent)
    code = code.replace('"artifacts/', f'"{out.name}/')
    scope: dict = {}
    exec(compile(code, f"README.md ({fmt})", "exec"), scope)
    if "classify" in scope:
        (result,) = scope["classify"]("the striker scored twice in the final", top_k=1)
        assert result["label"].startswith("LABEL_")
    else:
        assert tuple(scope["logits"].shape) == (1, 3)
