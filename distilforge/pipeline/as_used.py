"""A folder run the way its users run it (`distilforge validate`): `distilforge.load`'s Predictor with the folder's
own tokenizer files and config.json, against the same artifact, through the same runner, read with the checkpoint's
tokenizer and config.json. The runner's outputs are the same on both sides, so any answer that decodes differently
is the folder's companion files' doing (their labels, vocabulary, special tokens); how far the artifact's own outputs
are from the eager model's is what validation measures on the checkpoint's token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilforge.artifacts.folder import CONFIG
from distilforge.errors import DistilforgeError, first_line
from distilforge.heads import HeadSpec
from distilforge.predict import decode, predictor

EXAMPLES = 8  # real texts (or question/context, prompt/choices built from them) run through both predictors


def as_used_problems(manifest: dict[str, Any], record: dict[str, Any], out: Path, model_dir: Path, runner: Any,
                     texts: list[str], head: HeadSpec) -> list[str]:
    """One line when the folder's own files make any example decode differently from the checkpoint's files."""
    folder = out / record["target"].replace(":", "-")
    if not (folder / CONFIG).is_file() or not (model_dir / CONFIG).is_file():
        return []  # a folder without companions is loaded with the checkpoint's files: nothing differs
    ours = predictor(manifest, record, folder, model_dir, runner)
    try:
        theirs = predictor(manifest, record, folder, folder, runner)
    except DistilforgeError as e:
        return [f"{record['target']}: {folder.name} does not load as distilforge.load loads it: {first_line(e)}"]
    examples = usage_examples(head, texts, ours.tokenizer.mask_token)
    differing = []
    for args, kwargs in examples:
        expected = _answer(ours, args, kwargs)
        got = _answer(theirs, args, kwargs)
        if _rounded(got) != _rounded(expected):
            differing.append((args[0] if args else kwargs.get("question"), got, expected))
    if not differing:
        return []
    text, got, expected = differing[0]
    return [f"{record['target']}: run as distilforge.load runs it (the folder's own tokenizer files and "
            f"{CONFIG}), {len(differing)} of {len(examples)} examples decode differently from the checkpoint's "
            f"files: {_quoted(text)} gives {_said(head, got)} here, {_said(head, expected)} with the checkpoint's"]


def usage_examples(head: HeadSpec, texts: list[str], mask_token: str | None) -> list[tuple[tuple, dict]]:
    """(args, keyword arguments) of Predictor calls a user of this head would make, built from the real texts."""
    texts = [t for t in texts if t.strip()][:EXAMPLES + 2]
    if head.task == "question-answering":  # a short question about a text (a long one leaves no room for it)
        return [((), {"question": _words(q, 6) + "?", "context": c})
                for q, c in zip(texts, texts[1:], strict=False)][:EXAMPLES]
    if head.task == "multiple-choice":
        return [((_words(p, 8),), {"choices": [_words(a, 8), _words(b, 8)]})
                for p, a, b in zip(texts, texts[1:], texts[2:], strict=False)][:EXAMPLES]
    if head.task == "fill-mask":
        return [((_masked(t, mask_token or "[MASK]"),), {}) for t in texts[:EXAMPLES]]
    return [((t,), {}) for t in texts[:EXAMPLES]]


def _words(text: str, count: int) -> str:
    return " ".join(text.split()[:count])


def _masked(text: str, mask: str) -> str:
    words = text.split()
    words[len(words) // 2] = mask
    return " ".join(words)


def _answer(predictor_: Any, args: tuple, kwargs: dict) -> dict[str, Any] | str:
    try:
        return predictor_(*args, **kwargs)[0]
    except DistilforgeError as e:  # e.g. a shorter maximum length refusing a text, a mask token it does not know
        return f"refused: {first_line(e)}"


def _rounded(value: Any) -> Any:
    """Scores to 4 decimals: one runner gives both sides the same outputs, so only decoding can move an answer."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _said(head: HeadSpec, answer: dict[str, Any] | str) -> str:
    return answer if isinstance(answer, str) else repr(decode.describe(head.task, answer))


def _quoted(text: str | None, width: int = 40) -> str:
    text = text or ""
    return repr(text if len(text) <= width else text[:width - 3] + "...")
