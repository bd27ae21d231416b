"""Try an artifact on text: `load(DIR, target)` returns a Predictor that tokenizes, runs the target through the
same runner validation used, and says what the head means (predict/decode.py).

The tokenizer and config come from the artifact's own folder (artifacts/folder.py); builds from before folders
carried them fall back to the checkpoint the manifest names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilforge.artifacts.folder import CONFIG
from distilforge.artifacts.manifest import read_manifest, verify_files
from distilforge.artifacts.records import ExportedArtifact
from distilforge.errors import OutputDirError, UsageError
from distilforge.heads import HeadSpec, find_head
from distilforge.predict import decode


@dataclass
class Predictor:
    """Call it on texts (or question=, context= for QA; a prompt and choices= for multiple choice)."""

    target: str
    folder: Path
    head: HeadSpec
    config: dict[str, Any]
    tokenizer: Any
    runner: Any
    longest: int  # tokens per row the artifact takes: its fixed shapes' or bounds' sequence, else the model's maximum
    fixed: bool  # it has fixed shapes or bounds: longer texts are refused, not cut

    def __call__(self, *texts: str, question: str | None = None, context: str | None = None,
                 choices: list[str] | None = None) -> list[dict[str, Any]]:
        task = self.head.task
        if task == "question-answering":
            return [self._answer(question, context, texts)]
        if task == "multiple-choice":
            return [self._choose(texts, choices)]
        if not texts:
            raise UsageError(f"{self.target}: give at least one TEXT")
        rows = [self._encode(t) for t in texts]  # all checked before any runs
        results = [self._decode(self._run([row]), 0, row) for row in rows]  # one at a time, as validation scores them
        if task == "sentence-similarity" and len(results) == 2:
            results.append(decode.similarity(*results))
        return results

    def _encode(self, text: str, pair: str | None = None) -> decode.Encoded:
        try:
            enc = self.tokenizer(text, pair, truncation="only_second" if pair else True, max_length=self.longest,
                                 return_offsets_mapping=True, return_special_tokens_mask=True,
                                 return_overflowing_tokens=False)
        except Exception as e:  # the tokenizers library's own: the first text leaves no room for the second
            if pair is None or "truncat" not in str(e).lower():
                raise
            first = len(self.tokenizer(text)["input_ids"])
            raise UsageError(f"{self.target}: the first text is {first} tokens and this artifact takes at most "
                             f"{self.longest} for both; shorten it") from None
        full = len(self.tokenizer(text, pair)["input_ids"])
        if full > self.longest and self.fixed:
            from distilforge.targets import get_target
            from distilforge.user_options import flag_for

            flag = flag_for(get_target(self.target).spec.shape_option)
            raise UsageError(f"{self.target}: the text is {full} tokens and this artifact takes at most "
                             f"{self.longest}; shorten it or rebuild with a longer {flag}")
        return decode.Encoded(text=pair if pair is not None else text, ids=list(enc["input_ids"]),
                              offsets=[tuple(o) for o in enc["offset_mapping"]],
                              special=[bool(s) for s in enc["special_tokens_mask"]],
                              sequence_ids=list(enc.sequence_ids()), word_ids=list(enc.word_ids()),
                              truncated=full > self.longest)

    def _run(self, rows: list[decode.Encoded], choices: int = 0) -> dict[str, np.ndarray]:
        """One row (or one multiple-choice row of `choices` pairs, padded to the longest), through the runner.
        One text per run: dynamic INT8 takes its activation scale over the whole batch (validate/task.py)."""
        length = max(len(r.ids) for r in rows)
        ids = np.zeros((len(rows), length), dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r.ids)], mask[i, :len(r.ids)] = r.ids, 1
        if choices:
            ids, mask = ids.reshape(1, choices, length), mask.reshape(1, choices, length)
        return self.runner.run({"input_ids": ids, "attention_mask": mask})

    def _decode(self, outputs: dict[str, np.ndarray], i: int, row: decode.Encoded) -> dict[str, Any]:
        task, labels = self.head.task, self.config.get("id2label")
        if task == "text-classification":
            result = decode.classification(outputs["logits"][i], labels, self.head.problem_type)
        elif task == "token-classification":
            result = decode.token_classification(outputs["logits"][i], labels, row)
        elif task == "fill-mask":
            vocab = {v: k for k, v in self.tokenizer.get_vocab().items()}
            result = decode.fill_mask(outputs["logits"][i], row, self.tokenizer.mask_token_id, vocab)
            if not result["masks"]:
                raise UsageError(f"{self.target}: a fill-mask model needs a {self.tokenizer.mask_token} in the text: "
                                 f"{row.text!r}")
        elif task == "sentence-similarity":
            result = decode.sentence_embedding(outputs["sentence_embedding"][i])
        else:
            result = decode.embedding(outputs["last_hidden_state"][i], row)
        return {"text": row.text, **result, **({"truncated": True} if row.truncated else {})}

    def _answer(self, question: str | None, context: str | None, texts: tuple[str, ...]) -> dict[str, Any]:
        if texts and question is None and context is None and len(texts) == 2:
            question, context = texts
        if not question or not context:
            raise UsageError(f"{self.target}: a question-answering model needs --question and --context")
        row = self._encode(question, context)
        outputs = self._run([row])
        result = decode.question_answering(outputs["start_logits"][0], outputs["end_logits"][0], row)
        return {"question": question, **result, **({"truncated": True} if row.truncated else {})}

    def _choose(self, texts: tuple[str, ...], choices: list[str] | None) -> dict[str, Any]:
        if len(texts) != 1 or not choices or len(choices) < 2:
            raise UsageError(f"{self.target}: a multiple-choice model needs one prompt TEXT and at least two "
                             "--choices")
        rows = [self._encode(texts[0], c) for c in choices]
        outputs = self._run(rows, choices=len(choices))
        return {"prompt": texts[0], **decode.multiple_choice(outputs["logits"][0], list(choices))}


def load(out_dir: str | Path, target: str | None = None, *, threads: int = 1) -> Predictor:
    """The artifact of `target` in `out_dir` (default: the one `report` recommends, else the fastest passing one),
    its files checked against the manifest, ready to call on texts."""
    from distilforge.targets import get_target

    out = Path(out_dir)
    manifest = read_manifest(out)
    record = _record(out, manifest, target or default_target(out, manifest))
    artifact = ExportedArtifact.from_dict(record)
    folder = out / record["target"].replace(":", "-")
    source = folder if (folder / CONFIG).is_file() else Path(manifest["checkpoint"]["path"])
    if not (source / CONFIG).is_file():
        raise OutputDirError(f"{folder}: no {CONFIG}, and the checkpoint it was built from ({source}) is gone")
    runner = get_target(record["target"]).open_runner(out, artifact, threads)
    return predictor(manifest, record, folder, source, runner)


def predictor(manifest: dict[str, Any], record: dict[str, Any], folder: Path, companions: Path,
              runner: Any) -> Predictor:
    """The Predictor of `record`'s artifact run by `runner`, with the tokenizer and config.json read from
    `companions` (the artifact's folder, as `load` does; the checkpoint's, to compare with)."""
    from transformers import AutoTokenizer

    artifact = ExportedArtifact.from_dict(record)
    config = json.loads((companions / CONFIG).read_text(encoding="utf-8"))
    head = find_head(manifest["checkpoint"]["head"], manifest["checkpoint"].get("problem_type"))
    if head is None:
        raise OutputDirError(f"{folder.parent}: manifest.json names an unknown head {manifest['checkpoint']['head']!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(companions))
    except (OSError, ValueError) as e:
        raise OutputDirError(f"{companions}: no tokenizer to turn text into token ids ({e})") from None
    maximum = int(config.get("max_position_embeddings", 512))
    sentence = manifest["checkpoint"].get("config", {}).get("sentence_transformers") or {}
    maximum = min(maximum, sentence.get("max_seq_length") or maximum)
    longest = min(maximum, artifact.longest_sequence or maximum)
    return Predictor(target=record["target"], folder=folder, head=head, config=config, tokenizer=tokenizer,
                     runner=runner, longest=longest, fixed=artifact.longest_sequence is not None)


def _record(out: Path, manifest: dict[str, Any], target: str) -> dict[str, Any]:
    records = {a["target"]: a for a in manifest["artifacts"]}
    if target not in records:
        raise UsageError(f"{out}: no target {target!r} in this build; built: {', '.join(records) or 'none'}")
    record = records[target]
    failed = record.get("error") or (record.get("validation") or {}).get("failures")
    if failed or not (record.get("validation") or {}).get("passed"):
        reason = record.get("error") or "; ".join((record.get("validation") or {}).get("failures") or []) or "?"
        raise UsageError(f"{out}: {target} failed validation, so it is not offered: {reason.splitlines()[0]}")
    problems = verify_files(out, record)
    if problems:
        raise OutputDirError(f"{out}: {problems[0]}; rebuild it or run 'distilforge validate {out}'")
    return record


def default_target(out: Path, manifest: dict[str, Any]) -> str:
    """What `report` recommends with no limits (the fastest passing artifact when bench.json is there, else the
    smallest); failing that, the first artifact that passed."""
    from distilforge.report.data import load as load_report
    from distilforge.report.recommend import make_limits, recommend

    data = load_report(out)
    have_bench = data.bench is not None
    limits = make_limits(max_latency_ms=None, min_agreement=None, max_size_mb=None, have_bench=have_bench)
    chosen = recommend(data.rows, limits, have_bench=have_bench).target
    if chosen:
        return chosen
    passed = [r for r in data.rows if r.passed]
    if not passed:
        raise UsageError(f"{out}: no artifact passed validation; nothing to run")
    return min(passed, key=lambda r: (r.latency_p50 is None, r.latency_p50 or 0.0)).target
