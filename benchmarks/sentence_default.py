"""A real sentence-transformers model through every target: all-MiniLM-L6-v2 as the default model carries it.

    .venv/bin/python benchmarks/sentence_default.py [--targets T,...] [--work DIR]

The built-in default model's encoder is all-MiniLM-L6-v2's trained weights mapped exactly onto a DistilBERT
(docs/targets.md). This script wraps it in the folder sentence-transformers writes for that model (mean pooling,
then Normalize), checks the eager reference against `SentenceTransformer.encode` on the shipped topic texts, then runs
`distilforge build --eval PAIRS` with the default (real) rules: PAIRS are 300 pairs of the held-out topic texts,
scored 1 when both texts share a topic and 0 otherwise, so Spearman x100 of the embeddings' cosine measures how
well each artifact keeps topics apart. Prints per target: size, min per-text cosine with eager, nearest-neighbour
agreement (decisions), agreement counting a pick within 0.01 of eager's best cosine, the Spearman of all pairwise
cosines with eager's (validation.embedding), the task Spearman and its drop, pass/fail; saves
WORK/sentence_default.json (with each target's whole validation.embedding record).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DISTILFORGE = str(Path(sys.executable).with_name("distilforge"))


def sentence_folder(checkpoint: Path, out: Path) -> Path:
    """The default checkpoint's files plus sentence-transformers' modules.json, 1_Pooling and 2_Normalize."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(str(checkpoint))
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(out))
    return out


def topic_pairs(path: Path, count: int = 300, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "distilforge/data/topics.jsonl").read_text().splitlines()]
    test = [r for r in rows if r["split"] == "test"]
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        a, b = rng.choice(len(test), size=2, replace=False)
        pairs.append({"sentence1": test[a]["text"], "sentence2": test[b]["text"],
                      "score": float(test[a]["label"] == test[b]["label"])})
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return pairs


def reference_gap(folder: Path, texts: list[str]) -> float:
    """Largest difference between our eager reference and SentenceTransformer.encode on `texts`."""
    import torch
    from sentence_transformers import SentenceTransformer

    from distilforge.checkpoint import load_checkpoint

    want = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True, batch_size=16)
    ckpt = load_checkpoint(folder)
    got = []
    for start in range(0, len(texts), 16):
        enc = ckpt.tokenizer(texts[start:start + 16], padding=True, truncation=True, max_length=ckpt.info.max_length,
                             return_tensors="pt")
        with torch.inference_mode():
            got.append(ckpt.model(input_ids=enc["input_ids"],
                                  attention_mask=enc["attention_mask"])["sentence_embedding"].numpy())
    return float(np.abs(np.concatenate(got) - want).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", help="comma-separated (default: every installed target)")
    parser.add_argument("--work", type=Path, help="working directory (default: a temporary one, kept)")
    args = parser.parse_args()
    from distilforge.default_model import ensure_default_checkpoint

    work = args.work or Path(tempfile.mkdtemp(prefix="sentence-default-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "minilm-sentence"
    shutil.rmtree(folder, ignore_errors=True)
    sentence_folder(ensure_default_checkpoint()[0], folder)
    pairs = topic_pairs(work / "pairs.jsonl")
    texts = sorted({p["sentence1"] for p in pairs} | {p["sentence2"] for p in pairs})
    gap = reference_gap(folder, texts)
    print(f"eager reference vs SentenceTransformer.encode on {len(texts)} texts: max abs diff {gap:.2e}", flush=True)
    command = [DISTILFORGE, "build", str(folder), "--out", str(work / "out"), "--eval", str(work / "pairs.jsonl"),
               "--keep-going", "--force"] + (["--targets", args.targets] if args.targets else [])
    code = subprocess.run(command).returncode
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    reference = manifest["reference"]["task"]
    rows = []
    print(f"\nreference (eager) spearman {reference['value']:.2f} over {reference['examples']} pairs")
    print(f"{'target':26} {'MB':>6} {'min cos':>9} {'NN agree (n)':>14} {'<=0.01':>7} {'pair rho':>9} "
          f"{'spearman':>9} {'drop':>6}  status")
    for entry in manifest["artifacts"]:
        v = entry.get("validation") or {}
        embedding = [c for c in v.get("cases", []) if c["output"] == "sentence_embedding"]
        decisions = sum(c["decisions"] for c in embedding)
        agree = sum(c["agreement"] * c["decisions"] for c in embedding if c["agreement"] is not None)
        row = {"target": entry["target"], "mb": entry["bytes"] / 1e6,
               "min_cosine": min((c["cosine"] for c in embedding if c["cosine"] is not None), default=None),
               "agreement": agree / decisions if decisions else None, "decisions": decisions,
               "spearman": (v.get("task") or {}).get("artifact"), "drop": (v.get("task") or {}).get("drop"),
               "passed": bool(v.get("passed")),
               "embedding": (v.get("embedding") or {}).get("sentence_embedding")}
        rows.append(row)
        record = row["embedding"] or {}
        print(f"{row['target']:26} {row['mb']:6.1f} {row['min_cosine'] or 0:9.5f} "
              f"{(row['agreement'] or 0) * 100:7.1f}% ({decisions:>3}) "
              f"{(record.get('agreement_within') or {}).get('0.01', 0) * 100:6.1f}% "
              f"{record.get('pairwise_spearman', 0):9.5f} {row['spearman'] or 0:9.2f} "
              f"{row['drop'] or 0:6.2f}  {'pass' if row['passed'] else 'FAIL'}")
    (work / "sentence_default.json").write_text(json.dumps(
        {"reference_vs_encode_max_abs": gap, "reference_spearman": reference["value"], "rows": rows,
         "cpu_class": (manifest["artifacts"][0].get("validated_on") or [{}])[0].get("cpu_class")}, indent=2))
    print(f"\nsaved {work / 'sentence_default.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
