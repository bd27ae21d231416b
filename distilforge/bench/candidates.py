"""What `distilforge bench` times: the candidates (our passed artifacts, eager, the peer's models, the floor
graphs), each with its worker spec and the shapes it runs, and the manifest's checkpoint figures they need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilforge.artifacts.manifest import verify_files
from distilforge.bench.floor import PRECISIONS, GemmShape, write_gemm_model
from distilforge.bench.peer import PeerModel, peer_target
from distilforge.errors import UsageError
from distilforge.validate.runners import runner_ref
from distilforge.validate.tolerances import precision_class

if TYPE_CHECKING:
    from distilforge.bench import BenchSettings

SEQUENCES = (32, 128, 384)
BATCHES = (1, 4, 16)
LATENCY_SEQ = 128


@dataclass
class Candidate:
    """One thing to time: its worker spec, the shapes it runs (index 0: the latency shape) and its record."""

    target: str
    kind: str  # "artifact" | "reference" | "peer" | "floor"
    precision_class: str
    bytes: int
    spec: dict[str, Any]
    seq: int  # the latency and throughput sequence length
    shapes: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    row_extra: dict[str, Any] = field(default_factory=dict)  # more keys for its bench.json row (a peer's validation)

    def shape_index(self, batch: int, seq: int) -> int:
        if (batch, seq) not in self.shapes:
            self.shapes.append((batch, seq))
        return self.shapes.index((batch, seq))


@dataclass(frozen=True)
class Model:
    """What the inputs and the floor need from the manifest's checkpoint record."""

    config: dict[str, Any]
    vocab: int
    max_seq: int
    choices: int | None  # multiple choice: (batch, choices, sequence) inputs
    checkpoint: str | None  # None: the built-in default model
    weight_bytes: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Model:
        record = manifest["checkpoint"]
        config = record["config"]
        weights = sum(f["bytes"] for f in record.get("files", []) if f["path"].endswith((".safetensors", ".bin")))
        return cls(config=config, vocab=int(config.get("vocab_size", 30522)),
                   max_seq=int(config.get("max_position_embeddings", 512)),
                   choices=2 if record.get("head") == "DistilBertForMultipleChoice" else None,
                   checkpoint=None if record.get("default") else record["path"], weight_bytes=weights)

    @property
    def seq(self) -> int:
        return min(LATENCY_SEQ, self.max_seq)


def chosen_records(manifest: dict[str, Any], targets: list[str] | None, notes: list[str]) -> list[dict[str, Any]]:
    records = manifest["artifacts"]
    if targets:
        known = {r["target"] for r in records}
        unknown = [t for t in targets if t not in known]
        if unknown:
            raise UsageError(f"--targets: {', '.join(unknown)} not in the manifest (built: {', '.join(known)})")
        records = [r for r in records if r["target"] in targets]
    passed = []
    for r in records:
        if r.get("error") or not (r.get("validation") or {}).get("passed"):
            notes.append(f"{r['target']}: not benchmarked, it did not pass validation")
        else:
            passed.append(r)
    return passed


def _worker_spec(kind: str, model: Model, threads: int, settings: BenchSettings, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "threads": threads, "vocab": model.vocab, "choices": model.choices,
            "warmup": settings.warmup, "runs": settings.runs, "sweep_runs": settings.sweep_runs, **extra}


def eager_candidate(model: Model, threads: int, settings: BenchSettings) -> Candidate:
    spec = _worker_spec("eager", model, threads, settings, checkpoint=model.checkpoint)
    c = Candidate("eager", "reference", "fp32", model.weight_bytes, spec, seq=model.seq)
    if model.checkpoint is not None and not Path(model.checkpoint).is_dir():
        c.error = f"the checkpoint {model.checkpoint} is gone"
    _plan_shapes(c, model, None)
    return c


def artifact_candidate(out: Path, record: dict[str, Any], model: Model, threads: int,
                       settings: BenchSettings) -> Candidate:
    from distilforge.targets import get_target

    target = get_target(record["target"])
    spec = _worker_spec("artifact", model, threads, settings, out=str(out), record=record,
                        runner=runner_ref(target.open_runner))
    fixed = [tuple(s) for s in record["fixed_shapes"]] if record.get("fixed_shapes") else None
    bounds = tuple(record["details"]["max_shape"]) if record.get("details", {}).get("max_shape") else None
    longest = max(s[-1] for s in fixed) if fixed else bounds[-1] if bounds else model.seq
    seq = min(model.seq, longest)
    c = Candidate(record["target"], "artifact", precision_class(target.precision), int(record["bytes"]), spec, seq)
    c.notes += verify_files(out, record)  # still timed: the figures say what the changed file does
    if not target.installed():
        c.error = f"its backend is not installed: pip install 'distilforge[{target.extra}]'"
    if target.precision == "int8-weights":
        c.notes.append("weights-only INT8: compute runs in fp32, so the int8 floor is out of reach by design")
    _plan_shapes(c, model, fixed, bounds)
    return c


def peer_candidate(out: Path, m: PeerModel, model: Model, threads: int, settings: BenchSettings) -> Candidate:
    """One of a peer's models (Optimum's, optimum-intel's), timed through our runner of its format like an artifact
    of ours. It is timed even when it failed our validation (the comparison is the point); its row says so."""
    target = peer_target(m.target, m.tool)
    spec = _worker_spec("artifact", model, threads, settings, out=str(out), record=m.artifact.to_dict(),
                        runner=runner_ref(target.open_runner))
    c = Candidate(m.target, "peer", precision_class(target.precision), m.artifact.total_bytes, spec, seq=model.seq)
    c.row_extra = {"validation": m.validation_summary(), "command": m.command}
    runner = {"onnx": "ONNX", "openvino": "OpenVINO"}.get(m.tool.format, m.tool.format)
    c.notes.append(f"peer: {m.tool.label}'s model, validated and timed by distilforge's {runner} runner")
    if m.error:
        c.error = m.error
    elif not m.passed:
        failures = (c.row_extra["validation"] or {}).get("failures") or ["no validation result"]
        c.notes.append(f"did not pass our validation ({failures[0]}); timed anyway, as the peer")
    _plan_shapes(c, model, None)
    return c


def _plan_shapes(c: Candidate, model: Model, fixed: list[tuple[int, ...]] | None,
                 bounds: tuple[int, ...] | None = None) -> None:
    """Index 0: 1 x seq (latency); then the other sequence lengths it takes; then the batch sizes at seq (those
    within its bounds)."""
    c.shape_index(1, c.seq)
    longest = max(s[-1] for s in fixed) if fixed else bounds[-1] if bounds else model.max_seq
    declared = sorted({s[-1] for s in fixed}) if fixed else []
    padded, missing = [], []
    for s in SEQUENCES:
        if s <= min(longest, model.max_seq):
            c.shape_index(1, s)
            if fixed and s not in declared:
                padded.append(s)
        else:
            missing.append(s)
    for b in BATCHES:
        if not bounds or b <= bounds[0]:
            c.shape_index(b, c.seq)
    if bounds and (missing or bounds[0] < BATCHES[-1]):
        over = [str(b) for b in BATCHES if b > bounds[0]]
        c.notes.append(f"exported for at most {'x'.join(map(str, bounds))}"
                       + (f": batch {', '.join(over)} not taken" if over else "")
                       + (f"; seq {', '.join(map(str, missing))} not taken" if missing else ""))
    if fixed:
        shapes = ", ".join("x".join(map(str, s)) for s in fixed)
        c.notes.append(f"fixed shapes {shapes}: its runner pads smaller inputs into them"
                       + (f"; seq {', '.join(map(str, padded))} padded" if padded else "")
                       + (f"; seq {', '.join(map(str, missing))} not taken" if missing else "")
                       + ("; batches > 1 run as chunks" if any(s[0] == 1 for s in fixed) else ""))
    if c.seq != LATENCY_SEQ:
        c.notes.append(f"latency and throughput at seq {c.seq} (the longest it takes), not {LATENCY_SEQ}")


def floor_candidates(work: Path, model: Model, threads: int, settings: BenchSettings,
                      notes: list[str]) -> list[Candidate]:
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        notes.append("no floor: it is measured with ONNX Runtime (pip install 'distilforge[onnx]')")
        return []
    shape = GemmShape.from_config(model.config, tokens=model.seq * (model.choices or 1))
    out = []
    for precision in PRECISIONS:
        path = write_gemm_model(work / f"gemms_{precision}.onnx", shape, precision)
        spec = _worker_spec("gemm", model, threads, settings, path=str(path))
        c = Candidate(f"floor:{precision}", "floor", precision, path.stat().st_size, spec, seq=model.seq)
        c.shape_index(1, model.seq)
        out.append(c)
    return out
