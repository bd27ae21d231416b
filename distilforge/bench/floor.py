"""The speed floor: what the model's GEMMs alone cost on this CPU, measured in the same run.

A DistilBERT encoder layer is four weight GEMMs (Q, K, V as one dim x 3*dim GEMM, the output projection
dim x dim, the FFN dim x hidden_dim and hidden_dim x dim) plus the attention score and context matmuls.
The floor graphs hold the weight GEMMs of every layer (each layer with its own weights, so they stream
from memory as in the model) as ONNX Runtime `MatMulInteger` (u8 activations with zero point 128 x s8
weights, the kernel dynamic quantization runs) or fp32 `MatMul`. Timing them gives the CPU's INT8 and fp32
GEMM rate; the model's total ops at that rate is its floor: what an artifact would take if everything but
the GEMMs were free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("int8", "fp32")


@dataclass(frozen=True)
class GemmShape:
    """The model's GEMM sizes (from the checkpoint config) at `tokens` = batch x sequence rows."""

    dim: int
    hidden_dim: int
    n_layers: int
    tokens: int

    @classmethod
    def from_config(cls, config: dict[str, Any], tokens: int) -> GemmShape:
        return cls(dim=int(config["dim"]), hidden_dim=int(config["hidden_dim"]), n_layers=int(config["n_layers"]),
                   tokens=tokens)

    def layer_gemms(self) -> tuple[tuple[int, int], ...]:
        """(K, N) of one layer's weight GEMMs."""
        d, h = self.dim, self.hidden_dim
        return (d, 3 * d), (d, d), (d, h), (h, d)


@dataclass(frozen=True)
class ModelOps:
    """2 x multiply-adds of one forward pass, in GOP. The classifier head (a GEMM or two on one row per
    sequence) and the embeddings are left out."""

    linear_gop: float  # the weight GEMMs: what the floor graphs run
    attention_gop: float  # Q.K^T and P.V

    @property
    def total_gop(self) -> float:
        return self.linear_gop + self.attention_gop


def model_ops(shape: GemmShape, seq: int) -> ModelOps:
    linear = shape.n_layers * sum(k * n for k, n in shape.layer_gemms()) * 2 * shape.tokens
    batch = max(1, shape.tokens // seq)
    attention = shape.n_layers * 2 * batch * seq * seq * shape.dim * 2
    return ModelOps(linear_gop=linear / 1e9, attention_gop=attention / 1e9)


def write_gemm_model(path: Path, shape: GemmShape, precision: str, seed: int = 3) -> Path:
    """One ONNX graph holding every layer's weight GEMMs at M = shape.tokens (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    int8 = precision == "int8"
    in_type = TensorProto.UINT8 if int8 else TensorProto.FLOAT
    out_type = TensorProto.INT32 if int8 else TensorProto.FLOAT
    widths = sorted({k for k, _ in shape.layer_gemms()})
    inputs = [helper.make_tensor_value_info(f"x{k}", in_type, [shape.tokens, k]) for k in widths]
    nodes, inits, outputs = [], [], []
    if int8:
        inits.append(numpy_helper.from_array(np.array(128, np.uint8), "x_zero"))
    for layer in range(shape.n_layers):
        for i, (k, n) in enumerate(shape.layer_gemms()):
            w, y = f"w{layer}_{i}", f"y{layer}_{i}"
            if int8:
                inits.append(numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), w))
                nodes.append(helper.make_node("MatMulInteger", [f"x{k}", w, "x_zero"], [y]))
            else:
                inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), w))
                nodes.append(helper.make_node("MatMul", [f"x{k}", w], [y]))
            outputs.append(helper.make_tensor_value_info(y, out_type, None))
    graph = helper.make_graph(nodes, f"distilbert_gemms_{precision}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


class GemmRunner:
    """Runs a floor graph with its inputs bound once and outputs left in ORT's memory: only the GEMMs are timed."""

    output_names: tuple[str, ...] = ()

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.binding = self.session.io_binding()
        rng = np.random.default_rng(2)
        for spec in self.session.get_inputs():
            shape = tuple(spec.shape)
            value = (rng.integers(0, 256, size=shape, dtype=np.uint8) if "uint8" in spec.type
                     else rng.standard_normal(shape).astype(np.float32))
            self.binding.bind_cpu_input(spec.name, value)
        for spec in self.session.get_outputs():
            self.binding.bind_output(spec.name, "cpu")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.session.run_with_iobinding(self.binding)
        return {}


@dataclass(frozen=True)
class Floor:
    """bench.json's `floor`: the measured GEMM rates and the model's floor per precision class."""

    int8_gops_per_s: float | None
    fp32_gflops_per_s: float | None
    model_gop_1x128: float  # at batch 1 x `seq` (128 unless the model is shorter)
    int8_ms: float | None
    fp32_ms: float | None
    seq: int
    linear_gop: float
    attention_gop: float
    counted: str

    def for_class(self, precision_class: str) -> float | None:
        return self.int8_ms if precision_class == "int8" else self.fp32_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_floor(ops: ModelOps, seq: int, gemm_ms: dict[str, float | None]) -> Floor:
    """From the floor graphs' median times (weight GEMMs only) to the whole model's floor: the attention
    matmuls are assumed to run at the same rate."""
    scale = ops.total_gop / ops.linear_gop

    def rate(ms: float | None) -> float | None:
        return None if not ms else ops.linear_gop / ms * 1e3

    def floor_ms(ms: float | None) -> float | None:
        return None if not ms else ms * scale

    return Floor(int8_gops_per_s=rate(gemm_ms.get("int8")), fp32_gflops_per_s=rate(gemm_ms.get("fp32")),
                 model_gop_1x128=ops.total_gop, int8_ms=floor_ms(gemm_ms.get("int8")),
                 fp32_ms=floor_ms(gemm_ms.get("fp32")), seq=seq, linear_gop=ops.linear_gop,
                 attention_gop=ops.attention_gop,
                 counted="per layer: weight GEMMs dim x 3dim + dim x dim + dim x hidden + hidden x dim, and "
                         "Q.K^T + P.V (2 x seq x seq x dim MACs), 2 ops per MAC; head and embeddings left out")
