"""``sentiment`` (a generated corpus) and ``sst2`` (SST-2 files): binary sentiment classification.

Both give text datasets (:mod:`kdscope.datasets.text`): token ids (N, L) int64 padded with
``PAD_ID``, labels 0 (negative) or 1 (positive), and a foreground flag per token
(docs/knowledge_points.md: foreground = the tokens that carry the label; never set on padding). The
vocabulary is built from the training split only; test words outside it encode to ``<unk>``.

**Generated corpus** (``sentiment``). Each sentence is made of k *clauses*, each holding one
sentiment *cue*, joined by connectives and ended by ".", with neutral filler phrases::

    clause = determiner noun verb [negator] [intensifier] word    ("the plot was not very good")

Per sentence, in this order:

1. The clean label y is 0 or 1, balanced: a random permutation of (0, 1, 0, 1, ...).
2. The sentence is *mixed* with probability ``mixed``. The cue count k is uniform on
   {min_cues, ..., max_cues}, or on {max(3, min_cues), ..., max_cues} for a mixed sentence.
3. Effective polarities e_j = ±1 (the cue's contribution to the label): in a plain sentence all
   k equal s = 2y − 1; in a mixed one m ~ U{1, ..., ⌊(k − 1)/2⌋} of them are −s and k − m are s,
   so Σ_j e_j = s (k − 2m) has the sign of s and is never 0. Their order is a random permutation.
4. Each cue is negated with probability ``negation`` (a negator from
   :data:`~kdscope.datasets.sentiment_lexicon.NEGATORS` right before the word, or before its
   intensifier) and intensified with probability ``intensifier``, independently. The word's own
   polarity is e_j, or −e_j when negated; the word is uniform among the first ``lexicon_size``
   positive or negative words of the lexicon accordingly (so "not bad" is a positive cue). The
   lexicon's lists start with their commonest words; a small ``lexicon_size`` lets a small model
   see each word often enough (with 32 words and 2,000 sentences, about 70 times).
5. Clauses get uniform determiners, nouns and verbs and are joined by uniform connectives. A
   target length T is uniform on {min_length, ..., max_length}; while the sentence is shorter
   than T, a neutral filler phrase (an adverbial such as "at times" or a neutral clause such as
   "and the cast is large"; uniform among those that still fit) is inserted after a uniform
   clause. A sentence is never cut to T: with many cues it can be longer (at most
   7 · max_cues tokens, which ``length`` must hold).
6. The label is y, flipped with probability ``label_noise``.

So the label is the sign of Σ_j e_j, where e_j is the word's polarity times −1 if a negator
precedes it (directly or across one intensifier), unless the ``noisy`` tag is 1. Foreground =
the sentiment words and their negators: exactly the tokens the label depends on. Intensifiers
are background: they change no polarity, so the label does not depend on them (nor on fillers).
Negation makes word counts imperfect predictors: a bag of words sees "not good" as "good" plus
a word that is no more negative than positive on average (with the defaults, counting positive
minus negative words gets about 70 % right). Mixed sentences keep word counts exact without
negation, but a model that only spots whether some cue is present fails on them.

Generation is deterministic from ``seed``: train and test draw from separate
``numpy.random.Generator(PCG64)`` streams spawned from ``SeedSequence(seed)``; all random numbers
of a split are drawn as arrays first, then the sentences are assembled.

**SST-2 files** (``sst2``). Two layouts, chosen by ``format`` (``"auto"``: a file whose first
non-blank line starts with "(" and holds no tab is a tree file, any other a TSV file):

* ``"tsv"``, GLUE's SST-2: an optional header ``sentence<TAB>label`` (columns are found by
  name; GLUE's test.tsv, headed ``index<TAB>sentence``, has no labels and is refused), then one
  ``sentence<TAB>0|1`` per line. These files label sentences, not words, so the foreground is
  the tokens found in a lexicon: the built-in one (:mod:`kdscope.datasets.sentiment_lexicon`,
  positive and negative words) or the user's file; the dataset's ``annotation`` says which.
  Negators are not marked there: their scope in free text is not known.
* ``"trees"``, the Stanford Sentiment Treebank's PTB trees (``train.txt``, ``dev.txt``): one
  tree per line, ``(3 (2 It) (4 (2 's) (3 (2 a) (4 good))))``, every node labelled 0-4. The
  root's label gives the sentence's (0, 1 → negative; 3, 4 → positive; 2 → the sentence is
  dropped) and a leaf's own label its words' foreground flag (True unless 2).

Words are lower-cased and split by :func:`~kdscope.datasets.text.tokenize` (a tree leaf that
splits into several tokens gives each of them the leaf's flag; PTB escapes such as ``-LRB-`` are
undone first). Sentences longer than ``max_length`` tokens are cut (tag ``truncated``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, check_float, check_int, example_bytes
from kdscope.datasets.registry import register_dataset
from kdscope.datasets.sentiment_lexicon import INTENSIFIERS, NEGATIVE, NEGATORS, POSITIVE
from kdscope.datasets.text import SPECIALS, Vocabulary, pad_ids, tokenize
from kdscope.errors import KdscopeError

__all__ = [
    "CLASS_NAMES",
    "CONNECTIVES",
    "DETERMINERS",
    "FILLERS",
    "FORMATS",
    "NOUNS",
    "VERBS",
    "parse_tree",
    "read_lexicon",
    "sentiment",
    "sst2",
]

CLASS_NAMES: list[str] = ["negative", "positive"]
FORMATS: tuple[str, ...] = ("auto", "tsv", "trees")

# Neutral vocabulary of the generated corpus (disjoint from the lexicon's lists).
DETERMINERS: tuple[str, ...] = ("the", "this", "its")
NOUNS: tuple[str, ...] = (
    *("film", "movie", "story", "plot", "script", "acting", "cast", "ending", "director"),
    *("music", "score", "soundtrack", "dialogue", "pacing", "camera", "lead", "hero", "villain"),
    *("premise", "sequel", "show", "book", "novel", "album", "performance", "production"),
    *("humor", "tone", "finale", "opening", "setting", "design", "editing", "writing"),
    *("character", "atmosphere", "experience", "idea", "concept", "style"),
)
VERBS: tuple[str, ...] = ("is", "was", "seems", "seemed", "feels", "felt", "looks", "remains")
CONNECTIVES: tuple[str, ...] = ("and", "but", "while", "though", "yet", "whereas", ",", ";")
FILLERS: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(phrase.split())
            for phrase in (
                *("again", "overall", "throughout", "today", "somehow", "mostly", "also"),
                *("at times", "this time", "on screen", "as usual", "in places", "on paper"),
                *("for once", "by now", "after all", "in my view", "by the end", "on the whole"),
                *("for a while", "at the start", "for the most part", "from start to finish"),
                *("in the second half", "at the same time", "and the cast is large"),
                *("and the film runs long", "while the story is set in a small town"),
                *("though the ending came early", "and the music is loud", "as the plot moves on"),
                *("while the story follows two brothers", "and the film is in french"),
            )
        ),
        key=len,
    )
)
CLAUSE_MAX = 7  # determiner noun verb negator intensifier word + a connective or the final "."
# _FITTING[r]: how many FILLERS have at most r tokens (they are sorted by length)
_FITTING: tuple[int, ...] = tuple(
    sum(len(f) <= r for f in FILLERS) for r in range(max(map(len, FILLERS)) + 1)
)

GENERATED_ANNOTATION = (
    "foreground: the sentiment-lexicon words that set the label and the negators that flip "
    "them; intensifiers and neutral filler are background"
)
TREES_ANNOTATION = (
    "foreground: words whose own node label in the Stanford Sentiment Treebank trees is "
    "non-neutral (0, 1, 3 or 4; 2 is neutral)"
)


def _text_dataset(
    vocab: Vocabulary,
    tokens: Sequence[Sequence[str]],
    foreground: Sequence[Sequence[bool]],
    labels: np.ndarray,
    tags: dict[str, np.ndarray],
    length: int,
    annotation: str,
) -> TensorDataset:
    """A ``"text"`` dataset of sentences that fit in ``length`` tokens: ids padded with
    ``PAD_ID``, foreground flags padded with False."""
    flags = np.zeros((len(tokens), length), dtype=bool)
    for i, row in enumerate(foreground):
        flags[i, : len(row)] = row
    return TensorDataset(
        inputs=pad_ids([vocab.encode(row) for row in tokens], length),
        labels=torch.as_tensor(labels, dtype=torch.int64),
        foreground=torch.from_numpy(flags),
        num_classes=2,
        modality="text",
        tags={k: torch.as_tensor(v, dtype=torch.int64) for k, v in tags.items()},
        class_names=list(CLASS_NAMES),
        vocab=vocab.tokens,
        annotation=annotation,
    )


# ------------------------------------------------------------------------ generated corpus


@dataclass(frozen=True)
class _Config:
    min_length: int
    max_length: int
    min_cues: int
    max_cues: int
    lexicon_size: int
    negation: float
    intensifier: float
    mixed: float
    label_noise: float


@dataclass(frozen=True)
class _Draws:
    """Every random number of one split (steps 1-6 of the module docstring), as lists: per
    sentence (n,), per cue slot (n, max_cues) or per filler (n, max_length, 2). A cue's
    ``word_polarity`` is its effective polarity, negated when the cue is."""

    clean: list[int]
    mixed: list[bool]
    cues: list[int]
    word_polarity: list[list[int]]
    negated: list[list[bool]]
    intensified: list[list[bool]]
    word: list[list[int]]
    negator: list[list[int]]
    intensifier: list[list[int]]
    determiner: list[list[int]]
    noun: list[list[int]]
    verb: list[list[int]]
    connective: list[list[int]]
    target: list[int]
    filler: list[list[list[float]]]
    noisy: list[bool]


def _effective_polarities(
    rng: np.random.Generator, clean: np.ndarray, mixed: np.ndarray, k: np.ndarray, c: int
) -> np.ndarray:
    """(n, c) effective polarities e_j (step 3): the first k slots of each row hold k − m
    copies of s = 2y − 1 and m copies of −s (m = 0 unless mixed) in a random order; slots ≥ k
    are 0."""
    n = len(clean)
    m = np.where(mixed, 1 + (rng.random(n) * ((k - 1) // 2)).astype(np.int64), 0)
    slot = np.arange(c)
    s = (2 * clean - 1)[:, None]
    ordered = np.where(slot < (k - m)[:, None], s, -s) * (slot < k[:, None])
    keys = np.where(slot < k[:, None], rng.random((n, c)), np.inf)
    return np.take_along_axis(ordered, keys.argsort(1), 1)


def _draw(rng: np.random.Generator, n: int, cfg: _Config) -> _Draws:
    """All random numbers of a split of n sentences, drawn as arrays."""
    c = cfg.max_cues
    clean = rng.permutation(np.arange(n, dtype=np.int64) % 2)
    mixed = rng.random(n) < cfg.mixed
    low = np.where(mixed, max(3, cfg.min_cues), cfg.min_cues)
    k = low + (rng.random(n) * (c + 1 - low)).astype(np.int64)
    polarity = _effective_polarities(rng, clean, mixed, k, c)
    negated = rng.random((n, c)) < cfg.negation
    return _Draws(
        clean=clean.tolist(),
        mixed=mixed.tolist(),
        cues=k.tolist(),
        word_polarity=np.where(negated, -polarity, polarity).tolist(),
        negated=negated.tolist(),
        intensified=(rng.random((n, c)) < cfg.intensifier).tolist(),
        word=rng.integers(cfg.lexicon_size, size=(n, c)).tolist(),
        negator=rng.integers(len(NEGATORS), size=(n, c)).tolist(),
        intensifier=rng.integers(len(INTENSIFIERS), size=(n, c)).tolist(),
        determiner=rng.integers(len(DETERMINERS), size=(n, c)).tolist(),
        noun=rng.integers(len(NOUNS), size=(n, c)).tolist(),
        verb=rng.integers(len(VERBS), size=(n, c)).tolist(),
        connective=rng.integers(len(CONNECTIVES), size=(n, c)).tolist(),
        target=rng.integers(cfg.min_length, cfg.max_length + 1, n).tolist(),
        filler=rng.random((n, cfg.max_length, 2)).tolist(),
        noisy=(rng.random(n) < cfg.label_noise).tolist(),
    )


def _clause(d: _Draws, i: int, j: int) -> tuple[list[str], list[bool]]:
    """Tokens and foreground flags of cue j of sentence i: determiner noun verb [negator]
    [intensifier] word, the negator and the word flagged."""
    tokens = [DETERMINERS[d.determiner[i][j]], NOUNS[d.noun[i][j]], VERBS[d.verb[i][j]]]
    flags = [False, False, False]
    if d.negated[i][j]:
        tokens.append(NEGATORS[d.negator[i][j]])
        flags.append(True)
    if d.intensified[i][j]:
        tokens.append(INTENSIFIERS[d.intensifier[i][j]])
        flags.append(False)
    tokens.append((POSITIVE if d.word_polarity[i][j] > 0 else NEGATIVE)[d.word[i][j]])
    flags.append(True)
    return tokens, flags


def _fillers(d: _Draws, i: int, budget: int) -> list[list[str]]:
    """Filler tokens to insert after each of the k clauses of sentence i, ``budget`` tokens in
    all: each phrase is uniform among those of at most the remaining budget (one-token phrases
    exist, so the budget is met exactly), placed after a uniform clause."""
    k = d.cues[i]
    after: list[list[str]] = [[] for _ in range(k)]
    draws = iter(d.filler[i])
    while budget > 0:
        u, v = next(draws)
        phrase = FILLERS[int(u * _FITTING[min(budget, len(_FITTING) - 1)])]
        after[int(v * k)].extend(phrase)
        budget -= len(phrase)
    return after


def _sentence(d: _Draws, i: int) -> tuple[list[str], list[bool]]:
    """Tokens and foreground flags of sentence i (step 5): clauses, fillers after them,
    connectives between them and a final "."."""
    k = d.cues[i]
    clauses = [_clause(d, i, j) for j in range(k)]
    core = sum(len(t) for t, _ in clauses) + k
    after = _fillers(d, i, max(0, d.target[i] - core))
    tokens: list[str] = []
    flags: list[bool] = []
    for j, (clause, clause_flags) in enumerate(clauses):
        end = CONNECTIVES[d.connective[i][j]] if j < k - 1 else "."
        tokens += [*clause, *after[j], end]
        flags += [*clause_flags, *[False] * len(after[j]), False]
    return tokens, flags


def _generate(
    n: int, seed_seq: np.random.SeedSequence, cfg: _Config
) -> tuple[list[list[str]], list[list[bool]], np.ndarray, dict[str, np.ndarray]]:
    """One split: tokens, foreground flags, labels (n,) and the tags of its n sentences."""
    d = _draw(np.random.Generator(np.random.PCG64(seed_seq)), n, cfg)
    tokens, flags = zip(*(_sentence(d, i) for i in range(n)), strict=True)
    noisy = np.array(d.noisy, dtype=np.int64)
    tags = {
        "cues": np.array(d.cues),
        "negated": np.array([any(row[:k]) for row, k in zip(d.negated, d.cues, strict=True)]),
        "mixed": np.array(d.mixed),
        "noisy": noisy,
    }
    return list(tokens), list(flags), np.array(d.clean) ^ noisy, tags


def _footprint(a: Mapping[str, Any]) -> tuple[int, int]:
    """Examples and bytes per example: int64 token ids and bool flags of ``length`` tokens."""
    return a["n_train"] + a["n_test"], example_bytes(a["length"], 8, a["length"])


@register_dataset("sentiment", modality="text", footprint=_footprint)
def sentiment(
    n_train: int = 2000,
    n_test: int = 500,
    length: int = 24,
    seed: int = 0,
    *,
    min_length: int = 8,
    max_length: int = 20,
    min_cues: int = 1,
    max_cues: int = 3,
    lexicon_size: int = 32,
    negation: float = 0.3,
    intensifier: float = 0.3,
    mixed: float = 0.2,
    label_noise: float = 0.0,
) -> DataSplits:
    """A generated corpus of review sentences whose label is set by sentiment cues, negation and
    mixed cues (see the module docstring for the generative model and the label rule).

    Args:
        n_train, n_test: number of train / test sentences (labels balanced).
        length: L, the padded length (>= 7 · max_cues and >= max_length).
        seed: non-negative integer; the same seed gives bit-identical tensors.
        min_length, max_length: the target sentence length in tokens is uniform on
            [min_length, max_length] (1 <= min_length <= max_length); a sentence is never
            shorter than its clauses.
        min_cues, max_cues: the number of sentiment words per sentence is uniform on
            [min_cues, max_cues] (1 <= min_cues <= max_cues; max_cues >= 3 when mixed > 0).
        lexicon_size: the sentiment words are the first ``lexicon_size`` of each of the
            lexicon's positive and negative lists (1 to the shorter list's length).
        negation: in [0, 1]: the probability that a cue is negated.
        intensifier: in [0, 1]: the probability that a cue has an intensifier.
        mixed: in [0, 1]: the probability that a sentence holds cues of both effective
            polarities (at least 3 cues, the majority deciding the label).
        label_noise: in [0, 1]: the probability that a label is flipped (tag ``noisy``).

    Returns:
        :class:`DataSplits` of ``"text"`` datasets: token ids (N, L) int64, labels (N,) int64,
        foreground (N, L) bool on sentiment words and their negators, and int64 tags ``cues``
        (k), ``negated`` (1 if any cue is negated), ``mixed`` (0/1) and ``noisy`` (1 if the
        label was flipped).
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    seed = check_int("seed", seed, 0)
    max_cues = check_int("max_cues", max_cues, 1)
    min_cues = check_int("min_cues", min_cues, 1, max_cues)
    max_length = check_int("max_length", max_length, 1)
    min_length = check_int("min_length", min_length, 1, max_length)
    length = check_int("length", length, 1)
    if length < max(max_length, CLAUSE_MAX * max_cues):
        raise ValueError(
            f"length must hold max_length and {CLAUSE_MAX} tokens per cue, "
            f"max({max_length}, {CLAUSE_MAX}·{max_cues}), got {length}"
        )
    mixed = check_float("mixed", mixed, 0.0, 1.0)
    if mixed > 0 and max_cues < 3:
        raise ValueError(f"mixed > 0 needs max_cues >= 3 (two against one), got {max_cues}")
    cfg = _Config(
        min_length=min_length,
        max_length=max_length,
        min_cues=min_cues,
        max_cues=max_cues,
        lexicon_size=check_int("lexicon_size", lexicon_size, 1, min(len(POSITIVE), len(NEGATIVE))),
        negation=check_float("negation", negation, 0.0, 1.0),
        intensifier=check_float("intensifier", intensifier, 0.0, 1.0),
        mixed=mixed,
        label_noise=check_float("label_noise", label_noise, 0.0, 1.0),
    )
    seqs = np.random.SeedSequence(seed).spawn(2)
    (train_tokens, *train), (test_tokens, *test) = (
        _generate(n, seq, cfg) for n, seq in zip((n_train, n_test), seqs, strict=True)
    )
    vocab = Vocabulary.build(train_tokens)
    return DataSplits(
        train=_text_dataset(vocab, train_tokens, *train, length, GENERATED_ANNOTATION),
        test=_text_dataset(vocab, test_tokens, *test, length, GENERATED_ANNOTATION),
    )


# ------------------------------------------------------------------------------- SST-2 files

_TREE_TOKEN = re.compile(r"[()]|[^\s()]+")
_PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
_TREE_LABELS = ("0", "1", "2", "3", "4")
_POLARITIES = ("positive", "negative")


@dataclass(frozen=True)
class _Row:
    """One labelled sentence: its tokens, their foreground flags, the binary label and, for a
    tree, the root's 0-4 label."""

    tokens: list[str]
    foreground: list[bool]
    label: int
    fine: int = -1


def parse_tree(text: str) -> tuple[int, list[tuple[str, int]]]:
    """The root label and the leaves (word, the leaf's own label) of a PTB tree with labels 0-4,
    such as ``(3 (2 It) (4 (2 's) (4 good)))``. Every node is "(" label, then either one word
    (a leaf) or one or more subtrees, then ")". Raises ValueError on anything else."""
    leaves: list[tuple[str, int]] = []
    stack: list[list[int]] = []  # open nodes: [label, words, subtrees]
    root: int | None = None
    tokens = _TREE_TOKEN.findall(text)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if root is not None:
            raise ValueError(f"text after the end of the tree: {tok!r}")
        if tok == "(":
            label = tokens[i + 1] if i + 1 < len(tokens) else ""
            if label not in _TREE_LABELS:
                raise ValueError(f"a node label must be 0-4, got {label!r}")
            if stack and stack[-1][1]:
                raise ValueError("a node holds both a word and a subtree")
            stack.append([int(label), 0, 0])
            i += 2
            continue
        if not stack:
            raise ValueError(f"{tok!r} outside any node (a tree starts with '(')")
        node = stack[-1]
        if tok == ")":
            if node[1] + node[2] == 0:
                raise ValueError("a node has no word and no subtree")
            stack.pop()
            if stack:
                stack[-1][2] += 1
            else:
                root = node[0]
        elif node[1] or node[2]:
            raise ValueError(f"word {tok!r} follows another word or a subtree in one node")
        else:
            leaves.append((_PTB_ESCAPES.get(tok, tok), node[0]))
            node[1] = 1
        i += 1
    if stack or root is None:
        raise ValueError("unbalanced parentheses: a '(' is never closed" if stack else "no tree")
    return root, leaves


def read_lexicon(path: Path) -> frozenset[str]:
    """The words of a user lexicon file: one per line, optionally ``word<TAB>positive|negative``
    (the polarity is checked, but foreground needs only the words); blank lines and lines
    starting with "#" are skipped. Words are lower-cased and must be single tokens of
    :func:`tokenize`. Raises KdscopeError naming the file and line of a bad entry."""
    words = set()
    for n, line in _lines(path, "lexicon"):
        if line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) > 2 or (len(fields) == 2 and fields[1].lower() not in _POLARITIES):
            raise KdscopeError(
                f"sst2: {path}:{n}: a lexicon line is 'word' or 'word<TAB>positive|negative', "
                f"got {line.strip()!r}"
            )
        if tokenize(fields[0]) != [fields[0].lower()]:
            raise KdscopeError(
                f"sst2: {path}:{n}: lexicon entry {fields[0]!r} is not one token "
                f"(the tokeniser gives {' '.join(tokenize(fields[0])) or 'nothing'})"
            )
        words.add(fields[0].lower())
    if not words:
        raise KdscopeError(f"sst2: {path}: the lexicon holds no words")
    return frozenset(words)


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, line) of the non-blank lines of a UTF-8 text file."""
    if not path.is_file():
        raise KdscopeError(f"sst2: {path}: no such {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KdscopeError(f"sst2: {path}: not UTF-8 text (byte {e.start})") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _detect(lines: list[tuple[int, str]]) -> str:
    """``"trees"`` if the first line starts with "(" and holds no tab, else ``"tsv"``."""
    first = lines[0][1].lstrip()
    return "trees" if first.startswith("(") and "\t" not in first else "tsv"


def _tsv_columns(path: Path, lines: list[tuple[int, str]]) -> tuple[int, int, int]:
    """(number of columns, sentence column, label column) from the header, if the first line is
    one (it has a field ``sentence``), else (2, 0, 1); the header line is then removed from
    ``lines``. GLUE's unlabelled test file is refused."""
    fields = [f.strip().lower() for f in lines[0][1].split("\t")]
    if "sentence" not in fields:
        return 2, 0, 1
    n = lines.pop(0)[0]
    if "label" not in fields:
        raise KdscopeError(
            f"sst2: {path}:{n}: the header {'<TAB>'.join(fields)!r} has no 'label' column (GLUE's "
            "test.tsv has no labels: use train.tsv and dev.tsv)"
        )
    return len(fields), fields.index("sentence"), fields.index("label")


def _read_tsv(path: Path, lines: list[tuple[int, str]], lexicon: frozenset[str]) -> list[_Row]:
    """The sentences of a TSV file, their labels (0 or 1) and as foreground the tokens found in
    ``lexicon``."""
    width, at_sentence, at_label = _tsv_columns(path, lines)
    rows = []
    for n, line in lines:
        fields = line.split("\t")
        if len(fields) != width:
            raise KdscopeError(
                f"sst2: {path}:{n}: expected {width} tab-separated columns (sentence, label), "
                f"found {len(fields)}"
            )
        label, tokens = fields[at_label].strip(), tokenize(fields[at_sentence])
        if label not in ("0", "1"):
            raise KdscopeError(f"sst2: {path}:{n}: the label must be 0 or 1, got {label!r}")
        if not tokens:
            raise KdscopeError(f"sst2: {path}:{n}: the sentence is empty")
        rows.append(_Row(tokens, [t in lexicon for t in tokens], int(label)))
    return rows


def _read_trees(path: Path, lines: list[tuple[int, str]]) -> list[_Row]:
    """The sentences of a tree file with a non-neutral root: label 0 for roots 0-1 and 1 for
    roots 3-4; foreground = the tokens of leaves whose own label is not 2."""
    rows = []
    for n, line in lines:
        try:
            root, leaves = parse_tree(line)
        except ValueError as e:
            raise KdscopeError(f"sst2: {path}:{n}: bad tree: {e}") from None
        if root == 2:
            continue
        pairs = [(t, label != 2) for word, label in leaves for t in tokenize(word)]
        rows.append(_Row([t for t, _ in pairs], [f for _, f in pairs], int(root > 2), root))
    return rows


def _read_split(
    path: Path, format: str, lexicon: frozenset[str], cap: int | None
) -> tuple[str, list[_Row]]:
    """The layout of one file and its first ``cap`` labelled sentences (all when cap is None)."""
    lines = _lines(path, "data")
    if not lines:
        raise KdscopeError(f"sst2: {path}: the file is empty")
    layout = _detect(lines) if format == "auto" else format
    rows = _read_trees(path, lines) if layout == "trees" else _read_tsv(path, lines, lexicon)
    if not rows:
        raise KdscopeError(f"sst2: {path}: no labelled sentences (neutral trees are dropped)")
    return layout, rows[:cap]


def _lexicon(lexicon: str | Path | None) -> tuple[frozenset[str], str]:
    """The lexicon's words and the annotation of datasets whose foreground it sets."""
    if lexicon is None:
        words, source = frozenset(POSITIVE + NEGATIVE), "kdscope's built-in sentiment lexicon"
    else:
        path = Path(lexicon).expanduser()
        words, source = read_lexicon(path), f"the lexicon {path}"
    return words, (
        f"foreground: words of {source} ({len(words)} words); the sentence-level TSV files "
        "label no words"
    )


def _split_dataset(
    vocab: Vocabulary, rows: list[_Row], layout: str, max_length: int, annotation: str
) -> TensorDataset:
    """A ``"text"`` dataset of sentences cut to ``max_length`` tokens, with the tags
    ``truncated`` and, for trees, ``fine_label`` (the root's 0-4 label)."""
    tags = {"truncated": np.array([len(r.tokens) > max_length for r in rows])}
    if layout == "trees":
        tags["fine_label"] = np.array([r.fine for r in rows])
    return _text_dataset(
        vocab,
        [r.tokens[:max_length] for r in rows],
        [r.foreground[:max_length] for r in rows],
        np.array([r.label for r in rows]),
        tags,
        max_length,
        annotation,
    )


@register_dataset("sst2", modality="text")
def sst2(
    root: str | Path,
    train_file: str = "train.tsv",
    test_file: str = "dev.tsv",
    format: str = "auto",
    *,
    max_length: int = 48,
    max_vocab: int = 8000,
    min_count: int = 1,
    lexicon: str | Path | None = None,
    max_train: int | None = None,
) -> DataSplits:
    """SST-2 sentiment from the user's files: GLUE's TSV files or the Stanford Sentiment
    Treebank's trees (see the module docstring for the layouts and the foreground).

    Args:
        root: the folder holding the files.
        train_file, test_file: their names in ``root`` (GLUE: ``train.tsv`` and ``dev.tsv``, as
            the test labels are not public; trees: ``train.txt`` and ``dev.txt``).
        format: ``"auto"`` (detect from each file's first line; both must agree), ``"tsv"`` or
            ``"trees"``.
        max_length: L, the padded length; longer sentences keep their first L tokens.
        max_vocab: the vocabulary's size at most, the special tokens included (>= 4).
        min_count: a training token enters the vocabulary if seen at least this often.
        lexicon: the words marked foreground in TSV files: None for the built-in lexicon, or the
            path of a file with one word per line, optionally ``word<TAB>positive|negative``.
            Tree files label their words, so it must be None for them.
        max_train: keep only the first ``max_train`` labelled training sentences (file order);
            None keeps all.

    Returns:
        :class:`DataSplits` of ``"text"`` datasets in file order: token ids (N, L) int64,
        labels (N,) int64, foreground (N, L) bool, the tag ``truncated`` (0/1) and, for trees,
        ``fine_label`` (the root's label: 0, 1, 3 or 4).
    """
    if format not in FORMATS:
        raise ValueError(f"sst2: unknown format {format!r} (known: {', '.join(FORMATS)})")
    max_length = check_int("max_length", max_length, 1)
    max_vocab = check_int("max_vocab", max_vocab, len(SPECIALS) + 1)
    min_count = check_int("min_count", min_count, 1)
    if max_train is not None:
        max_train = check_int("max_train", max_train, 1)
    base = Path(root).expanduser()
    if not base.is_dir():
        raise KdscopeError(f"sst2: root {str(base)!r} does not exist or is not a directory")
    words, annotation = _lexicon(lexicon)
    train_layout, train_rows = _read_split(base / train_file, format, words, max_train)
    test_layout, test_rows = _read_split(base / test_file, format, words, None)
    if train_layout != test_layout:
        raise KdscopeError(
            f"sst2: {train_file} holds {train_layout} and {test_file} {test_layout}; "
            "both splits must have one format"
        )
    if train_layout == "trees":
        if lexicon is not None:
            raise ValueError("lexicon is for TSV files: tree files label their own words")
        annotation = TREES_ANNOTATION
    vocab = Vocabulary.build(
        (r.tokens[:max_length] for r in train_rows), max_size=max_vocab, min_count=min_count
    )
    return DataSplits(
        train=_split_dataset(vocab, train_rows, train_layout, max_length, annotation),
        test=_split_dataset(vocab, test_rows, test_layout, max_length, annotation),
    )
