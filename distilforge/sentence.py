"""sentence-transformers folders over a DistilBERT: reading modules.json and the pooling config, and the torch
module that adds the pooled (and normalized) `sentence_embedding` beside `last_hidden_state`.

Reading is plain JSON (no sentence-transformers at run time); the pooling reproduces sentence-transformers'
own Pooling and Normalize modules for the modes we take, and the tests hold it to `SentenceTransformer.encode`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilforge.errors import CheckpointError

MODULES = "modules.json"
SENTENCE_CONFIG = "sentence_bert_config.json"
# sentence-transformers' own order when several modes are on (Pooling concatenates them in this order)
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                       "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
MAX_POOL_FILL = -1e4
MODULE_KINDS = ("Transformer", "Pooling", "Normalize")  # the last part of a module's type name


@dataclass(frozen=True)
class SentencePooling:
    """What a sentence-transformers folder adds to its transformer: where the transformer is, the pooling modes
    (concatenated in this order), whether the vector is L2-normalized, and the longest input it takes."""

    transformer: str  # folder of the transformer, relative to the checkpoint ("" = the checkpoint itself)
    modes: tuple[str, ...]
    normalize: bool
    dimension: int  # of the token embeddings the pooling reads
    max_seq_length: int | None
    module_dirs: tuple[str, ...]  # every module's folder, relative (for the checkpoint's file hashes)

    @property
    def embedding_dimension(self) -> int:
        return self.dimension * len(self.modes)

    def record(self) -> dict[str, Any]:
        return {"pooling": list(self.modes), "normalize": self.normalize, "transformer": self.transformer,
                "embedding_dimension": self.embedding_dimension, "max_seq_length": self.max_seq_length}


def is_sentence_transformers(path: Path) -> bool:
    return (path / MODULES).is_file()


def read_sentence_pooling(root: Path) -> SentencePooling:
    """Check modules.json and its modules' configs: Transformer, then Pooling, then Normalize (optional)."""
    modules = _read_modules(root / MODULES)
    kinds = [kind for kind, _ in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise CheckpointError(f"{root / MODULES}: modules {' -> '.join(kinds)} are not supported; "
                              "expected Transformer -> Pooling, then an optional Normalize")
    transformer, pooling = modules[0][1], modules[1][1]
    if not (root / transformer / "config.json").is_file():
        raise CheckpointError(f"{root / MODULES}: the Transformer module's folder {transformer or '.'!r} has no "
                              "config.json")
    modes, dimension = _read_pooling(root / pooling / "config.json")
    return SentencePooling(transformer=transformer, modes=modes, normalize=len(modules) == 3, dimension=dimension,
                           max_seq_length=_read_max_seq_length(root / transformer),
                           module_dirs=tuple(dict.fromkeys(p for _, p in modules)))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None


def _read_modules(path: Path) -> list[tuple[str, str]]:
    """(kind, folder) per module, in order."""
    raw = _read_json(path)
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise CheckpointError(f"{path}: expected a list of modules (objects with 'type' and 'path')")
    modules = []
    for entry in sorted(raw, key=lambda m: m.get("idx", 0) if isinstance(m.get("idx"), int) else 0):
        kind, folder = entry.get("type"), entry.get("path", "")
        if not isinstance(kind, str) or not isinstance(folder, str):
            raise CheckpointError(f"{path}: every module needs a 'type' and a 'path' (text), got {_short(entry)}")
        name = kind.rsplit(".", 1)[-1]
        if name not in MODULE_KINDS:
            raise CheckpointError(f"{path}: module {kind!r} is not supported; expected "
                                  "Transformer -> Pooling, then an optional Normalize")
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise CheckpointError(f"{path}: module path {folder!r} must be a folder inside the checkpoint")
        modules.append((name, folder.strip("/")))
    return modules


def _read_pooling(path: Path) -> tuple[tuple[str, ...], int]:
    """The pooling modes (sentence-transformers' `pooling_mode`, or its older `pooling_mode_*_tokens` flags) and
    the token embedding dimension."""
    config = _read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [name for key, name in LEGACY_POOLING_KEYS.items() if config.get(key)]
    modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else None
    if not modes or not all(isinstance(m, str) for m in modes):
        raise CheckpointError(f"{path}: no pooling mode set (pooling_mode, or a pooling_mode_*_tokens flag)")
    unsupported = [m for m in modes if m not in POOLING_MODES]
    if unsupported:
        raise CheckpointError(f"{path}: pooling mode {unsupported[0]!r} is not supported; expected "
                              f"{', '.join(POOLING_MODES)}")
    dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension <= 0:
        raise CheckpointError(f"{path}: embedding_dimension is {_short(dimension)}, expected a positive integer")
    return tuple(dict.fromkeys(modes)), dimension


def _read_max_seq_length(folder: Path) -> int | None:
    """sentence_bert_config.json's max_seq_length; None: the tokenizer's and the model's limit apply."""
    path = folder / SENTENCE_CONFIG
    if not path.is_file():
        return None
    config = _read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    if config.get("do_lower_case"):
        raise CheckpointError(f"{path}: do_lower_case is not supported (the tokenizer itself must lowercase)")
    value = config.get("max_seq_length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{path}: max_seq_length is {_short(value)}, expected a positive integer")
    return value


def sentence_module_files(root: Path, pooling: SentencePooling) -> dict[str, bytes]:
    """What an artifact folder needs for sentence-transformers to load it (relative path -> bytes): modules.json
    with the Transformer module's path set to the folder itself, and the modules' config files as they are."""
    modules = json.loads((root / MODULES).read_text(encoding="utf-8"))
    for module in modules:
        if module.get("path", "").strip("/") == pooling.transformer:
            module["path"] = ""
    files = {MODULES: (json.dumps(modules, indent=2) + "\n").encode()}
    for name in (SENTENCE_CONFIG, "config_sentence_transformers.json"):
        for where in (root / pooling.transformer / name, root / name):
            if where.is_file():
                files[name] = where.read_bytes()
                break
    for folder in pooling.module_dirs:
        if folder != pooling.transformer:
            files.update({f"{folder}/{p.name}": p.read_bytes() for p in sorted((root / folder).iterdir())
                          if p.is_file()})
    return files


def check_dimension(config_path: Path, pooling: SentencePooling, config: dict[str, Any]) -> None:
    dim = int(config.get("dim", 768))
    if pooling.dimension != dim:
        raise CheckpointError(f"{config_path}: dim is {dim}, but the Pooling module pools {pooling.dimension}-wide "
                              "token embeddings")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def sentence_model(model: Any, pooling: SentencePooling) -> Any:
    """`model` (a DistilBertModel) with the folder's pooling and normalization after it: called as the model is,
    it returns {'last_hidden_state', 'sentence_embedding'}."""
    import torch

    class SentenceEmbedder(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer
            self.config = transformer.config

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    return_dict: bool = True) -> dict[str, torch.Tensor]:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      return_dict=True).last_hidden_state
            embedding = torch.cat([_pool(mode, hidden, attention_mask) for mode in pooling.modes], dim=-1)
            if pooling.normalize:
                embedding = torch.nn.functional.normalize(embedding, p=2.0, dim=1)
            return {"last_hidden_state": hidden, "sentence_embedding": embedding}

    return SentenceEmbedder(model).eval()


def _pool(mode: str, hidden: Any, attention_mask: Any) -> Any:
    """One mode of sentence-transformers' Pooling over right-padded rows."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":  # a finite fill (sentence-transformers: -inf): converters and fp16 keep it; hidden states
        return hidden.masked_fill(mask == 0, MAX_POOL_FILL).max(dim=1).values  # after LayerNorm are far above it
    total = (hidden * mask).sum(dim=1)
    count = torch.clamp(mask.sum(dim=1), min=1e-9)
    return total / count if mode == "mean" else total / torch.sqrt(count)
