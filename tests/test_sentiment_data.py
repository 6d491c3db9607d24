"""Sentiment datasets: the generated ``sentiment`` corpus (label rule, foreground, tags,
determinism) and the ``sst2`` loader on tiny TSV, tree and lexicon files written here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from kdscope import KdscopeError
from kdscope.datasets import DATASETS, DataSplits, TensorDataset, build
from kdscope.datasets.sentiment import (
    CONNECTIVES,
    DETERMINERS,
    FILLERS,
    GENERATED_ANNOTATION,
    NOUNS,
    TREES_ANNOTATION,
    VERBS,
    parse_tree,
)
from kdscope.datasets.sentiment_lexicon import INTENSIFIERS, NEGATIVE, NEGATORS, POSITIVE
from kdscope.datasets.text import PAD_ID, SPECIALS, UNK_ID, tokenize

POS, NEG = set(POSITIVE), set(NEGATIVE)


def _one_line(e: pytest.ExceptionInfo[KdscopeError], *words: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def _decode(data: TensorDataset, i: int) -> list[str]:
    """The tokens of example i, padding removed."""
    return [data.vocab[j] for j in data.inputs[i].tolist() if j != PAD_ID]


def _polarity_sum(tokens: list[str]) -> int:
    """The label rule, recomputed from the tokens: Σ word polarity, times −1 when a negator
    precedes the word directly or across one intensifier."""
    total = 0
    for i, t in enumerate(tokens):
        if t in POS or t in NEG:
            before = tokens[max(0, i - 2) : i]
            if before and before[-1] in INTENSIFIERS:
                before = before[:-1]
            negated = bool(before) and before[-1] in NEGATORS
            total += (1 if t in POS else -1) * (-1 if negated else 1)
    return total


# ------------------------------------------------------------------------------------ lexicon


def test_lexicon_lists_are_single_disjoint_tokens() -> None:
    lists = [POSITIVE, NEGATIVE, NEGATORS, INTENSIFIERS]
    assert len(POSITIVE) >= 150 and len(NEGATIVE) >= 150
    for words in lists:
        assert len(set(words)) == len(words)
        assert all(tokenize(w) == [w] for w in words)
    every = [w for words in lists for w in words]
    assert len(set(every)) == len(every)
    neutral = {*DETERMINERS, *NOUNS, *VERBS, *CONNECTIVES, *(w for f in FILLERS for w in f)}
    assert not neutral & set(every)


# ---------------------------------------------------------------------------- generated corpus


@pytest.fixture(scope="module")
def corpus() -> DataSplits:
    return build("sentiment", n_train=2000, n_test=500, seed=0)


@pytest.fixture(scope="module")
def noisy_corpus() -> DataSplits:
    return build("sentiment", n_train=4000, n_test=100, seed=3, label_noise=0.1)


def test_generated_contract(corpus: DataSplits) -> None:
    assert "sentiment" in DATASETS
    for split, n in ((corpus.train, 2000), (corpus.test, 500)):
        assert split.inputs.shape == (n, 24) and split.inputs.dtype == torch.int64
        assert split.foreground.shape == (n, 24) and split.foreground.dtype == torch.bool
        assert split.labels.dtype == torch.int64 and int(split.labels.sum()) == n // 2
        assert split.modality == "text" and split.num_classes == 2
        assert split.class_names == ["negative", "positive"]
        assert split.annotation == GENERATED_ANNOTATION
        assert set(split.tags) == {"cues", "negated", "mixed", "noisy"}
        assert split.vocab == corpus.train.vocab and split.vocab[:3] == SPECIALS
    assert not (corpus.train.inputs == UNK_ID).any()  # the vocabulary is the train split's


def test_generated_is_deterministic() -> None:
    a, b = (build("sentiment", n_train=300, n_test=100, seed=5) for _ in range(2))
    c = build("sentiment", n_train=300, n_test=100, seed=6)
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.foreground, y.foreground) and x.vocab == y.vocab
        assert all(torch.equal(x.tags[k], y.tags[k]) for k in x.tags)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.test.inputs, a.train.inputs[:100])  # separate streams


def test_labels_follow_the_rule(corpus: DataSplits, noisy_corpus: DataSplits) -> None:
    for split in (corpus.train, corpus.test, noisy_corpus.train):
        sums = torch.tensor([_polarity_sum(_decode(split, i)) for i in range(len(split))])
        assert (sums != 0).all()  # never a tie
        assert torch.equal(split.labels, (sums > 0).long() ^ split.tags["noisy"])
    assert int(corpus.train.tags["noisy"].sum()) == 0


def test_foreground_is_exactly_cues_and_negators(corpus: DataSplits) -> None:
    for split in (corpus.train, corpus.test):
        for i in range(len(split)):
            ids = split.inputs[i]
            tokens = [split.vocab[j] for j in ids.tolist()]
            expected = [t in POS or t in NEG or t in NEGATORS for t in tokens]
            assert split.foreground[i].tolist() == expected
            real = _decode(split, i)
            assert int(split.tags["cues"][i]) == sum(t in POS or t in NEG for t in real)
            assert int(split.tags["negated"][i]) == any(t in NEGATORS for t in real)
            assert real[-1] == "." and PAD_ID not in ids[: len(real)].tolist()
        assert not (split.foreground & (split.inputs == PAD_ID)).any()


def test_mixed_tag_means_both_effective_polarities(corpus: DataSplits) -> None:
    split = corpus.train
    for i in range(200):
        tokens = _decode(split, i)
        signs = {
            _polarity_sum(tokens[: j + 1]) - _polarity_sum(tokens[:j]) for j in range(len(tokens))
        }
        assert int(split.tags["mixed"][i]) == ({1, -1} <= signs)


def test_lexicon_size_limits_the_cue_words(corpus: DataSplits) -> None:
    cue_words = {t for t in corpus.train.vocab if t in POS or t in NEG}
    assert cue_words == {*POSITIVE[:32], *NEGATIVE[:32]}  # the default 32, all seen
    small = build("sentiment", n_train=200, n_test=10, lexicon_size=3)
    assert {t for t in small.train.vocab if t in POS or t in NEG} == {
        *POSITIVE[:3],
        *NEGATIVE[:3],
    }


def test_sentence_lengths() -> None:
    d = build("sentiment", n_train=400, n_test=10, seed=1, min_length=10, max_length=14)
    lengths = (d.train.inputs != PAD_ID).sum(1)
    cues = d.train.tags["cues"]
    assert (lengths >= 10).all() and (lengths <= 24).all()
    assert (lengths[cues == 1] <= 14).all()  # one clause (≤ 7 tokens) always fits the target
    assert set(lengths[cues == 1].tolist()) == set(range(10, 15))
    exact = build("sentiment", n_train=200, n_test=10, min_length=21, max_length=21)
    assert ((exact.train.inputs != PAD_ID).sum(1) == 21).all()


def test_tag_frequencies_match_probabilities(noisy_corpus: DataSplits) -> None:
    split = noisy_corpus.train
    tags = {k: v.float() for k, v in split.tags.items()}
    assert abs(tags["mixed"].mean() - 0.2) < 0.03
    assert abs(tags["noisy"].mean() - 0.1) < 0.02
    assert (tags["cues"][tags["mixed"] == 1] == 3).all()
    plain = tags["cues"][tags["mixed"] == 0]
    assert all(abs((plain == k).float().mean() - 1 / 3) < 0.03 for k in (1, 2, 3))
    rows = [_decode(split, i) for i in range(len(split))]
    n_cues = tags["cues"].sum()
    negators = sum(t in NEGATORS for r in rows for t in r)
    intensifiers = sum(t in INTENSIFIERS for r in rows for t in r)
    assert abs(negators / n_cues - 0.3) < 0.02 and abs(intensifiers / n_cues - 0.3) < 0.02
    expected_negated = (1 - 0.7 ** tags["cues"]).mean()
    assert abs(tags["negated"].mean() - expected_negated) < 0.03


def _count_rule_accuracy(split: TensorDataset) -> float:
    """Accuracy of 'positive iff more positive than negative words', negators ignored."""
    pos = torch.tensor([t in POS for t in split.vocab])
    neg = torch.tensor([t in NEG for t in split.vocab])
    score = pos[split.inputs].sum(1) - neg[split.inputs].sum(1)
    return float(((score > 0).long() == split.labels).float().mean())


def _naive_bayes_accuracy(d: DataSplits) -> float:
    """Test accuracy of a multinomial naive Bayes bag-of-words classifier fitted on train."""
    bow = [
        torch.zeros(len(s), len(d.train.vocab)).scatter_add_(
            1, s.inputs, torch.ones(s.inputs.shape)
        )
        for s in (d.train, d.test)
    ]
    bow[0][:, PAD_ID], bow[1][:, PAD_ID] = 0, 0
    y = d.train.labels
    c1, c0 = bow[0][y == 1].sum(0) + 1, bow[0][y == 0].sum(0) + 1
    weight = (c1 / c1.sum()).log() - (c0 / c0.sum()).log()
    return float((((bow[1] @ weight) > 0).long() == d.test.labels).float().mean())


def test_negation_defeats_word_counts(corpus: DataSplits) -> None:
    assert 0.6 < _count_rule_accuracy(corpus.train) < 0.85
    assert 0.6 < _naive_bayes_accuracy(corpus) < 0.85
    plain = build("sentiment", n_train=2000, n_test=500, negation=0.0)
    assert _count_rule_accuracy(plain.train) == 1.0  # mixed sentences alone: counts are exact
    assert _naive_bayes_accuracy(plain) > 0.97


def test_vocabulary_from_train_only(corpus: DataSplits) -> None:
    small = build("sentiment", n_train=10, n_test=500, seed=0)  # the same test stream
    index = {t: i for i, t in enumerate(small.train.vocab)}
    assert not (corpus.test.inputs == UNK_ID).any()
    unknown = 0
    for i in range(len(small.test)):
        tokens = _decode(corpus.test, i)
        expected = [index.get(t, UNK_ID) for t in tokens]
        assert small.test.inputs[i, : len(tokens)].tolist() == expected
        assert small.test.foreground[i].tolist() == corpus.test.foreground[i].tolist()
        unknown += expected.count(UNK_ID)
    assert unknown > 0


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    build("sentiment", n_train=2000, n_test=500, seed=11)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"negation": 1.5}, "negation"),
        ({"intensifier": -0.1}, "intensifier"),
        ({"label_noise": float("nan")}, "label_noise"),
        ({"min_cues": 3, "max_cues": 2, "mixed": 0.0}, "min_cues"),
        ({"max_cues": 2}, "max_cues"),  # mixed > 0 needs three cues
        ({"length": 20}, "length"),  # 3 cues need up to 21 tokens
        ({"min_length": 30}, "min_length"),
        ({"lexicon_size": 0}, "lexicon_size"),
        ({"n_train": 0}, "n_train"),
        ({"seed": True}, "seed"),
        ({"colour": 1}, "colour"),
    ],
)
def test_generated_parameters_are_validated(params: dict[str, object], name: str) -> None:
    with pytest.raises(KdscopeError) as e:
        build("sentiment", **{"n_train": 20, "n_test": 20, **params})
    _one_line(e, "'sentiment'", name)


# ------------------------------------------------------------------------------------ SST-2

TRAIN_TSV = (
    "sentence\tlabel\n"
    "it 's a charming and often affecting journey . \t1\n"
    "the plot is dull and the acting is not good . \t0\n"
    "\n"
    "a moving film \t1\n"
)
DEV_TSV = "sentence\tlabel\na dull , pointless zombie film \t0\n"
# the train vocabulary: the specials, then by decreasing count, ties alphabetical
TSV_VOCAB = (
    *SPECIALS,
    *(".", "a", "and", "is", "the"),
    *("'s", "acting", "affecting", "charming", "dull", "film", "good", "it", "journey"),
    *("moving", "not", "often", "plot"),
)

TRAIN_TREES = (
    "(3 (2 It) (4 (2 's) (3 (2 a) (4 good))))\n"
    "(2 (2 The) (2 film))\n"
    "(1 (2 (2 A) (1 dull)) (2 (2 -LRB-) (2 mostly) (2 -RRB-)) (2 film))\n"
    "(0 (2 It) (1 (1 (2 is) (0 awful)) (2 .)))\n"
    "(4 (2 a) (4 well-made) (2 film))\n"
)
DEV_TREES = "(2 (2 so) (2 so))\n(1 (2 a) (1 (2 zombie) (0 mess)))\n"
TREE_VOCAB = (
    *SPECIALS,
    *("a", "film", "it"),
    *("'s", "(", ")", "-", ".", "awful", "dull", "good", "is", "made", "mostly", "well"),
)


def _write(root: Path, **files: str) -> Path:
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return root


def _ids(vocab: tuple[str, ...], *tokens: str) -> list[int]:
    return [vocab.index(t) for t in tokens]


def test_tsv_encoding_and_builtin_lexicon(tmp_path: Path) -> None:
    root = _write(tmp_path / "glue", train_tsv=TRAIN_TSV, dev_tsv=DEV_TSV)
    d = build("sst2", root=str(root), max_length=12)
    assert d.train.vocab == TSV_VOCAB
    v = TSV_VOCAB
    expected = [
        _ids(v, "it", "'s", "a", "charming", "and", "often", "affecting", "journey", "."),
        _ids(v, "the", "plot", "is", "dull", "and", "the", "acting", "is", "not", "good", "."),
        _ids(v, "a", "moving", "film"),
    ]
    assert d.train.inputs.tolist() == [row + [PAD_ID] * (12 - len(row)) for row in expected]
    assert d.train.labels.tolist() == [1, 0, 1]
    fg = d.train.foreground.tolist()
    assert [i for i, f in enumerate(fg[0]) if f] == [3]  # charming ("affecting" is not listed)
    assert [i for i, f in enumerate(fg[1]) if f] == [3, 9]  # dull, good (negators unmarked)
    assert [i for i, f in enumerate(fg[2]) if f] == [1]  # moving
    # test words outside the train vocabulary are <unk>, but a lexicon word stays foreground
    assert d.test.inputs[0, :7].tolist() == [4, 12, UNK_ID, UNK_ID, UNK_ID, 13, PAD_ID]
    assert d.test.foreground[0, :7].tolist() == [False, True, False, True, False, False, False]
    assert d.train.tags["truncated"].tolist() == [0, 0, 0]
    assert "built-in sentiment lexicon" in d.train.annotation and "fine_label" not in d.train.tags
    assert d.test.vocab == d.train.vocab and d.train.modality == "text"


def test_builtin_lexicon_marks_exactly_its_words(tmp_path: Path) -> None:
    words = ["not", "good", "the", "awful", "film", "fun", "kind", "so", "never", "boring"]
    lines = "".join(f"{' '.join(words[i:] + words[:i])}\t{i % 2}\n" for i in range(10))
    d = build("sst2", root=str(_write(tmp_path, train_tsv=lines, dev_tsv=lines)))
    for i in range(10):
        tokens = _decode(d.train, i)
        assert d.train.foreground[i, : len(tokens)].tolist() == [t in POS | NEG for t in tokens]
    assert int(d.train.foreground.sum()) == 10 * 4  # good, awful, fun, boring


def test_user_lexicon(tmp_path: Path) -> None:
    root = _write(tmp_path / "glue", train_tsv=TRAIN_TSV, dev_tsv=DEV_TSV)
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("# my words\nZombie\tnegative\njourney\n\nfilm\tpositive\n")
    d = build("sst2", root=root, lexicon=str(lexicon))
    flagged = [[j for j, f in enumerate(row) if f] for row in d.train.foreground.tolist()]
    assert flagged == [[7], [], [2]]  # journey; nothing; film
    assert d.test.foreground[0, :7].tolist() == [False] * 4 + [True, True, False]  # zombie film
    assert str(lexicon) in d.train.annotation and "(3 words)" in d.train.annotation


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("good\nwell-made\n", 2, ["not one token", "well - made"]),
        ("good\tgreat\n", 1, ["positive|negative"]),
        ("a\tpositive\tx\n", 1, ["positive|negative"]),
        ("# nothing\n\n", None, ["no words"]),
    ],
)
def test_bad_lexicon(tmp_path: Path, text: str, line: int | None, words: list[str]) -> None:
    root = _write(tmp_path / "glue", train_tsv=TRAIN_TSV, dev_tsv=DEV_TSV)
    (tmp_path / "lex.txt").write_text(text)
    with pytest.raises(KdscopeError) as e:
        build("sst2", root=root, lexicon=tmp_path / "lex.txt")
    where = f"lex.txt:{line}:" if line else "lex.txt:"
    _one_line(e, where, *words)


def test_tree_encoding(tmp_path: Path) -> None:
    root = _write(tmp_path, train_txt=TRAIN_TREES, dev_txt=DEV_TREES)
    d = build("sst2", root=root, train_file="train.txt", test_file="dev.txt")
    assert d.train.vocab == TREE_VOCAB and d.train.annotation == TREES_ANNOTATION
    v = TREE_VOCAB
    rows = [
        (("it", "'s", "a", "good"), 1, 3, [3]),
        (("a", "dull", "(", "mostly", ")", "film"), 0, 1, [1]),
        (("it", "is", "awful", "."), 0, 0, [2]),
        (("a", "well", "-", "made", "film"), 1, 4, [1, 2, 3]),  # one leaf, three tokens
    ]  # the neutral-root tree "The film" is dropped
    assert len(d.train) == len(rows)
    for i, (tokens, label, fine, flagged) in enumerate(rows):
        assert d.train.inputs[i, : len(tokens) + 1].tolist() == [*_ids(v, *tokens), PAD_ID]
        assert int(d.train.labels[i]) == label and int(d.train.tags["fine_label"][i]) == fine
        assert [j for j, f in enumerate(d.train.foreground[i].tolist()) if f] == flagged
    assert len(d.test) == 1 and d.test.labels.tolist() == [0]
    assert d.test.inputs[0, :4].tolist() == [3, UNK_ID, UNK_ID, PAD_ID]  # a zombie mess
    assert d.test.foreground[0, :4].tolist() == [False, False, True, False]


def test_parse_tree() -> None:
    root, leaves = parse_tree("(3 (2 It) (4 (2 's) (3 (2 a) (4 good))))")
    assert root == 3 and leaves == [("It", 2), ("'s", 2), ("a", 2), ("good", 4)]
    assert parse_tree("(1 (2 -LRB-) (0 bad))") == (1, [("(", 2), ("bad", 0)])
    for bad, words in [
        ("(5 a)", "0-4"),
        ("(3 (2 a)", "never closed"),
        ("(3 (2 a)))", "after the end"),
        ("(3 a (2 b))", "both a word and a subtree"),
        ("(3 a b)", "follows another word"),
        ("(3)", "no word and no subtree"),
        ("a", "outside any node"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_tree(bad)


def test_truncation_cap_and_vocabulary_limits(tmp_path: Path) -> None:
    root = _write(tmp_path, train_tsv=TRAIN_TSV, dev_tsv=DEV_TSV)
    d = build("sst2", root=root, max_length=4)
    assert d.train.inputs.shape == (3, 4) and d.train.tags["truncated"].tolist() == [1, 1, 0]
    assert _decode(d.train, 1) == ["the", "plot", "is", "dull"]
    assert d.train.foreground[1].tolist() == [False, False, False, True]
    assert "good" not in d.train.vocab  # the vocabulary holds the tokens kept
    assert len(build("sst2", root=root, max_train=2).train) == 2
    assert build("sst2", root=root, max_vocab=6).train.vocab == TSV_VOCAB[:6]
    assert build("sst2", root=root, min_count=2).train.vocab == TSV_VOCAB[:8]


def test_tsv_header_variants(tmp_path: Path) -> None:
    plain = "".join(line + "\n" for line in TRAIN_TSV.splitlines()[1:])
    swapped = "label\tsentence\n1\ta moving film\n"
    d = build("sst2", root=_write(tmp_path, train_tsv=plain, dev_tsv=swapped), format="tsv")
    assert d.train.labels.tolist() == [1, 0, 1] and d.train.vocab == TSV_VOCAB
    assert _decode(d.test, 0) == ["a", "moving", "film"]


@pytest.mark.parametrize(
    ("train", "dev", "words"),
    [
        (TRAIN_TSV, "index\tsentence\n0\ta film\n", ["dev.tsv:1:", "no 'label' column", "GLUE"]),
        (TRAIN_TSV + "bad line\n", DEV_TSV, ["train.tsv:6:", "2 tab-separated columns"]),
        (TRAIN_TSV, DEV_TSV + "a film\t2\n", ["dev.tsv:3:", "0 or 1", "'2'"]),
        (TRAIN_TSV, DEV_TSV + " \t1\n", ["dev.tsv:3:", "empty"]),
        ("\n\n", DEV_TSV, ["train.tsv:", "empty"]),
        ("sentence\tlabel\n", DEV_TSV, ["train.tsv:", "no labelled sentences"]),
        (TRAIN_TSV, TRAIN_TREES, ["train.tsv holds tsv", "dev.tsv trees"]),
        (TRAIN_TREES + "(3 (2 a) (4 good)\n", DEV_TSV, ["train.tsv:6:", "bad tree"]),
        ("(2 (2 a) (2 film))\n", DEV_TREES, ["train.tsv:", "no labelled sentences"]),
    ],
)
def test_bad_files(tmp_path: Path, train: str, dev: str, words: list[str]) -> None:
    root = _write(tmp_path, train_tsv=train, dev_tsv=dev)
    with pytest.raises(KdscopeError) as e:
        build("sst2", root=root)
    _one_line(e, *words)


def test_missing_paths_and_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(KdscopeError) as e:
        build("sst2", root=tmp_path / "nowhere")
    _one_line(e, "nowhere", "not a directory")
    root = _write(tmp_path / "glue", train_tsv=TRAIN_TSV)
    with pytest.raises(KdscopeError) as e:
        build("sst2", root=root)
    _one_line(e, "dev.tsv", "no such data file")
    with pytest.raises(KdscopeError) as e:
        build("sst2", root=root, test_file="train.tsv", lexicon=tmp_path / "none.txt")
    _one_line(e, "none.txt", "no such lexicon file")
    trees = _write(tmp_path / "trees", train_txt=TRAIN_TREES, dev_txt=DEV_TREES)
    (tmp_path / "lex.txt").write_text("good\n")
    for params, name in [
        ({"format": "xml"}, "format"),
        ({"max_length": 0}, "max_length"),
        ({"max_vocab": 3}, "max_vocab"),
        ({"min_count": 0}, "min_count"),
        ({"max_train": 0}, "max_train"),
        ({"lexicon": tmp_path / "lex.txt"}, "lexicon"),  # trees label their own words
    ]:
        with pytest.raises(KdscopeError) as e:
            build("sst2", root=trees, train_file="train.txt", test_file="dev.txt", **params)
        _one_line(e, "'sst2'", name)
