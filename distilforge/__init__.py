"""distilforge: export, quantize, validate and benchmark DistilBERT models.

The Python API: `build(checkpoint, out, targets=...)` and `validate_dir(out)`; see README.md.
"""

__version__ = "0.1.0"


def build(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export
    from distilforge.pipeline import build as _build

    return _build(*args, **kwargs)


def validate_dir(*args, **kwargs):  # noqa: ANN002, ANN003
    from distilforge.pipeline import validate_dir as _validate_dir

    return _validate_dir(*args, **kwargs)
