"""Text inputs: a tokeniser with character offsets, a vocabulary and the padded id tensors.

Text datasets (``sentiment``, ``sst2``, ``qa``, ``squad``) hold token ids (N, L) int64 padded
with ``PAD_ID`` and a foreground flag per token (N, L). Ids 0, 1, 2 are the special tokens
``<pad>``, ``<unk>`` (a word outside the vocabulary: a real word, so a unit) and ``<sep>``
(between a question and its context); ``EXCLUDED_IDS`` are the tokens that are not units of a
knowledge-point analysis (padding and special tokens).

The tokeniser lower-cases and splits into runs of letters/digits (with an attached
apostrophe suffix: ``isn't``; a detached clitic of pre-tokenised text such as SST's
``it 's`` or ``ca n't`` stays one token) and single punctuation marks; :func:`token_spans` keeps each
token's character offsets so answer spans given in characters (SQuAD) map to tokens.

Extractive QA as classification: an input of L positions has L² span classes, the span from
token i to token j (inclusive) being class ``i·L + j`` (:func:`span_class`). A span model's
joint logits are z_{iL+j} = s_i + e_j (start and end logits), so softmax(z) is the product of
the start and end distributions: cross-entropy on the span class is the sum of the start and end
cross-entropies, and KL between two such models the sum of the start and end KL terms (twice
their mean). Exact match is span-class accuracy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "EXCLUDED_IDS",
    "PAD_ID",
    "SEP_ID",
    "SPECIALS",
    "UNK_ID",
    "Vocabulary",
    "pad_ids",
    "span_class",
    "span_of",
    "token_spans",
    "tokenize",
]

SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<sep>")
PAD_ID, UNK_ID, SEP_ID = 0, 1, 2
EXCLUDED_IDS: tuple[int, ...] = (PAD_ID, SEP_ID)

_TOKEN = re.compile(
    r"(?:'(?:s|re|ve|ll|d|m)|n't)(?![^\W_])|[^\W_]+(?:'[^\W_]+)?|[^\w\s]|_", re.IGNORECASE
)


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for every token of ``text``: ``text[start:end].lower() == token``."""
    return [(m.group().lower(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens: ``"It isn't bad."`` → it, isn't, bad, ."""
    return [t for t, _, _ in token_spans(text)]


@dataclass(frozen=True)
class Vocabulary:
    """Tokens by id; ids 0..2 are :data:`SPECIALS`. Unknown tokens encode to ``UNK_ID``."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIALS}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")

    @classmethod
    def build(
        cls, texts: Iterable[Sequence[str]], max_size: int | None = None, min_count: int = 1
    ) -> Vocabulary:
        """The specials, then tokens seen ≥ ``min_count`` times by decreasing count (ties
        alphabetical, so the result does not depend on the order of ``texts``), at most
        ``max_size`` entries in all."""
        counts = Counter(t for text in texts for t in text if t not in SPECIALS)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        room = None if max_size is None else max(0, max_size - len(SPECIALS))
        return cls(SPECIALS + tuple(ranked[:room]))

    @cached_property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        index = self.index
        return [index.get(t, UNK_ID) for t in tokens]


def span_class(start: Tensor, end: Tensor, length: int) -> Tensor:
    """The span class i·L + j of the span from token ``start`` to ``end`` (inclusive)."""
    return start.long() * length + end.long()


def span_of(label: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """(start, end) token positions of span classes (the inverse of :func:`span_class`)."""
    return label.long() // length, label.long() % length


def pad_ids(rows: Sequence[Sequence[int]], length: int) -> Tensor:
    """(N, length) int64: each row truncated to ``length`` ids, then padded with ``PAD_ID``."""
    out = torch.full((len(rows), length), PAD_ID, dtype=torch.int64)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return out
