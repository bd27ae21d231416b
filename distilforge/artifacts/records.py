"""Records that cross stage borders: what an exporter made, how it validated.

They serialise to plain dicts for the manifest (`to_dict`) and back (`from_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilforge.artifacts.hashing import sha256_file

# What a file of an artifact folder is for. "model": what the exporter wrote (graph, weights, external data);
# the others are the companions that make the folder deployable (artifacts/folder.py).
FILE_ROLES = ("model", "config", "tokenizer", "card")


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the output directory, '/'-separated
    bytes: int
    sha256: str
    role: str = "model"  # FILE_ROLES; manifests before companions had model files only

    @classmethod
    def of(cls, root: Path, file: Path, role: str = "model") -> FileRecord:
        return cls(path=file.relative_to(root).as_posix(), bytes=file.stat().st_size, sha256=sha256_file(file),
                   role=role)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. 'int64', 'float32'
    shape: tuple[int | str, ...]  # ints for fixed dims, axis names for dynamic ones

    @property
    def dynamic_axes(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))


@dataclass
class ExportedArtifact:
    """What an exporter or quantizer wrote: the files of one target and how to feed it."""

    target: str
    files: list[FileRecord]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Fixed-shape formats list the (batch, [choices,] sequence) shapes they accept; None = dynamic.
    fixed_shapes: list[tuple[int, ...]] | None = None
    details: dict[str, Any] = field(default_factory=dict)  # opset, tool, recipe...
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """The model's bytes (what formats are compared on), without config, tokenizer and card."""
        return sum(f.bytes for f in self.files if f.role == "model")

    @property
    def max_shape(self) -> tuple[int, ...] | None:
        """Dynamic formats exported with upper bounds (ExecuTorch): the largest (batch, [choices,] sequence) taken."""
        shape = self.details.get("max_shape")
        return tuple(shape) if shape else None

    @property
    def longest_sequence(self) -> int | None:
        """The longest sequence its fixed shapes or bounds take; None: no limit but the model's."""
        if self.fixed_shapes:
            return max(s[-1] for s in self.fixed_shapes)
        return self.max_shape[-1] if self.max_shape else None

    @property
    def model_files(self) -> list[FileRecord]:
        return [f for f in self.files if f.role == "model"]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        fixed = bool(self.fixed_shapes)  # named axes then take the sizes of the declared shapes
        d["inputs"] = [_spec_dict(s, fixed) for s in self.inputs]
        d["outputs"] = [_spec_dict(s, fixed) for s in self.outputs]
        d["fixed_shapes"] = [list(s) for s in self.fixed_shapes] if self.fixed_shapes else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportedArtifact:
        return cls(
            target=d["target"],
            files=[FileRecord(**f) for f in d["files"]],
            inputs=[TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in d["inputs"]],
            outputs=[TensorSpec(s["name"], s["dtype"], tuple(s["shape"])) for s in d["outputs"]],
            fixed_shapes=[tuple(s) for s in d["fixed_shapes"]] if d.get("fixed_shapes") else None,
            details=d.get("details", {}),
            warnings=d.get("warnings", []),
        )


def _spec_dict(s: TensorSpec, fixed: bool) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape), "dynamic_axes": [] if fixed else
            list(s.dynamic_axes)}


@dataclass(frozen=True)
class Tolerance:
    """A pass rule. None disables a check."""

    max_abs: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None
    max_task_drop: float | None = None  # in points (percent) of the task metric
    # sentence embeddings: Spearman of every pairwise cosine between real texts with the eager model's
    # (validate/embedding.py; 1.0 = the same order of similarities)
    min_pair_spearman: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The pass rule of each precision class unless the user overrides it (validate/tolerances.py reads and applies
# them; here because BuildOptions, on the ground floor, starts from them).
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs=1e-4, min_agreement=1.0),
    "fp16": Tolerance(max_abs=1e-2, min_agreement=0.995),
    "int8": Tolerance(min_agreement=0.98, min_cosine=0.99, max_task_drop=1.0, min_pair_spearman=0.99),
}


@dataclass(frozen=True)
class OutputMetrics:
    """One output of one validation case, compared with the reference."""

    case: str
    shape: tuple[int, ...]  # the input shape of the case
    output: str
    max_abs: float
    mean_abs: float
    cosine: float | None  # None for a single value, whose "cosine" would only be its sign
    agreement: float | None  # fraction in [0, 1]; None where the output has no discrete decision
    decisions: int  # how many discrete decisions the agreement counts
    compared: int  # number of values compared (padded positions excluded)


def agreement_decisions(metrics: list[OutputMetrics]) -> int:
    """How many discrete decisions an agreement figure counts (validate/inputs.py: MIN_DECISIONS)."""
    return sum(m.decisions for m in metrics if m.agreement is not None)


def overall_agreement(metrics: list[OutputMetrics]) -> float | None:
    """Agreeing decisions over all cases, weighted by how many decisions each case has."""
    counted = [m for m in metrics if m.agreement is not None and m.decisions]
    total = sum(m.decisions for m in counted)
    if not total:
        return None
    return sum(m.agreement * m.decisions for m in counted) / total


@dataclass
class TaskScore:
    """The gated task metric (in points) of the reference and the artifact on the same labelled
    examples; `extra` holds the other metrics of the head, {name: {"reference": x, "artifact": y}}."""

    metric: str
    reference: float
    artifact: float
    examples: int
    extra: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        """Points lost against the reference (positive = worse)."""
        return self.reference - self.artifact


@dataclass
class ValidationResult:
    passed: bool
    tolerance: Tolerance
    precision_class: str
    cases: list[OutputMetrics]
    failures: list[str]
    task: TaskScore | None = None
    shapes_note: str = ""
    # dynamic INT8: decisions on real text that change when the texts run as one padded batch instead of one by one
    # (validate/__init__.py: batch_dependence): texts, batch, decisions, changed
    batch_dependence: dict[str, int] | None = None
    # embedding outputs: what the artifact does to them on real text, by output (validate/embedding.py)
    embedding: dict[str, dict[str, Any]] | None = None

    def worst(self) -> dict[str, Any]:
        """Worst figure over all cases and outputs: the headline numbers."""
        agreement = overall_agreement(self.cases)
        return {
            "max_abs": max((c.max_abs for c in self.cases), default=0.0),
            "mean_abs": max((c.mean_abs for c in self.cases), default=0.0),
            "min_cosine": min((c.cosine for c in self.cases if c.cosine is not None), default=None),
            "agreement": agreement,
            "decisions": agreement_decisions(self.cases),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationResult:
        task = None
        if d.get("task"):
            task = TaskScore(**{k: v for k, v in d["task"].items() if k != "drop"})
        return cls(passed=d["passed"], tolerance=Tolerance(**d["tolerance"]), precision_class=d["precision_class"],
                   cases=[OutputMetrics(**{**c, "shape": tuple(c["shape"])}) for c in d["cases"]],
                   failures=list(d["failures"]), task=task, shapes_note=d.get("shapes_note", ""),
                   batch_dependence=d.get("batch_dependence"), embedding=d.get("embedding"))

    def to_dict(self) -> dict[str, Any]:
        task = None
        if self.task:
            task = {**asdict(self.task), "drop": self.task.drop}
        return {
            "passed": self.passed,
            "precision_class": self.precision_class,
            "tolerance": self.tolerance.to_dict(),
            "worst": self.worst(),
            "task": task,
            "failures": self.failures,
            "shapes_note": self.shapes_note,
            "batch_dependence": self.batch_dependence,
            "embedding": self.embedding,
            "cases": [{**asdict(c), "shape": list(c.shape)} for c in self.cases],
        }
