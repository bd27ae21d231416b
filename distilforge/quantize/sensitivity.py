"""Which layers cost INT8 its accuracy: each quantizable layer measured alone, before any artifact is built.

The proxy: the eager model with one layer group fake-quantized the way the target's format quantizes a Linear
(`Scheme`: weight bits and granularity, activations per tensor or per token at run time, or from calibrated
ranges), run on real text, compared row by row with the clean eager model. A layer's cost is 1 - the mean
cosine of the rows' outputs (its worst row beside it). One pass per group, no converter involved, from the
group's own layer on (the layers before it give their recorded clean outputs): about a third of a second per group
for the default model, so every INT8 target gets its table and the ladder's measured rungs
keep float exactly the layers that cost the most (quantize/ladder.py: `measured_rungs`).

Groups: a DistilBERT encoder layer has four: `qkv` (the query, key and value projections read one input, and
ONNX Runtime's QAttention and our TorchScript fuse them into one GEMM, so they are kept float together),
`attention_out`, `ffn_in` and `ffn_out`; every other Linear (the task head's) is a group of its own,
`head.<name>`. Group names are the same for every format: `layer.3.ffn_out`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distilforge.errors import ExportError

ENCODER_LINEAR = re.compile(r"(?:^|\.)layer\.(\d+)\.(attention\.[qkv]_lin|attention\.out_lin|ffn\.lin1|ffn\.lin2)$")
ENCODER_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)$")
ROLE_OF = {"attention.q_lin": "qkv", "attention.k_lin": "qkv", "attention.v_lin": "qkv",
           "attention.out_lin": "attention_out", "ffn.lin1": "ffn_in", "ffn.lin2": "ffn_out"}
ROLES = ("qkv", "attention_out", "ffn_in", "ffn_out", "head")
ACTIVATIONS = ("tensor", "token", "static", "none")
CALIBRATION_SAMPLES = 32  # static ranges: this many calibration samples, each run alone (as calibrators do)


def group_of(module_name: str) -> str:
    """The layer group of a Linear, from its module name under any prefix: `layer.3.ffn_out`, `head.classifier`."""
    match = ENCODER_LINEAR.search(module_name)
    if match:
        return f"layer.{match.group(1)}.{ROLE_OF[match.group(2)]}"
    return "head." + module_name.rsplit(".", 1)[-1]


def role_of(group: str) -> str:
    return "head" if group.startswith("head.") else group.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Scheme:
    """How a format's base INT8 recipe computes a Linear, as the eager proxy imitates it.

    activations: "tensor" (one range per tensor at run time, padding included), "token" (one per row at run
    time), "static" (calibrated per-tensor ranges) or "none" (weight-only). `float_roles`: roles the recipe
    never quantizes (not measured); `dynamic_roles`: in a static recipe, roles that quantize at run time per
    token instead."""

    weight_bits: int = 8
    per_channel: bool = True
    activations: str = "tensor"
    float_roles: tuple[str, ...] = ()
    dynamic_roles: tuple[str, ...] = ()

    def describe(self) -> str:
        weights = f"{self.weight_bits}-bit symmetric weights per {'output channel' if self.per_channel else 'tensor'}"
        acts = {"tensor": "8-bit activations with one range per tensor at run time",
                "token": "8-bit activations with one range per token at run time",
                "static": "8-bit activations with calibrated per-tensor ranges",
                "none": "float activations (weight-only)"}[self.activations]
        extra = f"; {', '.join(self.dynamic_roles)} per token at run time" if self.dynamic_roles else ""
        return f"{weights}, {acts}{extra}"


@dataclass(frozen=True)
class LayerCost:
    layer: str  # the group: layer.3.ffn_out
    cost: float  # 1 - mean cosine of the outputs' rows with this group alone int8
    worst: float  # 1 - min cosine


@dataclass(frozen=True)
class Sensitivity:
    """A target's table: every quantizable group, most costly first."""

    method: str
    inputs: str
    layers: tuple[LayerCost, ...]

    def top(self, k: int) -> tuple[str, ...]:
        return tuple(c.layer for c in self.layers[:k])

    def cost_of(self, layer: str) -> float:
        return next(c.cost for c in self.layers if c.layer == layer)

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "inputs": self.inputs, "layers": [asdict(c) for c in self.layers]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivity:
        return cls(data["method"], data["inputs"], tuple(LayerCost(**c) for c in data["layers"]))


def measure(model: Any, output_names: Sequence[str], cases: Sequence[dict[str, np.ndarray]], scheme: Scheme, *,
            calibration: Sequence[dict[str, np.ndarray]] = (), inputs: str = "") -> Sensitivity:
    """Quantize each group alone (as `scheme` says) in the eager model, run `cases`, and rank the groups by cost.

    `calibration` (static schemes): unpadded samples whose per-tensor input ranges the static groups get."""
    import torch

    model = model.eval()
    groups = quantizable_groups(model, scheme)
    if not groups:
        return Sensitivity(_method(scheme), inputs, ())
    ranges = static_ranges(model, scheme, calibration or cases)
    layers = encoder_layers(model)
    with torch.inference_mode(), _recording(layers) as recorded:
        reference = [_rows(model, case, output_names) for case in cases]
    recorded = recorded if layers else [[] for _ in cases]
    with torch.inference_mode():
        costs = []
        for group, modules in groups.items():
            start = _first_layer_changed(group, len(layers))
            with _fake_quantized_groups({group: modules}, scheme, ranges):
                cosines = np.concatenate([
                    _cosines(ref, _rows_from(model, case, output_names, layers[:start], outputs[:start]))
                    for ref, case, outputs in zip(reference, cases, recorded, strict=True)])
            costs.append(LayerCost(group, _rounded(1.0 - float(cosines.mean())), _rounded(1.0 - float(cosines.min()))))
    ranked = sorted(costs, key=lambda c: (-c.cost, -c.worst, c.layer))
    return Sensitivity(_method(scheme), inputs, tuple(ranked))


def predicted_error(model: Any, output_names: Sequence[str], cases: Sequence[dict[str, np.ndarray]],
                    reference: Sequence[np.ndarray], scheme: Scheme, float_groups: Sequence[str],
                    ranges: dict[Any, tuple[float, float]]) -> float:
    """A whole recipe in eager: every group the scheme quantizes fake-quantized at once, but `float_groups`;
    1 - the mean cosine of the rows with `reference` (the clean model's `reference_rows`). Unlike the table, it
    sees the groups' errors together (they add up or cancel), so it can tell whether keeping more groups float
    helps this recipe before a format exports it. `ranges`: `static_ranges`."""
    import torch

    groups = {g: m for g, m in quantizable_groups(model, scheme).items() if g not in set(float_groups)}
    with torch.inference_mode(), _fake_quantized_groups(groups, scheme, ranges):
        return _rounded(1.0 - float(_row_cosines(model, output_names, cases, reference).mean()))


def encoder_layers(model: Any) -> list[Any]:
    """The encoder's layers in order (the modules named `...layer.<i>`), or [] when the model has none by that
    name (then every group's pass runs the whole model)."""
    found, parents = {}, set()
    for name, module in model.named_modules():
        match = ENCODER_LAYER.search(name)
        if match:
            found[int(match.group(1))] = module
            parents.add(name[:match.start()])
    return [found[i] for i in range(len(found))] if len(parents) == 1 and sorted(found) == list(range(len(found))) \
        else []


def _first_layer_changed(group: str, layers: int) -> int:
    """The first encoder layer whose output a group changes: its own for an encoder group, none (past the last)
    for a head group."""
    return int(group.split(".")[1]) if role_of(group) != "head" else layers


@contextlib.contextmanager
def _recording(layers: Sequence[Any]) -> Iterator[list[list[Any]]]:
    """While inside, every forward of the model appends one list to the yielded list: each layer's output."""
    runs: list[list[Any]] = []

    def keep(index: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            if index == 0:
                runs.append([])
            runs[-1].append(output)
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        yield runs
    finally:
        for handle in handles:
            handle.remove()


def _rows_from(model: Any, case: dict[str, np.ndarray], output_names: Sequence[str], unchanged: Sequence[Any],
               outputs: Sequence[Any]) -> np.ndarray:
    """`_rows`, with the `unchanged` leading layers giving their recorded clean `outputs` instead of computing them
    again: a group in layer 3 cannot change what layers 0-2 give, and the layers after take the same tensors, so
    the rows are the very ones a whole pass gives (the same kernels on the same values) at about half the cost."""
    for layer, output in zip(unchanged, outputs, strict=True):
        layer.forward = lambda *_args, _output=output, **_kwargs: _output
    try:
        return _rows(model, case, output_names)
    finally:
        for layer in unchanged:
            del layer.forward


def reference_rows(model: Any, output_names: Sequence[str], cases: Sequence[dict[str, np.ndarray]]
                   ) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [_rows(model.eval(), case, output_names) for case in cases]


def static_ranges(model: Any, scheme: Scheme, samples: Sequence[dict[str, np.ndarray]]
                  ) -> dict[Any, tuple[float, float]]:
    """Each quantized Linear's calibrated input range under a static scheme (none otherwise)."""
    if scheme.activations != "static":
        return {}
    return _input_ranges(model, quantizable_groups(model, scheme), samples)


def quantizable_groups(model: Any, scheme: Scheme) -> dict[str, list[Any]]:
    """Group name -> its nn.Linear modules, in model order, without the roles the scheme keeps float."""
    import torch

    groups: dict[str, list[Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and role_of(group_of(name)) not in scheme.float_roles:
            groups.setdefault(group_of(name), []).append(module)
    return groups


def head_groups(model: Any) -> list[str]:
    """The eager model's head groups (`head.pre_classifier`, `head.classifier`), in module order: the order their
    GEMMs run in, which is how the formats' graphs are matched to them."""
    return [g for g in quantizable_groups(model, Scheme()) if role_of(g) == "head"]


def placed_names(placed: dict[str, list[str]], groups: Sequence[str], target: str, missing: str) -> list[str]:
    """The names (nodes, ops, selectors) of `groups` in a format's model, from where each group was found there;
    a group found nowhere is an ExportError (`missing` says what it has none of)."""
    for group in groups:
        if not placed.get(group):
            raise ExportError(f"{target}: layer group {group} has no {missing}")
    return list(dict.fromkeys(name for group in groups for name in placed[group]))


def _method(scheme: Scheme) -> str:
    return ("eager PyTorch, one layer group at a time fake-quantized (" + scheme.describe() + "), the rest fp32; "
            "cost = 1 - mean cosine of each row's outputs with the fp32 model's")


def _mode(scheme: Scheme, group: str) -> str:
    return "token" if role_of(group) in scheme.dynamic_roles else scheme.activations


def _rounded(value: float) -> float:
    """Six significant digits: the ranking must not turn on the last bits of a float sum."""
    return float(f"{max(value, 0.0):.6g}")


def _rows(model: Any, case: dict[str, np.ndarray], output_names: Sequence[str]) -> np.ndarray:
    """Each row's outputs, flattened and concatenated: (batch, values)."""
    import torch

    out = model(input_ids=torch.from_numpy(np.asarray(case["input_ids"], dtype=np.int64)),
                attention_mask=torch.from_numpy(np.asarray(case["attention_mask"], dtype=np.int64)),
                return_dict=True)
    batch = case["input_ids"].shape[0]
    return np.concatenate([out[n].float().reshape(batch, -1).numpy().astype(np.float64) for n in output_names],
                          axis=1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)


def _input_ranges(model: Any, groups: dict[str, list[Any]], samples: Sequence[dict[str, np.ndarray]]
                  ) -> dict[Any, tuple[float, float]]:
    """Each Linear's input min and max over the calibration samples (MinMax, as the formats' calibrators)."""
    import torch

    ranges: dict[Any, tuple[float, float]] = {}

    def observe(module: Any, args: tuple[Any, ...]) -> None:
        low, high = float(args[0].min()), float(args[0].max())
        old = ranges.get(module, (low, high))
        ranges[module] = (min(old[0], low), max(old[1], high))

    handles = [m.register_forward_pre_hook(observe) for modules in groups.values() for m in modules]
    try:
        with torch.inference_mode():
            for sample in samples[:CALIBRATION_SAMPLES]:
                model(input_ids=torch.from_numpy(np.asarray(sample["input_ids"], dtype=np.int64)),
                      attention_mask=torch.from_numpy(np.asarray(sample["attention_mask"], dtype=np.int64)))
    finally:
        for handle in handles:
            handle.remove()
    return ranges


@contextlib.contextmanager
def _fake_quantized_groups(groups: dict[str, list[Any]], scheme: Scheme, ranges: dict[Any, tuple[float, float]]
                           ) -> Iterator[None]:
    """While inside, every Linear of `groups` computes as its fake-quantized twin."""
    handles = [m.register_forward_hook(_fake_quantized(m, scheme, _mode(scheme, group), ranges.get(m)))
               for group, modules in groups.items() for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _row_cosines(model: Any, output_names: Sequence[str], cases: Sequence[dict[str, np.ndarray]],
                 reference: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([_cosines(ref, _rows(model, case, output_names))
                           for ref, case in zip(reference, cases, strict=True)])


def _fake_quantized(module: Any, scheme: Scheme, mode: str, static_range: tuple[float, float] | None) -> Any:
    """A forward hook that replaces the Linear's output with the output of its fake-quantized twin."""
    import torch

    weight = fake_quantize_weight(module.weight.detach(), scheme.weight_bits, scheme.per_channel)

    def hook(_module: Any, args: tuple[Any, ...], _output: Any) -> Any:
        x = args[0]
        if mode != "none":
            x = fake_quantize_activation(x, mode, static_range)
        return torch.nn.functional.linear(x, weight, module.bias)

    return hook


def fake_quantize_weight(weight: Any, bits: int, per_channel: bool) -> Any:
    """Symmetric: round(w / s) * s with s = max|w| / (2^(bits-1) - 1), per output channel or per tensor."""
    import torch

    top = 2 ** (bits - 1) - 1
    peak = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().amax()
    scale = torch.clamp(peak / top, min=1e-12)
    return torch.clamp(torch.round(weight / scale), -top, top) * scale


def fake_quantize_activation(x: Any, mode: str, static_range: tuple[float, float] | None = None) -> Any:
    """Asymmetric 8-bit, the range always holding 0: per tensor or per token (run time), or a calibrated range."""
    import torch

    if mode == "static" and static_range is not None:
        low = torch.tensor(min(static_range[0], 0.0))
        high = torch.tensor(max(static_range[1], 0.0))
    elif mode == "token":
        low = x.amin(dim=-1, keepdim=True).clamp(max=0.0)
        high = x.amax(dim=-1, keepdim=True).clamp(min=0.0)
    else:
        low, high = x.min().clamp(max=0.0), x.max().clamp(min=0.0)
    scale = torch.clamp((high - low) / 255.0, min=1e-12)
    zero = torch.round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
