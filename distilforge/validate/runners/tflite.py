"""TFLite artifacts under ai-edge-litert's Interpreter (XNNPACK on CPU), one signature per declared shape.

Inputs smaller than a declared shape are padded into it (pad token, mask 0) and the outputs
cut back; a batch larger than the signature's is run in chunks. This is what an app feeding a
fixed-shape model does, so validation and benchmarks measure the same thing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilforge.artifacts.records import ExportedArtifact, TensorSpec
from distilforge.validate.runners import cast_inputs


class TFLiteRunner:
    def __init__(self, model_path: Path, artifact: ExportedArtifact, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self.artifact = artifact
        self.output_names = tuple(o.name for o in artifact.outputs)
        self.signatures = {tuple(shape): name for name, shape in artifact.details["signatures"].items()}
        self._runners: dict[str, object] = {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fed = cast_inputs(self.artifact, inputs)
        shape = fed["input_ids"].shape
        signature = self._signature_for(shape)
        chunk = signature[0]
        parts = [self._run_padded(_rows(fed, start, chunk), signature) for start in range(0, shape[0], chunk)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _signature_for(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The smallest declared shape the input fits in (its batch may be split into chunks)."""
        fits = [s for s in self.signatures
                if len(s) == len(shape) and all(a <= b for a, b in zip(shape[1:], s[1:], strict=True))]
        if not fits:
            declared = ", ".join("x".join(map(str, s)) for s in self.signatures)
            raise ValueError(f"{self.artifact.target}: input shape {'x'.join(map(str, shape))} does not fit any "
                             f"declared shape ({declared}); rebuild with --tflite-shapes")
        return min(fits, key=lambda s: (int(np.prod(s[1:])), s[0]))

    def _run_padded(self, inputs: dict[str, np.ndarray], signature: tuple[int, ...]) -> dict[str, np.ndarray]:
        actual = inputs["input_ids"].shape
        padded = {k: _pad_to(v, signature) for k, v in inputs.items()}
        runner = self._runner(self.signatures[signature])
        out = runner(**padded)
        details = runner.get_output_details()
        sizes = dict(zip(_axis_names(self.artifact.inputs[0]), actual, strict=True))
        return {spec.name: _cut(_dequantize(out[spec.name], details[spec.name]), spec, sizes)
                for spec in self.artifact.outputs}

    def _runner(self, name: str):
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name]


def _rows(inputs: dict[str, np.ndarray], start: int, count: int) -> dict[str, np.ndarray]:
    return {k: v[start:start + count] for k, v in inputs.items()}


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad every axis up to `shape`: id 0 is [PAD] in DistilBERT vocabularies, and mask 0 hides it."""
    if array.shape == shape:
        return array
    return np.pad(array, [(0, want - have) for have, want in zip(array.shape, shape, strict=True)])


def _axis_names(spec: TensorSpec) -> tuple[str, ...]:
    return tuple(str(d) for d in spec.shape)


def _cut(array: np.ndarray, spec: TensorSpec, sizes: dict[str, int]) -> np.ndarray:
    """Drop the padding: each named axis of the output back to the input's size."""
    index = tuple(slice(0, sizes[d]) if isinstance(d, str) and d in sizes else slice(None) for d in spec.shape)
    return np.asarray(array[index], dtype=np.float32)


def _dequantize(array: np.ndarray, detail: dict) -> np.ndarray:
    """Integer outputs (full-integer models) carry their scale and zero point."""
    if array.dtype == np.float32:
        return array
    scale, zero_point = detail["quantization"]
    return (array.astype(np.float32) - zero_point) * scale


def open_runner(out_dir: Path, artifact: ExportedArtifact, threads: int) -> TFLiteRunner:
    model_file = next(f for f in artifact.files if f.path.endswith(".tflite"))
    return TFLiteRunner(out_dir / model_file.path, artifact, threads)
