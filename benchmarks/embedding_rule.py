"""The INT8 rule for sentence embeddings, chosen from both sides (issue 27): the figures it reads for every real INT8
artifact of a real sentence model, and for deliberately broken ones, in one table.

    .venv/bin/python benchmarks/embedding_rule.py --work DIR [--skip-build] [--wrapper "qemu-x86_64 -cpu Haswell"]

1. **Real INT8 artifacts**: all-MiniLM-L6-v2 as a sentence-transformers folder (benchmarks/sentence_default.py) built
   to every installed INT8 target with `--eval` topic pairs and with **no INT8 rule** (`--tolerance int8.*=none`),
   so each ladder keeps its first, most aggressive recipe: the figures are those of the plainest INT8 each format
   gives, before any layer is kept float.
2. **Broken artifacts**: the eager model with one layer's weights changed (scaled, or Gaussian noise of a fraction of
   the weights' own spread), run through the same validation (`validate_artifact`: the same cases, the labelled
   pairs, the same rule) as an artifact would be.
3. **A saturating recipe** (`--wrapper`): `onnx:int8-static` built with `--int8-cpu native` (on a VNNI machine:
   full-range u8 x s8, no reduce_range), its embeddings of the real texts run natively and with ONNX Runtime under
   the wrapper (e.g. `qemu-x86_64 -cpu Haswell`: AVX2, whose u8 x s8 instruction can saturate).

Prints per candidate: per-text cosine (mean, min), pairwise Spearman of all cosines with eager's, exact
nearest-neighbour agreement and agreement counting a pick within each ε of eager's best, the task Spearman drop,
and the verdict of the rule in force; saves WORK/embedding_rule.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentence_default import DISTILFORGE, sentence_folder, topic_pairs  # noqa: E402

NO_INT8_RULE = ["--tolerance", "int8.min_agreement=none", "--tolerance", "int8.min_cosine=none",
                "--tolerance", "int8.max_task_drop=none", "--tolerance", "int8.min_pair_spearman=none"]


@dataclass(frozen=True)
class Damage:
    """One layer's weight changed: `scale` x the weight, or + Gaussian noise of `noise` x the weight's std."""

    layer: int
    module: str  # inside transformer.layer.N, e.g. "ffn.lin2"
    scale: float = 1.0
    noise: float = 0.0

    @property
    def name(self) -> str:
        how = f"x{self.scale:g}" if self.scale != 1.0 else f"noise {self.noise:g} std"
        return f"broken: layer {self.layer} {self.module} {how}"


DAMAGES = [
    Damage(0, "ffn.lin2", scale=1.1), Damage(0, "ffn.lin2", scale=1.25), Damage(0, "ffn.lin2", scale=1.5),
    Damage(3, "attention.q_lin", noise=0.1), Damage(3, "attention.q_lin", noise=0.3),
    Damage(3, "attention.out_lin", noise=0.1), Damage(3, "attention.out_lin", noise=0.3),
    Damage(5, "ffn.lin1", scale=0.9), Damage(5, "ffn.lin1", noise=0.2), Damage(5, "ffn.lin1", noise=0.5),
]


def build_first_rungs(folder: Path, work: Path) -> Path:
    from distilforge.targets import TARGETS

    int8 = sorted(name for name, t in TARGETS.items() if t.installed() and t.precision.startswith("int8"))
    out = work / "out"
    command = [DISTILFORGE, "build", str(folder), "--out", str(out), "--eval", str(work / "pairs.jsonl"),
               "--targets", ",".join(int8), "--keep-going", "--force", *NO_INT8_RULE]
    subprocess.run(command, check=False)
    return out


def real_rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for entry in manifest["artifacts"]:
        v = entry.get("validation") or {}
        rung = (entry.get("ladder") or {}).get("kept") or "-"
        rows.append(_row(f"{entry['target']} ({rung})", (v.get("embedding") or {}).get("sentence_embedding"),
                         v.get("task"), v.get("failures")))
    return rows


def broken_rows(folder: Path, work: Path) -> list[dict]:
    """Each Damage as an artifact: the eager model, damaged, validated like one."""
    import torch

    from distilforge.artifacts.records import DEFAULT_TOLERANCES, ExportedArtifact
    from distilforge.pipeline.source import eager_runner, load_source
    from distilforge.validate import Reference, validate_artifact
    from distilforge.validate.inputs import validation_cases
    from distilforge.validate.task import eval_batches

    torch.manual_seed(0)
    source = load_source(folder, work / "pairs.jsonl")
    ckpt, info = source.ckpt, source.ckpt.info
    reference = Reference(eager_runner(ckpt, 2))
    labelled = sum(_decisions(info, b.case) for b in eval_batches(ckpt.tokenizer, source.eval_set,
                                                                   max_length=info.max_length))
    cases = validation_cases(info, ckpt.tokenizer, source.texts, counted=labelled)
    for case in cases:
        reference.outputs(case)
    task = (ckpt.tokenizer, source.eval_set, info.max_length)
    reference.task_score(*task)
    rows = []
    encoder = _encoder(ckpt.model)
    for damage in DAMAGES:
        weight = _module(encoder.layer[damage.layer], damage.module).weight
        kept = weight.detach().clone()
        with torch.no_grad():
            weight.mul_(damage.scale)
            if damage.noise:
                weight.add_(torch.randn_like(weight) * weight.std() * damage.noise)
        artifact = ExportedArtifact(target=damage.name, files=[], inputs=[], outputs=[])
        result = validate_artifact(artifact, eager_runner(ckpt, 2), reference, cases, head=ckpt.head,
                                   tolerance=DEFAULT_TOLERANCES["int8"], precision_class="int8", task=task)
        with torch.no_grad():
            weight.copy_(kept)
        task_record = {"artifact": result.task.artifact, "drop": result.task.drop} if result.task else None
        rows.append(_row(damage.name, (result.embedding or {}).get("sentence_embedding"), task_record,
                         result.failures))
        print(_line(rows[-1]), flush=True)
    return rows


def wrapped_rows(folder: Path, work: Path, wrapper: str) -> list[dict]:
    """`onnx:int8-static` built for this CPU alone (`--int8-cpu native`), its embeddings of the validation's real
    texts (each text alone, as validation runs labelled texts) run natively and with ONNX Runtime under `wrapper`,
    each compared with eager by validate/embedding.py. (Validating the whole artifact under an emulator takes over
    20 minutes here: the grid's 3 x 512 batch among it.)"""
    import numpy as np

    from distilforge.pipeline.source import eager_runner, load_source
    from distilforge.validate.embedding import embedding_record
    from distilforge.validate.inputs import validation_cases

    out = work / "native"
    subprocess.run([DISTILFORGE, "build", str(folder), "--out", str(out), "--eval", str(work / "pairs.jsonl"),
                    "--targets", "onnx:int8-static", "--int8-cpu", "native", "--force", *NO_INT8_RULE], check=False)
    source = load_source(folder, work / "pairs.jsonl")
    cases = [c for c in validation_cases(source.ckpt.info, source.ckpt.tokenizer, source.texts)
             if c.texts and c.shape[0] >= 3]
    rows = {f"c{i}": [(c.inputs["input_ids"][r:r + 1, :int(c.mask[r].sum())].astype(np.int64),
                       c.inputs["attention_mask"][r:r + 1, :int(c.mask[r].sum())].astype(np.int64))
                      for r in range(c.shape[0])] for i, c in enumerate(cases)}
    np.savez(work / "texts.npz", **{f"{k}_{r}_{n}": a for k, v in rows.items() for r, pair in enumerate(v)
                                    for n, a in zip(("ids", "mask"), pair, strict=True)})
    runner = eager_runner(source.ckpt, 2)
    eager = {k: np.stack([runner.run({"input_ids": ids, "attention_mask": mask})["sentence_embedding"][0]
                          for ids, mask in v]) for k, v in rows.items()}
    result = []
    for name, prefix in [("native", []), (f"under {wrapper}", wrapper.split())]:
        subprocess.run([*prefix, sys.executable, __file__, "--embed", str(out / "onnx-int8-static" / "model.onnx"),
                        str(work / "texts.npz"), str(work / "embedded.npz")], check=True)
        got = np.load(work / "embedded.npz")
        record = embedding_record([(eager[k], got[k]) for k in sorted(eager)])
        result.append({**_row(f"onnx:int8-static native recipe, {name}", record, None, None), "passes_rule": None})
        print(_line(result[-1]), flush=True)
    return result


def embed(model: str, texts: str, out: str) -> None:
    """The child: each text's sentence embedding by ONNX Runtime (run under the wrapper)."""
    import numpy as np
    import onnxruntime as ort

    data = np.load(texts)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    keys = sorted({name.split("_")[0] for name in data.files})
    embedded = {}
    for key in keys:
        count = len({name.split("_")[1] for name in data.files if name.startswith(key + "_")})
        embedded[key] = np.stack([session.run(["sentence_embedding"], {"input_ids": data[f"{key}_{r}_ids"],
                                              "attention_mask": data[f"{key}_{r}_mask"]})[0][0]
                                  for r in range(count)])
    np.savez(out, **embedded)


def _encoder(model):
    """The module holding the layers (`.layer`), under the sentence wrapper and DistilBertModel."""
    while not hasattr(model, "layer"):
        model = next(getattr(model, n) for n in ("distilbert", "transformer", "model") if hasattr(model, n))
    return model


def _module(layer, dotted: str):
    for part in dotted.split("."):
        layer = getattr(layer, part)
    return layer


def _decisions(info, case) -> int:
    from distilforge.validate.inputs import decisions

    return decisions(info, case)


def _row(name: str, record: dict | None, task: dict | None, failures: list[str] | None) -> dict:
    record = record or {}
    return {"candidate": name, "mean_cosine": record.get("mean_cosine"), "min_cosine": record.get("min_cosine"),
            "pairwise_spearman": record.get("pairwise_spearman"), "agreement": record.get("agreement"),
            "agreement_within": record.get("agreement_within") or {}, "texts": record.get("texts"),
            "task_drop": (task or {}).get("drop"), "passes_rule": not failures, "failures": failures or []}


HEADER = (f"{'candidate':58} {'mean cos':>8} {'min cos':>8} {'pair rho':>8} {'exact':>6} {'<=.005':>6} {'<=.01':>6} "
          f"{'<=.02':>6} {'drop':>5}  rule")


def _line(row: dict) -> str:
    def pct(x):
        return f"{x * 100:5.1f}%" if x is not None else "     -"
    within = row["agreement_within"]
    return (f"{row['candidate'][:58]:58} {row['mean_cosine'] or 0:8.5f} {row['min_cosine'] or 0:8.5f} "
            f"{row['pairwise_spearman'] or 0:8.5f} {pct(row['agreement'])} {pct(within.get('0.005'))} "
            f"{pct(within.get('0.01'))} {pct(within.get('0.02'))} {row['task_drop'] or 0:5.2f}  "
            f"{ {True: 'pass', False: 'FAIL', None: '- (texts only)'}[row['passes_rule']] }")


def main() -> int:
    if sys.argv[1:2] == ["--embed"]:
        embed(*sys.argv[2:5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--skip-build", action="store_true", help="read WORK/out from an earlier run")
    parser.add_argument("--wrapper", help="also run a native-recipe onnx:int8-static with this in front of ORT")
    parser.add_argument("--wrapper-only", action="store_true", help="with --skip-build: only the --wrapper rows")
    args = parser.parse_args()
    from distilforge.cpu import this_cpu_class
    from distilforge.default_model import ensure_default_checkpoint

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "minilm-sentence"
    if not args.skip_build:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        sentence_folder(ensure_default_checkpoint()[0], folder)
        topic_pairs(work / "pairs.jsonl")
        build_first_rungs(folder, work)
    print(HEADER, flush=True)
    rows = real_rows(work / "out")
    for row in rows:
        print(_line(row), flush=True)
    if not args.wrapper_only:
        rows += broken_rows(folder, work)
    if args.wrapper:
        wrapped = wrapped_rows(folder, work, args.wrapper)
        for row in wrapped:
            print(_line(row), flush=True)
        rows += wrapped
    print("\nfailures of the rule in force:")
    for row in rows:
        for line in row["failures"][:2]:
            print(f"  {row['candidate']}: {line}")
    record = {"cpu_class": this_cpu_class(), "rows": rows}
    (work / "embedding_rule.json").write_text(json.dumps(record, indent=2))
    print(f"\nsaved {work / 'embedding_rule.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
