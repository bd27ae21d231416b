"""The package's version, importable from any module without importing the package's API (distilforge/__init__.py)."""

__version__ = "0.1.0"
