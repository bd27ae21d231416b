"""A runtime that kills its own process on the first inference, the way a native runtime's segfault
does. Imported by the validation child process (tests/ is put on PYTHONPATH by the test)."""

import os
import signal

from distilforge.validate.runners.onnx import open_runner as open_onnx


class CrashingRunner:
    def __init__(self, inner):
        self.inner = inner
        self.output_names = inner.output_names

    def run(self, inputs):
        os.kill(os.getpid(), signal.SIGSEGV)


def open_runner(out_dir, artifact, threads):
    return CrashingRunner(open_onnx(out_dir, artifact, threads))
