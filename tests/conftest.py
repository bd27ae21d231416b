import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

from tiny import TINY_MODELS, make_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_root) -> dict[str, Path]:
    """Every tiny head, built once per session."""
    return {t.key: make_checkpoint(tiny_root, t) for t in TINY_MODELS}


@pytest.fixture(scope="session")
def default_checkpoint():
    """The built-in default model (built once per cache; slow the first time)."""
    from distilforge.default_model import ensure_default_checkpoint

    return ensure_default_checkpoint()
