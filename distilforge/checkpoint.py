"""Loading a local Hugging Face-layout DistilBERT checkpoint and detecting its head.

`inspect_checkpoint` checks the directory and config without importing torch, so bad
input fails fast and quietly; `load_checkpoint` then builds the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilforge import weights
from distilforge.artifacts.hashing import sha256_file
from distilforge.errors import CheckpointError, first_line
from distilforge.heads import ARCHITECTURES, SENTENCE_HEAD, HeadSpec, find_head
from distilforge.libraries import lean_transformers
from distilforge.sentence import SentencePooling, check_dimension, is_sentence_transformers, read_sentence_pooling

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint directory holds, read without loading any weights."""

    path: Path
    config: dict[str, Any]
    head: HeadSpec
    weight_files: tuple[Path, ...]
    has_tokenizer: bool
    framework: str = weights.PYTORCH  # which framework wrote the weights: "pytorch", "tensorflow" or "flax"
    ignored_files: tuple[Path, ...] = ()  # TF/Flax weight files beside the ones loaded (PyTorch's win)
    sentence: SentencePooling | None = None  # a sentence-transformers folder's pooling

    @property
    def model_dir(self) -> Path:
        """The folder with config.json, the weights and the tokenizer (a sentence-transformers folder may keep
        its transformer in a subfolder)."""
        return self.path / self.sentence.transformer if self.sentence else self.path

    @property
    def max_length(self) -> int:
        """The longest input: the model's positions, or a sentence-transformers folder's max_seq_length."""
        positions = int(self.config.get("max_position_embeddings", 512))
        if self.sentence and self.sentence.max_seq_length:
            return min(positions, self.sentence.max_seq_length)
        return positions

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def num_labels(self) -> int:
        return _num_labels(self.config)

    def summary(self) -> dict[str, Any]:
        c = self.config
        keys = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings",
                "sinusoidal_pos_embds", "activation")
        out = {k: c[k] for k in keys if k in c}
        if self.head.problem_type:
            out["problem_type"] = self.head.problem_type
        if "id2label" in c and self.head.task in ("text-classification", "token-classification"):
            out["num_labels"] = len(c["id2label"])
        if self.sentence:
            out["sentence_transformers"] = self.sentence.record()
        return out

    def file_hashes(self) -> list[dict[str, Any]]:
        """sha256 of every regular file in the checkpoint directory (not recursive), and in the folders of a
        sentence-transformers folder's modules."""
        folders = [self.path, *(self.path / d for d in (self.sentence.module_dirs if self.sentence else ()))]
        files = sorted({p for folder in folders if folder.is_dir() for p in folder.iterdir() if p.is_file()})
        return [{"path": p.relative_to(self.path).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for p in files]


@dataclass
class LoadedCheckpoint:
    """A checkpoint with its model built (fp32, eval mode) and its tokenizer, if it has one."""

    info: CheckpointInfo
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any | None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def head(self) -> HeadSpec:
        return self.info.head


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Check a checkpoint directory and its config; raise CheckpointError naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (a checkpoint is a folder with config.json and weights)")
    if is_sentence_transformers(path):
        return _inspect_sentence_transformers(path)
    config = _read_config(path / "config.json")
    head = _detect_head(path / "config.json", config)
    return CheckpointInfo(path=path.resolve(), config=config, head=head, has_tokenizer=_has_tokenizer(path),
                          **_weights_of(path))


def _inspect_sentence_transformers(path: Path) -> CheckpointInfo:
    """A sentence-transformers folder: its transformer is a DistilBERT whatever config.json's architectures say
    (sentence-transformers loads it as the base model), then pooling."""
    pooling = read_sentence_pooling(path)
    model_dir = path / pooling.transformer
    config = _read_config(model_dir / "config.json")
    check_dimension(model_dir / "config.json", pooling, config)
    return CheckpointInfo(path=path.resolve(), config=config, head=SENTENCE_HEAD,
                          has_tokenizer=_has_tokenizer(model_dir), sentence=pooling, **_weights_of(model_dir))


def _weights_of(folder: Path) -> dict[str, Any]:
    """The weight files, the framework that wrote them and TF/Flax files left aside (PyTorch's win)."""
    weight_files = _find_weights(folder)
    framework = weights.framework_of(weight_files)
    ignored = [p for p in weights.foreign_files(folder) if p not in weight_files]
    return {"weight_files": weight_files, "framework": framework,
            "ignored_files": tuple(p.resolve() for p in ignored)}


def _read_config(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: not found; a checkpoint directory needs a config.json")
    try:
        raw = config_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{config_path}: cannot be read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{config_path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{config_path}: not valid JSON (nested too deeply)") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    model_type = config.get("model_type")
    if model_type != "distilbert":
        raise CheckpointError(f"{config_path}: model_type is {_short(model_type)}, expected 'distilbert'")
    for key in ("id2label", "label2id", "num_labels", "problem_type"):
        if key in config and config[key] is None:  # null: as if absent, as transformers reads it
            del config[key]
    _check_dimensions(config_path, config)
    return config


def _check_dimensions(config_path: Path, config: dict[str, Any]) -> None:
    for key in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings"):
        if key not in config:
            continue
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CheckpointError(f"{config_path}: {key} is {_short(value)}, expected a positive integer")
    if "vocab_size" not in config:
        raise CheckpointError(f"{config_path}: vocab_size is missing")
    dim, n_heads = config.get("dim", 768), config.get("n_heads", 12)
    if dim % n_heads:
        raise CheckpointError(f"{config_path}: dim {dim} is not divisible by n_heads {n_heads}")
    _check_labels(config_path, config)


def _check_labels(config_path: Path, config: dict[str, Any]) -> None:
    """id2label/label2id/num_labels as transformers reads them: a JSON object of ids and names, a count."""
    id2label = config.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict) or not id2label:
            raise CheckpointError(f"{config_path}: id2label must be an object of class ids to names, "
                                  f"got {_short(id2label)}")
        try:
            ids = sorted(int(key) for key in id2label)
        except ValueError:
            ids = []
        if ids != list(range(len(id2label))) or not all(isinstance(n, str) for n in id2label.values()):
            raise CheckpointError(f"{config_path}: id2label must map the class ids 0 to {len(id2label) - 1} to "
                                  f"label names, got {_short(id2label)}")
    label2id = config.get("label2id")
    if label2id is not None and not isinstance(label2id, dict):
        raise CheckpointError(f"{config_path}: label2id must be an object of names to class ids, "
                              f"got {_short(label2id)}")
    num_labels = config.get("num_labels")
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1):
        raise CheckpointError(f"{config_path}: num_labels is {_short(num_labels)}, expected a positive integer")
    problem_type = config.get("problem_type")
    if problem_type is not None and not isinstance(problem_type, str):
        raise CheckpointError(f"{config_path}: problem_type is {_short(problem_type)}, expected a name")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _detect_head(config_path: Path, config: dict[str, Any]) -> HeadSpec:
    archs = config.get("architectures") or ["DistilBertModel"]
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise CheckpointError(f"{config_path}: architectures must be a list of names, got {_short(archs)}")
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{config_path}: architecture {_short(arch)} is not supported; "
                              f"expected one of {', '.join(ARCHITECTURES)}")
    problem_type = config.get("problem_type")
    if arch == "DistilBertForSequenceClassification" and problem_type is None:
        # transformers' own rule when the config does not say
        problem_type = "regression" if _num_labels(config) == 1 else "single_label_classification"
    head = find_head(arch, problem_type)
    if head is None:
        raise CheckpointError(f"{config_path}: problem_type {_short(problem_type)} is not supported; expected "
                              "single_label_classification, multi_label_classification or regression")
    return head


def _num_labels(config: dict[str, Any]) -> int:
    if "id2label" in config:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def _find_weights(path: Path) -> tuple[Path, ...]:
    for name in INDEX_FILES:
        index = path / name
        if index.is_file():
            return (index, *_shards_of(index))
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return (path / name,)
    foreign = weights.find(path)  # TensorFlow's or Flax's, when there are no PyTorch weights
    if foreign is not None:
        fmt, found = foreign
        return (found, *_shards_of(found)) if found.name == fmt.index else (found,)
    raise CheckpointError(f"{path}: no weights found; expected one of "
                          f"{', '.join(WEIGHT_FILES + INDEX_FILES + weights.FILE_NAMES)}")


def _shards_of(index: Path) -> tuple[Path, ...]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a valid shard index ({e})") from None
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise CheckpointError(f"{index}: shard {missing[0]} is missing")
    return tuple(index.parent / n for n in names)


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()


def load_checkpoint(path: str | Path, *, provenance: dict[str, Any] | None = None) -> LoadedCheckpoint:
    """Inspect, then build the model in fp32 eval mode; every weight must match the config."""
    info = inspect_checkpoint(path)
    model = _load_model(info)
    tokenizer = _load_tokenizer(info) if info.has_tokenizer else None
    return LoadedCheckpoint(info=info, model=model, tokenizer=tokenizer, provenance=provenance or {})


def _load_model(info: CheckpointInfo) -> Any:
    _check_weight_files_readable(info)
    lean_transformers()
    import torch
    import transformers

    cls = transformers.DistilBertModel if info.sentence else getattr(transformers, info.head.architecture)
    # TF/Flax weights: read without TF/Flax into PyTorch names (distilforge/weights/), then the same loading
    state_dict = None if info.framework == weights.PYTORCH else weights.torch_state_dict(info.framework,
                                                                                            info.weight_files)
    try:
        # ignore_mismatched_sizes: a tensor of the wrong shape is listed in `loading`, named, rather than
        # raised as "Error(s) in loading state_dict for Linear:" with the name on a later line
        kwargs = dict(output_loading_info=True, ignore_mismatched_sizes=True, dtype=torch.float32,
                      local_files_only=True)
        if state_dict is None:
            model, loading = cls.from_pretrained(str(info.model_dir), **kwargs)
        else:
            config = cls.config_class.from_pretrained(str(info.model_dir), local_files_only=True)
            model, loading = cls.from_pretrained(None, config=config, state_dict=state_dict, **kwargs)
    except Exception as e:  # transformers raises many types for a bad file
        raise CheckpointError(f"{info.weight_files[0]}: weights cannot be loaded: {_first_line(e)}") from None
    problems = _loading_problems(loading, model, info.weight_files, state_dict)
    if problems:
        raise CheckpointError(f"{info.weight_files[0]}: weights do not match config.json: {problems}")
    if info.sentence:
        from distilforge.sentence import sentence_model

        return sentence_model(model.eval(), info.sentence)
    return model.eval()


def _check_weight_files_readable(info: CheckpointInfo) -> None:
    """Catch truncated safetensors files before transformers gives a cryptic error."""
    for f in info.weight_files:
        if f.suffix != ".safetensors":
            continue
        try:
            from safetensors import safe_open

            with safe_open(str(f), framework="np") as handle:
                for key in handle.keys():
                    handle.get_slice(key)
        except Exception as e:
            raise CheckpointError(f"{f}: not a readable safetensors file (truncated, or another format?): "
                                  f"{_first_line(e)}") from None
        _check_safetensors_length(f)


def _check_safetensors_length(f: Path) -> None:
    """The header declares where the last tensor ends; a shorter file is truncated."""
    import struct

    with f.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + header_len + end
    actual = f.stat().st_size
    if actual < expected:
        raise CheckpointError(f"{f}: truncated: {actual} bytes, the header needs {expected}")


def _loading_problems(loading: dict[str, Any], model: Any, weight_files: tuple[Path, ...],
                      state_dict: dict[str, Any] | None = None) -> str:
    """`state_dict`: TF/Flax weights as read (PyTorch names and layout); a tensor the model has no place for is
    refused there too, since the renaming is ours (transformers only warns)."""
    missing = [k for k in loading.get("missing_keys", []) if not k.endswith("position_ids")]
    mismatched = [k[0] if isinstance(k, tuple) else k for k in loading.get("mismatched_keys", [])]
    unexpected = sorted(loading.get("unexpected_keys", [])) if state_dict is not None else []
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
    if mismatched:
        name = mismatched[0]
        expected = tuple(model.state_dict()[name].shape) if name in model.state_dict() else "?"
        stored = _stored_shape(weight_files, name) if state_dict is None else \
            weights.stored_shape(state_dict, name, model.base_model_prefix)
        parts.append(f"{len(mismatched)} tensor(s) of the wrong shape, e.g. {name}: "
                     f"{stored} in the file, {expected} for config.json")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s) that {model.__class__.__name__} has no place for, "
                     f"e.g. {unexpected[0]}")
    return "; ".join(parts)


def _stored_shape(weight_files: tuple[Path, ...], name: str) -> tuple[int, ...] | str:
    """A tensor's shape as a safetensors file stores it ('?' for other formats)."""
    from safetensors import safe_open

    for f in weight_files:
        if f.suffix != ".safetensors":
            continue
        with safe_open(str(f), framework="np") as handle:
            if name in handle.keys():
                return tuple(handle.get_slice(name).get_shape())
    return "?"


def _load_tokenizer(info: CheckpointInfo) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(info.model_dir), local_files_only=True)
    except Exception as e:
        raise CheckpointError(f"{info.model_dir}: tokenizer files cannot be loaded: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e)}"
