"""The six DistilBERT heads: what each takes, what each returns, how its outputs compare.

Pure data, no heavy imports, so the CLI can check a config before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass

# How two versions of one output are said to "agree":
#   "class"     argmax over the last axis (per row, or per kept token)
#   "labels"    the sign of every logit (multi-label: sigmoid > 0.5)
#   "position"  argmax over the sequence axis, padded positions excluded (QA spans)
#   "neighbour" each row's nearest other row of its batch by cosine (embeddings; batches of 3 rows or more)
#   None        no discrete decision (hidden states, regression)
AGREEMENT_KINDS = ("class", "labels", "position", "neighbour", None)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    per_token: bool  # has a sequence axis right after batch (and choices); compare kept positions only
    agreement: str | None
    row_cosine: bool = False  # cosine per row (an embedding each), the lowest reported; else over the whole output


@dataclass(frozen=True)
class HeadSpec:
    architecture: str
    problem_type: str | None
    task: str
    outputs: tuple[OutputSpec, ...]
    multiple_choice: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("input_ids", "attention_mask")

    @property
    def input_axes(self) -> tuple[str, ...]:
        """Names of the input dimensions, in order."""
        if self.multiple_choice:
            return ("batch", "choices", "sequence")
        return ("batch", "sequence")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def key(self) -> str:
        return self.architecture + (f"/{self.problem_type}" if self.problem_type else "")


SENTENCE_TRANSFORMER = "SentenceTransformer"


def _head(arch: str, task: str, *outputs: OutputSpec, problem_type: str | None = None,
          multiple_choice: bool = False) -> HeadSpec:
    return HeadSpec(arch, problem_type, task, tuple(outputs), multiple_choice)


HEADS: tuple[HeadSpec, ...] = (
    _head("DistilBertModel", "feature-extraction", OutputSpec("last_hidden_state", True, None)),
    _head("DistilBertForMaskedLM", "fill-mask", OutputSpec("logits", True, "class")),
    _head("DistilBertForSequenceClassification", "text-classification",
          OutputSpec("logits", False, "class"), problem_type="single_label_classification"),
    _head("DistilBertForSequenceClassification", "text-classification",
          OutputSpec("logits", False, "labels"), problem_type="multi_label_classification"),
    _head("DistilBertForSequenceClassification", "text-classification",
          OutputSpec("logits", False, None), problem_type="regression"),
    _head("DistilBertForTokenClassification", "token-classification", OutputSpec("logits", True, "class")),
    _head("DistilBertForQuestionAnswering", "question-answering",
          OutputSpec("start_logits", True, "position"), OutputSpec("end_logits", True, "position")),
    _head("DistilBertForMultipleChoice", "multiple-choice", OutputSpec("logits", False, "class"),
          multiple_choice=True),
    # a sentence-transformers folder (sentence.py): a DistilBertModel, then pooling and maybe normalization
    _head(SENTENCE_TRANSFORMER, "sentence-similarity", OutputSpec("last_hidden_state", True, None),
          OutputSpec("sentence_embedding", False, "neighbour", row_cosine=True)),
)

# what config.json's `architectures` may name (a sentence-transformers folder is found by its modules.json)
ARCHITECTURES = tuple(dict.fromkeys(h.architecture for h in HEADS if h.architecture != SENTENCE_TRANSFORMER))
SENTENCE_HEAD = next(h for h in HEADS if h.architecture == SENTENCE_TRANSFORMER)


def find_head(architecture: str, problem_type: str | None) -> HeadSpec | None:
    """The head for an architecture (and, for sequence classification, its problem type)."""
    for head in HEADS:
        if head.architecture == architecture and head.problem_type in (None, problem_type):
            return head
    return None
