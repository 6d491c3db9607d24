"""``qa`` (a generated extractive QA task) and ``squad`` (SQuAD JSON files): span prediction.

Both are span datasets (``task="span"``) holding one row of
L = question_length + 1 + context_length token ids per example: the question's tokens (at most
``question_length``), ``<sep>``, the context's tokens (at most ``context_length``), packed, then
padded with ``<pad>`` to L. The context therefore starts right after ``<sep>``, at the tag
``"context_start"`` (it moves with the question's length). The label is the span class
``start · L + end`` (:func:`~kdscope.datasets.text.span_class`) of the answer's first and last
token, as absolute positions in the row (``num_classes = L²``).
Foreground flags lie on context tokens only: the answer span and the evidence tokens;
question tokens, ``<sep>`` and padding are never foreground. The vocabulary is built from the
training rows alone (:meth:`~kdscope.datasets.text.Vocabulary.build`), so a test word outside it
is ``<unk>``. Tags: ``context_start``, ``answer_length`` (tokens), and for ``qa`` also
``question_type`` (an index into :data:`QUESTION_TYPES`) and ``n_facts``.

``qa``, per example (all draws uniform unless stated):

1. A question type from :data:`QUESTION_TYPES` and a number of facts n in ``facts``.
2. The answering fact, of the type's kind: a location fact "the <colour> <object> is in the
   <place> ." or an ownership fact "the <colour> <object> belongs to <name> .", its slots drawn
   from :data:`COLOURS`, :data:`OBJECTS`, :data:`NAMES` and place phrases "[<adjective>] <noun>"
   (an adjective from :data:`PLACE_ADJECTIVES` with probability ½, a noun from :data:`PLACES`).
3. The question asks for one slot of that fact through two others, its content words:

   ===============  ======================================  ==============  ================
   type             question                                content words   answer
   ===============  ======================================  ==============  ================
   ``where``        where is the <colour> <object> ?        colour, object  the <place>
   ``who``          who owns the <colour> <object> ?        colour, object  <name>
   ``which_place``  which <object> is in the <place> ?      object, place   <colour>
   ``which_owner``  which <object> does <name> own ?        object, name    <colour>
   ===============  ======================================  ==============  ================

   so answers have 1 to 3 tokens and questions at most :data:`MAX_QUESTION` tokens.
4. ``distractors`` facts of the answering fact's kind, each keeping one of the two question slots
   (drawn with probability ½ each) and drawing the other slot and the answer slot afresh: it
   shares one or more, never all, of the question's content words, so both must be matched.
5. Random facts (kind with probability ½, then every slot) until there are n facts.

   Every fact is checked against the facts already drawn and redrawn until it is consistent:
   no two facts of one kind share their (colour, object) or their (object, place or name), and a
   place noun appears either bare or with adjectives, never both ("garden" would be ambiguous
   next to "old garden"). Any question about any fact of a context therefore has exactly one
   answer.
6. The facts are put in a random order; each of the n + 1 gaps between and around them gets a
   filler sentence from :data:`FILLERS` (no slot words) with probability ``filler``; filler
   sentences are then dropped, a random one at a time, until the context holds at most
   ``context_length`` tokens (the facts alone fit: ``facts`` is validated against it).

Evidence tokens are the answering fact's tokens that fill the question's content-word slots,
marked by construction (the same words in other facts are distractors, not evidence). The
train and test splits draw from separate ``numpy.random.Generator(PCG64)`` streams spawned from
``SeedSequence(seed)``.

``squad`` reads SQuAD v1.1 or v2.0 JSON (``{"data": [{"paragraphs": [{"context", "qas":
[{"question", "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}``). Per question:

1. Unanswerable questions (``is_impossible`` true, or no answer) are skipped and counted.
2. Question and context are tokenised by :func:`~kdscope.datasets.text.token_spans`; the first
   answer's character range [answer_start, answer_start + len(text)) maps to the context tokens
   it overlaps. An answer that does not align (the context's characters there differ from its
   text, or no token overlaps the range) is skipped and counted, as is an answer of more than
   ``context_length`` tokens.
3. The kept questions of a split are put in a random order and the first ``max_train`` (or
   ``max_test``) are used.
4. A context of more than ``context_length`` tokens is cut to a window of ``context_length``
   tokens holding the whole answer, its first token uniform over the feasible offsets (so the
   answer's position in the window carries no information); the question is truncated to
   ``question_length`` tokens.
5. Evidence: the window's tokens, outside the answer span, equal to a content word of the
   (truncated) question, i.e. one of its tokens that is neither in :data:`STOP_WORDS` nor
   punctuation (string match, so it also marks incidental repeats of the word).

Skipped questions are reported by a warning per file; :func:`read_squad` returns the counts.
The offsets draw from one stream per split, spawned from ``SeedSequence(seed)``.
"""

from __future__ import annotations

import json
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, check_float, check_int, example_bytes
from kdscope.datasets.registry import register_dataset
from kdscope.datasets.text import SEP_ID, Vocabulary, pad_ids, span_class, token_spans
from kdscope.errors import KdscopeError

__all__ = [
    "COLOURS",
    "FILLERS",
    "MAX_QUESTION",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "PLACE_ADJECTIVES",
    "QUESTION_TYPES",
    "STOP_WORDS",
    "QAExample",
    "SquadRecord",
    "SquadStats",
    "content_words",
    "qa",
    "read_squad",
    "squad",
]

COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow", "black", "white", "brown", "grey")
OBJECTS: tuple[str, ...] = ("box", "ball", "cup", "key", "book", "hat", "lamp", "bag")
PLACES: tuple[str, ...] = (
    "kitchen",
    "garden",
    "hall",
    "office",
    "bedroom",
    "garage",
    "cellar",
    "attic",
)
PLACE_ADJECTIVES: tuple[str, ...] = ("old", "new", "small", "large")
NAMES: tuple[str, ...] = ("anna", "bruno", "clara", "david", "emma", "felix", "greta", "hugo")
FILLERS: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in (
        "it was a quiet day .",
        "the door was shut .",
        "nobody said a word .",
        "then it began to rain .",
        "the radio was on .",
        "everyone went home early .",
    )
)
QUESTION_TYPES: tuple[str, ...] = ("where", "who", "which_place", "which_owner")
#: the names of the generated tags' values (the ``question_type`` index)
QA_TAG_LABELS: dict[str, dict[int, str]] = {"question_type": dict(enumerate(QUESTION_TYPES))}
MAX_QUESTION = 8  # "which <object> is in the <adjective> <noun> ?"
MAX_FACT = 9  # "the <colour> <object> is in the <adjective> <noun> ."
MAX_FACTS = 20  # a bound on ``facts`` under which consistent facts are always quick to draw
MAX_DISTRACTORS = 8
LOCATION, OWNERSHIP = "location", "ownership"

_STOP_TEXT = (
    "a an the of in on at to for from by with about as into onto over under through between after "
    "before during than and or is are was were be been "
    "do does did has have had can could will would what which who whom whose when where why how "
    "that this these those it its there their they them he she his her i you we 's"
)
STOP_WORDS: frozenset[str] = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True)
class QAExample:
    """One example before encoding: question and context tokens, the answer's first and last
    context token (inclusive) and the evidence tokens' context positions (outside the answer)."""

    question: tuple[str, ...]
    context: tuple[str, ...]
    start: int
    end: int
    evidence: tuple[int, ...]


def _dataset(
    examples: Sequence[QAExample],
    vocab: Vocabulary,
    question_length: int,
    context_length: int,
    annotation: str,
    tags: dict[str, Sequence[int]],
) -> TensorDataset:
    """A ``"text"`` span dataset (``task="span"``) of rows ``[question] <sep> [context]
    <pad>...`` of length L = question_length + 1 + context_length, labels the answer's span
    class in the row and foreground on the answer and evidence tokens; ``tags`` adds per-example
    int tags to ``context_start`` and ``answer_length``."""
    length = question_length + 1 + context_length
    rows, starts, ends = [], [], []
    foreground = np.zeros((len(examples), length), dtype=bool)
    for i, ex in enumerate(examples):
        assert len(ex.question) <= question_length and len(ex.context) <= context_length
        offset = len(ex.question) + 1
        rows.append(vocab.encode(ex.question) + [SEP_ID] + vocab.encode(ex.context))
        starts.append(offset + ex.start)
        ends.append(offset + ex.end)
        foreground[i, offset + ex.start : offset + ex.end + 1] = True
        foreground[i, [offset + k for k in ex.evidence]] = True
    context_start = [len(ex.question) + 1 for ex in examples]
    answer_length = [ex.end - ex.start + 1 for ex in examples]
    all_tags = {"context_start": context_start, "answer_length": answer_length, **tags}
    return TensorDataset(
        inputs=pad_ids(rows, length),
        labels=span_class(torch.tensor(starts), torch.tensor(ends), length),
        foreground=torch.from_numpy(foreground),
        num_classes=length * length,
        modality="text",
        tags={k: torch.tensor(v, dtype=torch.int64) for k, v in all_tags.items()},
        tag_labels={k: v for k, v in QA_TAG_LABELS.items() if k in tags},
        vocab=vocab.tokens,
        annotation=annotation,
        task="span",
    )


def _train_vocabulary(train: Sequence[QAExample], **build: Any) -> Vocabulary:
    """The vocabulary of the training rows' question and context tokens."""
    return Vocabulary.build((ex.question + ex.context for ex in train), **build)


# ------------------------------------------------------------------------------ generated task


@dataclass(frozen=True)
class _Fact:
    """A location fact (``value`` the place phrase) or an ownership fact (``value`` = (name,))."""

    kind: str
    colour: str
    obj: str
    value: tuple[str, ...]

    def tokens(self) -> tuple[str, ...]:
        verb = ("is", "in", "the") if self.kind == LOCATION else ("belongs", "to")
        return ("the", self.colour, self.obj, *verb, *self.value, ".")

    def value_positions(self) -> list[int]:
        """Positions of the value's tokens in :meth:`tokens`."""
        first = 6 if self.kind == LOCATION else 5
        return list(range(first, first + len(self.value)))


_KIND = {"where": LOCATION, "who": OWNERSHIP, "which_place": LOCATION, "which_owner": OWNERSHIP}


def _ask(qtype: str, fact: _Fact) -> tuple[tuple[str, ...], list[int], list[int]]:
    """The question of type ``qtype`` answered by ``fact``, and the answer's and the evidence's
    positions in the fact's tokens (rows of the table in the module docstring)."""
    value = fact.value_positions()
    if qtype == "where":
        return ("where", "is", "the", fact.colour, fact.obj, "?"), [value[0] - 1, *value], [1, 2]
    if qtype == "who":
        return ("who", "owns", "the", fact.colour, fact.obj, "?"), value, [1, 2]
    if qtype == "which_place":
        return ("which", fact.obj, "is", "in", "the", *fact.value, "?"), [1], [2, *value]
    return ("which", fact.obj, "does", *fact.value, "own", "?"), [1], [2, *value]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _random_fact(rng: np.random.Generator, kind: str) -> _Fact:
    """A fact of ``kind`` with uniform slots; a place gets an adjective with probability ½."""
    colour, obj = _pick(rng, COLOURS), _pick(rng, OBJECTS)
    if kind == OWNERSHIP:
        return _Fact(kind, colour, obj, (_pick(rng, NAMES),))
    noun = _pick(rng, PLACES)
    place = (_pick(rng, PLACE_ADJECTIVES), noun) if rng.random() < 0.5 else (noun,)
    return _Fact(kind, colour, obj, place)


def _distractor(rng: np.random.Generator, qtype: str, answer: _Fact) -> _Fact:
    """A fact of the answer's kind keeping one of the question's two slots (probability ½ each),
    the other slots drawn afresh (the consistency check rejects a redraw equal to the answer's)."""
    new = _random_fact(rng, answer.kind)
    keep_first = rng.random() < 0.5
    if qtype in ("where", "who"):
        return replace(new, colour=answer.colour) if keep_first else replace(new, obj=answer.obj)
    return replace(new, obj=answer.obj) if keep_first else replace(new, value=answer.value)


class _Facts:
    """The facts of one context, each added only when consistent with those before (step 5 of
    the module docstring)."""

    def __init__(self) -> None:
        self.facts: list[_Fact] = []
        self._keys: set[tuple[str, ...]] = set()
        self._bare: dict[str, bool] = {}  # place noun -> whether it appears without adjective

    def add(self, fact: _Fact) -> None:
        """Add ``fact`` if no fact of its kind has its (colour, object) or (object, value) and
        its place noun keeps its form (bare or with adjectives); otherwise do nothing."""
        keys = {
            (fact.kind, "colour-object", fact.colour, fact.obj),
            (fact.kind, "object-value", fact.obj, *fact.value),
        }
        noun, bare = fact.value[-1], len(fact.value) == 1
        if keys & self._keys or (fact.kind == LOCATION and self._bare.get(noun, bare) != bare):
            return
        self._keys |= keys
        if fact.kind == LOCATION:
            self._bare[noun] = bare
        self.facts.append(fact)


@dataclass(frozen=True)
class _TaskConfig:
    context_length: int
    facts: tuple[int, int]
    distractors: int
    filler: float


def _context(
    rng: np.random.Generator, facts: list[_Fact], cfg: _TaskConfig
) -> tuple[tuple[str, ...], int]:
    """The context's tokens, the facts in a random order with filler sentences (step 6), and
    the position of the first token of ``facts[0]``, the answering fact."""
    sentences: list[tuple[str, ...]] = []
    fillers: list[int] = []  # the indices of the filler sentences in ``sentences``

    def gap() -> None:
        if rng.random() < cfg.filler:
            fillers.append(len(sentences))
            sentences.append(FILLERS[int(rng.integers(len(FILLERS)))])

    for k in rng.permutation(len(facts)).tolist():
        gap()
        sentences.append(facts[k].tokens())
    gap()
    while sum(map(len, sentences)) > cfg.context_length:
        sentences[fillers.pop(int(rng.integers(len(fillers))))] = ()
    answer_at = sentences.index(facts[0].tokens())  # facts and fillers are all distinct
    return tuple(t for s in sentences for t in s), sum(map(len, sentences[:answer_at]))


def _generated_example(rng: np.random.Generator, cfg: _TaskConfig) -> tuple[QAExample, int, int]:
    """One example (steps 1-6 of the module docstring), its question type index and n_facts."""
    qtype_index = int(rng.integers(len(QUESTION_TYPES)))
    qtype = QUESTION_TYPES[qtype_index]
    n_facts = int(rng.integers(cfg.facts[0], cfg.facts[1] + 1))
    answer = _random_fact(rng, _KIND[qtype])
    facts = _Facts()
    facts.add(answer)
    while len(facts.facts) < 1 + cfg.distractors:
        facts.add(_distractor(rng, qtype, answer))
    while len(facts.facts) < n_facts:
        facts.add(_random_fact(rng, LOCATION if rng.random() < 0.5 else OWNERSHIP))
    question, answer_at, evidence_at = _ask(qtype, answer)
    context, offset = _context(rng, facts.facts, cfg)
    example = QAExample(
        question,
        context,
        offset + answer_at[0],
        offset + answer_at[-1],
        tuple(offset + k for k in evidence_at),
    )
    return example, qtype_index, n_facts


def _generate(
    n: int, seed_seq: np.random.SeedSequence, cfg: _TaskConfig
) -> tuple[list[QAExample], dict[str, list[int]]]:
    """One split: ``n`` examples and their ``question_type`` and ``n_facts`` tags."""
    rng = np.random.Generator(np.random.PCG64(seed_seq))
    drawn = [_generated_example(rng, cfg) for _ in range(n)]
    tags = {"question_type": [d[1] for d in drawn], "n_facts": [d[2] for d in drawn]}
    return [d[0] for d in drawn], tags


def _check_facts(facts: Any, distractors: int, context_length: int) -> tuple[int, int]:
    """``facts`` as (low, high): 1 + distractors <= low <= high <= MAX_FACTS, and ``high``
    facts of up to MAX_FACT tokens fit in ``context_length``."""
    if not isinstance(facts, Sequence) or isinstance(facts, str) or len(facts) != 2:
        raise ValueError(f"facts must be a pair [low, high], got {facts!r}")
    low = check_int("facts[0]", facts[0], 1 + distractors, MAX_FACTS)
    high = check_int("facts[1]", facts[1], low, MAX_FACTS)
    if high * MAX_FACT > context_length:
        raise ValueError(
            f"facts: {high} facts of up to {MAX_FACT} tokens do not fit in "
            f"context_length={context_length} (raise context_length or lower facts[1])"
        )
    return low, high


QA_ANNOTATION = (
    "answer-span tokens plus evidence tokens: the answering fact's tokens that state the "
    "question's content words (its two slots), marked exactly by the generator"
)


def _footprint(a: Mapping[str, Any]) -> tuple[int, int]:
    """Examples and bytes per example: int64 token ids and bool flags of the row's
    question_length + 1 + context_length tokens."""
    length = a["question_length"] + 1 + a["context_length"]
    return a["n_train"] + a["n_test"], example_bytes(length, 8, length)


@register_dataset("qa", modality="text", footprint=_footprint)
def qa(
    n_train: int = 3000,
    n_test: int = 600,
    question_length: int = 8,
    context_length: int = 40,
    seed: int = 0,
    *,
    facts: Sequence[int] = (3, 4),
    distractors: int = 2,
    filler: float = 0.5,
) -> DataSplits:
    """A generated extractive QA task: questions about short facts, answered by a span of the
    context, with distractor facts that share some of the question's content words (see the
    module docstring for the generative process and the row layout).

    Args:
        n_train, n_test: number of train / test examples.
        question_length: question tokens in a row (>= 8, the longest question).
        context_length: context tokens in a row (>= 9 · facts[1]).
        seed: non-negative integer; the same seed gives bit-identical tensors.
        facts: [low, high], the number of facts per context, uniform in that range
            (1 + distractors <= low <= high <= 20).
        distractors: facts per context that share one of the question's two slots with the
            answering fact (0..8).
        filler: in [0, 1], the probability of a filler sentence in each gap between facts.

    Returns:
        :class:`DataSplits` of ``"text"`` span datasets (``task="span"``): inputs int64 (N, L)
        token ids, labels the answer's span class (``num_classes = L²``), foreground bool
        (N, L) on the answer and evidence tokens; tags ``context_start``, ``answer_length``,
        ``question_type`` (index into :data:`QUESTION_TYPES`) and ``n_facts``.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    question_length = check_int("question_length", question_length, MAX_QUESTION)
    context_length = check_int("context_length", context_length, MAX_FACT)
    seed = check_int("seed", seed, 0)
    distractors = check_int("distractors", distractors, 0, MAX_DISTRACTORS)
    cfg = _TaskConfig(
        context_length,
        _check_facts(facts, distractors, context_length),
        distractors,
        check_float("filler", filler, 0.0, 1.0),
    )
    seqs = np.random.SeedSequence(seed).spawn(2)
    (train, train_tags), (test, test_tags) = (
        _generate(n, seq, cfg) for n, seq in zip((n_train, n_test), seqs, strict=True)
    )
    vocab = _train_vocabulary(train)
    train_ds, test_ds = (
        _dataset(examples, vocab, question_length, context_length, QA_ANNOTATION, tags)
        for examples, tags in ((train, train_tags), (test, test_tags))
    )
    return DataSplits(train=train_ds, test=test_ds)


# ------------------------------------------------------------------------------ SQuAD files


@dataclass(frozen=True)
class SquadRecord:
    """An answerable, aligned SQuAD question: the tokens of the whole question and context and
    the first and last context token (inclusive) of its first answer."""

    question: tuple[str, ...]
    context: tuple[str, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SquadStats:
    """Question counts of one SQuAD file: all, skipped (by reason) and kept."""

    questions: int
    unanswerable: int
    unaligned: int
    too_long: int

    @property
    def kept(self) -> int:
        return self.questions - self.unanswerable - self.unaligned - self.too_long

    def __str__(self) -> str:
        return (
            f"kept {self.kept} of {self.questions} questions; skipped {self.unanswerable} "
            f"unanswerable, {self.unaligned} whose answer does not align with the context, "
            f"{self.too_long} whose answer is longer than context_length"
        )


SCHEMA = '{"data": [{"paragraphs": [{"context", "qas": [{"question", "answers"}]}]}]}'


def _field(obj: Any, key: str, kind: type, where: str, path: Path) -> Any:
    """``obj[key]``, checked to be a ``kind``; else a KdscopeError naming the file and place."""
    if not isinstance(obj, dict):
        raise KdscopeError(f"squad: {path}: {where} is not a JSON object (expected {SCHEMA})")
    if key not in obj:
        raise KdscopeError(f"squad: {path}: {where} has no {key!r} (expected {SCHEMA})")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise KdscopeError(f"squad: {path}: {where}[{key!r}] is not a {kind.__name__}")
    return value


def _load_json(path: Path) -> Any:
    """The JSON document in ``path``; a missing or unreadable file is a KdscopeError."""
    if not path.is_file():
        raise KdscopeError(f"squad: {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise KdscopeError(f"squad: {path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise KdscopeError(
            f"squad: {path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from None


def _align(
    context: str, spans: list[tuple[str, int, int]], text: str, char_start: int
) -> tuple[int, int] | None:
    """First and last index of the context tokens overlapping the characters [char_start,
    char_start + len(text)); None unless the context holds ``text`` there and a token overlaps.
    Tokens are ordered and disjoint: the first one ending after char_start and the last one
    starting before char_end bound the overlapping ones."""
    char_end = char_start + len(text)
    if char_start < 0 or context[char_start:char_end] != text:
        return None
    first = bisect_right([e for _, _, e in spans], char_start)
    last = bisect_left([s for _, s, _ in spans], char_end) - 1
    return (first, last) if first <= last else None


def read_squad(path: Path, context_length: int) -> tuple[list[SquadRecord], SquadStats]:
    """The answerable questions of a SQuAD file whose first answer aligns with the context's
    tokens and has at most ``context_length`` tokens (steps 1-2 of the module docstring), in
    file order, and the counts of all and skipped questions. Bad files are a KdscopeError."""
    data = _field(_load_json(path), "data", list, "the top level", path)
    records: list[SquadRecord] = []
    unanswerable = unaligned = too_long = questions = 0
    for i, article in enumerate(data):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{i}]", path)):
            where = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, where, path)
            spans = token_spans(context)
            tokens = tuple(t for t, _, _ in spans)
            for k, qa_item in enumerate(_field(paragraph, "qas", list, where, path)):
                where_q = f"{where}.qas[{k}]"
                question = _field(qa_item, "question", str, where_q, path)
                answers = _field(qa_item, "answers", list, where_q, path)
                questions += 1
                if qa_item.get("is_impossible") is True or not answers:
                    unanswerable += 1
                    continue
                text = _field(answers[0], "text", str, f"{where_q}.answers[0]", path)
                char_start = _field(answers[0], "answer_start", int, f"{where_q}.answers[0]", path)
                span = _align(context, spans, text, char_start)
                if span is None:
                    unaligned += 1
                elif span[1] - span[0] + 1 > context_length:
                    too_long += 1
                else:
                    q_tokens = tuple(t for t, _, _ in token_spans(question))
                    records.append(SquadRecord(q_tokens, tokens, *span))
    return records, SquadStats(questions, unanswerable, unaligned, too_long)


def content_words(question: Sequence[str]) -> set[str]:
    """The question's tokens that are neither in :data:`STOP_WORDS` nor punctuation (a token
    without a letter or digit)."""
    return {t for t in question if t not in STOP_WORDS and any(c.isalnum() for c in t)}


def _window(record: SquadRecord, context_length: int, rng: np.random.Generator) -> int:
    """The first context token of the window (step 4): 0 when the context fits, else uniform
    over the offsets whose ``context_length`` tokens hold the whole answer."""
    n = len(record.context)
    if n <= context_length:
        return 0
    low = max(0, record.end - context_length + 1)
    high = min(record.start, n - context_length)
    return int(rng.integers(low, high + 1))


def _squad_example(
    record: SquadRecord, question_length: int, context_length: int, rng: np.random.Generator
) -> QAExample:
    """The record cut to its window and question length, with its evidence (steps 4-5)."""
    first = _window(record, context_length, rng)
    question = record.question[:question_length]
    context = record.context[first : first + context_length]
    start, end = record.start - first, record.end - first
    words = content_words(question)
    evidence = tuple(k for k, t in enumerate(context) if t in words and not start <= k <= end)
    return QAExample(question, context, start, end, evidence)


def _squad_split(
    path: Path,
    rng: np.random.Generator,
    question_length: int,
    context_length: int,
    cap: int | None,
) -> list[QAExample]:
    """The examples of one file in a random order, at most ``cap``; skips are warned about."""
    records, stats = read_squad(path, context_length)
    if stats.kept < stats.questions:
        warnings.warn(f"squad: {path}: {stats}", stacklevel=2)
    if not records:
        raise KdscopeError(f"squad: {path}: no usable question ({stats})")
    order = rng.permutation(len(records))[:cap]
    return [_squad_example(records[i], question_length, context_length, rng) for i in order]


SQUAD_ANNOTATION = (
    "answer-span tokens plus evidence tokens: context tokens equal to a content word of the "
    "question (its tokens other than stop words and punctuation), found by string match"
)


@register_dataset("squad", modality="text")
def squad(
    root: str | Path,
    train_file: str = "train-v1.1.json",
    test_file: str = "dev-v1.1.json",
    question_length: int = 16,
    context_length: int = 64,
    max_vocab: int = 8000,
    min_count: int = 1,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """SQuAD v1.1 or v2.0 files as extractive span prediction (see the module docstring for
    the skips, the window cut and the evidence).

    Args:
        root: the folder holding the files.
        train_file, test_file: file names in ``root`` (e.g. ``train-v2.0.json``).
        question_length: question tokens kept (>= 1; longer questions are truncated).
        context_length: context tokens in a row (>= 1; longer contexts are cut to a window
            holding the answer, at a seeded random offset).
        max_vocab: vocabulary size including the 3 special tokens (>= 4); rarer words are
            ``<unk>``.
        min_count: words seen fewer times in the training rows are ``<unk>``.
        max_train, max_test: use at most this many questions of a split (a random subset);
            None uses all.
        seed: non-negative integer; the same seed and files give bit-identical tensors.

    Returns:
        :class:`DataSplits` of ``"text"`` span datasets (``task="span"``): inputs int64 (N, L)
        token ids, L = question_length + 1 + context_length, labels the answer's span class
        (``num_classes = L²``), foreground bool (N, L) on the answer and evidence tokens; tags
        ``context_start`` and ``answer_length``.
    """
    question_length = check_int("question_length", question_length, 1)
    context_length = check_int("context_length", context_length, 1)
    max_vocab = check_int("max_vocab", max_vocab, 4)
    min_count = check_int("min_count", min_count, 1)
    caps = [
        None if c is None else check_int(name, c, 1)
        for name, c in (("max_train", max_train), ("max_test", max_test))
    ]
    seed = check_int("seed", seed, 0)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise KdscopeError(f"squad: root {str(root)!r} does not exist or is not a directory")
    seqs = np.random.SeedSequence(seed).spawn(2)
    train, test = (
        _squad_split(
            root / name,
            np.random.Generator(np.random.PCG64(seq)),
            question_length,
            context_length,
            cap,
        )
        for name, seq, cap in zip((train_file, test_file), seqs, caps, strict=True)
    )
    vocab = _train_vocabulary(train, max_size=max_vocab, min_count=min_count)
    train_ds, test_ds = (
        _dataset(examples, vocab, question_length, context_length, SQUAD_ANNOTATION, {})
        for examples in (train, test)
    )
    return DataSplits(train=train_ds, test=test_ds)
