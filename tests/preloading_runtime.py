"""A runtime whose module has a `preload()`, for tests/test_isolated.py: each step leaves a file named by the
child's pid in $PRELOAD_MARKS, and the runner doubles its input."""

import os
from pathlib import Path


def _mark(what):
    Path(os.environ["PRELOAD_MARKS"], f"{os.getpid()}.{what}").touch()


def preload():
    _mark("preloaded")


class DoublingRunner:
    output_names = ("doubled",)

    def run(self, inputs):
        return {"doubled": inputs["x"] * 2}


def open_runner(out_dir, artifact, threads):
    _mark("opened")
    return DoublingRunner()
