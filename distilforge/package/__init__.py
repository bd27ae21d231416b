"""Packaging a build's validated artifacts for a model server or runtime (`distilforge package DIR --format
triton|transformers.js`)."""

from distilforge.package.transformersjs import package_transformersjs
from distilforge.package.triton import package_triton

__all__ = ["package_transformersjs", "package_triton"]
