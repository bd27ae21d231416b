"""Packaging a build's validated artifacts for a model server (`distilforge package DIR --format triton`)."""

from distilforge.package.triton import package_triton

__all__ = ["package_triton"]
