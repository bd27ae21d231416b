"""What distilforge's own processes (the CLI, its build and bench workers, Ray tasks) tell the libraries they
import, before they import them. A user's Python process that calls the API is left as it is."""

from __future__ import annotations

import os
import sys

# transformers imports these when installed, for code a DistilBERT export, validation or prediction never runs:
# scikit-learn (assisted generation), SciPy (detection models' losses), torchao (its quantized-checkpoint loaders).
# Measured on the AVX2 class: loading a tiny checkpoint in a fresh process took 8.5 s, 6.2 s without scikit-learn.
OPTIONAL_FOR_TRANSFORMERS = ("_sklearn_available", "_scipy_available", "_torchao_available")

_ours = False


def for_our_process() -> None:
    """Call first thing in a process distilforge owns: transformers then imports neither TensorFlow nor JAX (unless
    USE_TF / USE_FLAX say otherwise), and (`lean_transformers`) none of the packages above."""
    global _ours
    _ours = True
    os.environ.setdefault("USE_TF", "0")  # transformers would import TensorFlow (seconds, and noise) otherwise
    os.environ.setdefault("USE_FLAX", "0")  # ... and JAX, where Flax is installed (the test-only fixtures extra)


def lean_transformers() -> None:
    """Before transformers' modelling code is first imported, in one of our processes: tell it the optional packages
    above are not there. Importing transformers imports torch, so this is called where a model is loaded, not at
    start-up (`predict` on an ONNX artifact imports neither)."""
    if not _ours or "transformers.modeling_utils" in sys.modules:
        return
    from transformers.utils import import_utils

    for flag in OPTIONAL_FOR_TRANSFORMERS:
        if isinstance(getattr(import_utils, flag, None), bool):  # a transformers that names them otherwise: as is
            setattr(import_utils, flag, False)
