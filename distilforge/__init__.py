"""distilforge: export, quantize, validate and benchmark DistilBERT models.

The Python API: `build(checkpoint, out, targets=...)`, `validate_dir(out)` and `load(out, target)` (a callable
that runs an artifact on text); see README.md.
"""

from distilforge.version import __version__  # noqa: F401 - the package's version, as users read it


def build(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy re-export
    from distilforge.pipeline import build as _build

    return _build(*args, **kwargs)


def validate_dir(*args, **kwargs):  # noqa: ANN002, ANN003
    from distilforge.pipeline.revalidate import validate_dir as _validate_dir

    return _validate_dir(*args, **kwargs)


def load(*args, **kwargs):  # noqa: ANN002, ANN003
    from distilforge.predict import load as _load

    return _load(*args, **kwargs)
