"""The extractive QA datasets: ``squad`` on tiny SQuAD v1.1 / v2.0 files written here (row
layout, span labels, evidence, window cut, skips, errors) and the generated ``qa`` task (answers
re-derived by an independent solver, evidence recomputed from the tokens, distractors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kdscope import KdscopeError
from kdscope.datasets import DATASETS, TensorDataset, build
from kdscope.datasets.qa import (
    FILLERS,
    QUESTION_TYPES,
    SquadStats,
    content_words,
    qa,
    read_squad,
    squad,
)
from kdscope.datasets.text import PAD_ID, SEP_ID, SPECIALS, UNK_ID, Vocabulary, span_of, tokenize

PARIS = "Paris is the capital of France. The Eiffel Tower was built in 1889 for the World's Fair."
RIVER = "The Seine flows through Paris. Paris has many bridges over the Seine river."
LONG = (
    " ".join(f"w{i}" for i in range(30))
    + " the answer is here "
    + " ".join(f"v{i}" for i in range(30))
)  # 64 tokens, the answer "here" is token 33
LOUVRE = "The Louvre is a museum in Paris."


def _qa(question: str, context: str, answer: str, at: int | None = None) -> dict[str, Any]:
    start = context.index(answer) if at is None else at
    answers = [{"text": answer, "answer_start": start}, {"text": "ignored", "answer_start": 0}]
    return {"id": question, "question": question, "answers": answers}


def _impossible(question: str) -> dict[str, Any]:
    plausible = [{"text": "Paris", "answer_start": 0}]
    return {"id": question, "question": question, "answers": [], "plausible_answers": plausible,
            "is_impossible": True}  # fmt: skip


def _write(
    path: Path, paragraphs: list[tuple[str, list[dict[str, Any]]]], version: str = "1.1"
) -> None:
    article = {"title": "t", "paragraphs": [{"context": c, "qas": q} for c, q in paragraphs]}
    path.write_text(json.dumps({"version": version, "data": [article]}))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """v1.1 train (3 questions) and dev (1 question with words unseen in train) files, and a
    v2.0 train file with an unanswerable, an unaligned and a too-long answer."""
    train = [
        (
            PARIS,
            [
                _qa("When was the Eiffel Tower built?", PARIS, "1889"),
                _qa("What is the capital of France?", PARIS, "Paris"),
            ],
        ),
        (RIVER, [_qa("Which river flows through Paris?", RIVER, "The Seine")]),
    ]
    _write(tmp_path / "train-v1.1.json", train)
    _write(tmp_path / "dev-v1.1.json", [(LOUVRE, [_qa("What is the Louvre?", LOUVRE, "a museum")])])
    v2 = [
        *train,
        (
            PARIS,
            [
                _impossible("What is the capital of Spain?"),
                _qa("Where is the tower?", PARIS, "Tower", at=3),  # the context has "is t" there
                _qa("What was built?", PARIS, "The Eiffel Tower was built in 1889"),
            ],
        ),
    ]
    _write(tmp_path / "train-v2.0.json", v2, version="v2.0")
    return tmp_path


def _decode(ds: TensorDataset, i: int) -> list[str]:
    return [ds.vocab[t] for t in ds.inputs[i].tolist()]


def _find(ds: TensorDataset, question: str) -> int:
    """The row whose question is ``question``."""
    q = tokenize(question)
    (i,) = [i for i in range(len(ds)) if _decode(ds, i)[: len(q) + 1] == [*q, "<sep>"]]
    return i


def _answer(ds: TensorDataset, i: int) -> list[str]:
    start, end = span_of(ds.labels[i], ds.inputs.shape[1])
    return _decode(ds, i)[int(start) : int(end) + 1]


def _flagged(ds: TensorDataset, i: int) -> list[str]:
    return [t for t, f in zip(_decode(ds, i), ds.foreground[i].tolist(), strict=True) if f]


# ------------------------------------------------------------------------------------- squad


def test_squad_row_layout_label_and_evidence(root: Path) -> None:
    assert "squad" in DATASETS
    d = build("squad", root=str(root), question_length=8, context_length=24)
    length = 8 + 1 + 24
    train = d.train
    assert len(train) == 3 and len(d.test) == 1 and d.num_classes == length * length
    assert train.inputs.shape == (3, length) and train.inputs.dtype == torch.int64
    assert train.modality == "text" and train.task == "span" and train.class_names == []
    assert train.vocab[:3] == SPECIALS
    assert "string match" in train.annotation
    i = _find(train, "When was the Eiffel Tower built?")
    question = ["when", "was", "the", "eiffel", "tower", "built", "?"]
    row = [*question, "<sep>", *tokenize(PARIS)]
    row += ["<pad>"] * (length - len(row))
    assert _decode(train, i) == row
    assert train.inputs[i].tolist() == Vocabulary(train.vocab).encode(row)
    assert train.inputs[i, 7] == SEP_ID and train.inputs[i, -1] == PAD_ID
    assert train.tags["context_start"][i] == 8 and train.tags["answer_length"][i] == 1
    start, end = span_of(train.labels[i], length)
    assert (int(start), int(end)) == (8 + 13, 8 + 13) and _answer(train, i) == ["1889"]
    assert _flagged(train, i) == ["eiffel", "tower", "built", "1889"]  # evidence + answer
    j = _find(train, "Which river flows through Paris?")
    assert _answer(train, j) == ["the", "seine"] and train.tags["answer_length"][j] == 2
    # the answer, then "flows", "paris" twice (string match) and "river"; the second "seine" is
    # not a question word
    assert _flagged(train, j) == ["the", "seine", "flows", "paris", "paris", "river"]
    for ds in (train, d.test):  # never a question token, <sep> or padding
        cs = ds.tags["context_start"]
        before = torch.arange(length)[None, :] < cs[:, None]
        assert not (ds.foreground & (before | (ds.inputs == PAD_ID))).any()
        assert (ds.inputs[torch.arange(len(ds)), cs - 1] == SEP_ID).all()


def test_squad_test_words_outside_the_train_vocabulary_are_unknown(root: Path) -> None:
    d = squad(root, question_length=6, context_length=10)
    assert "louvre" not in d.train.vocab and d.test.vocab == d.train.vocab
    row = ["what", "is", "the", "<unk>", "?", "<sep>", "the", "<unk>", "is", "<unk>", "<unk>"]
    row += ["in", "paris", ".", "<pad>", "<pad>", "<pad>"]
    assert _decode(d.test, 0) == row and (d.test.inputs[0] == UNK_ID).sum() == 4
    assert _answer(d.test, 0) == ["<unk>", "<unk>"]  # "a museum"
    assert _flagged(d.test, 0) == ["<unk>", "<unk>", "<unk>"]  # louvre (evidence), a museum
    # counts over the train rows: "the" 10, "." 6, "paris" 5, then words seen 3 times or fewer
    assert squad(root, max_vocab=5).train.vocab == (*SPECIALS, "the", ".")
    assert squad(root, min_count=4).train.vocab == (*SPECIALS, "the", ".", "paris")


def test_squad_truncates_questions_and_caps_splits(root: Path) -> None:
    d = squad(root, question_length=3, context_length=24, max_train=2, max_test=1)
    assert len(d.train) == 2 and len(d.test) == 1
    assert (d.train.tags["context_start"] == 4).all()
    questions = {tuple(_decode(d.train, i)[:3]) for i in range(2)}
    assert questions <= {("when", "was", "the"), ("what", "is", "the"), ("which", "river", "flows")}


def test_squad_window_holds_the_answer_at_a_seeded_offset(tmp_path: Path) -> None:
    _write(tmp_path / "train.json", [(LONG, [_qa("Where is the answer?", LONG, "here")])])
    tokens = tokenize(LONG)
    assert len(tokens) == 64 and tokens[33] == "here"
    offsets = set()
    for seed in range(12):
        d = squad(tmp_path, "train.json", "train.json", context_length=8, seed=seed)
        assert len(d.train) == 1 and d.train.inputs.shape == (1, 16 + 1 + 8)
        context = _decode(d.train, 0)[6:14]  # after "where is the answer ? <sep>"
        offset = tokens.index(context[0])
        assert context == tokens[offset : offset + 8] and 26 <= offset <= 33
        assert _answer(d.train, 0) == ["here"]
        # the evidence "answer" (token 31) is flagged when the window holds it
        assert _flagged(d.train, 0) == (["answer", "here"] if offset <= 31 else ["here"])
        offsets.add(offset)
        again = squad(tmp_path, "train.json", "train.json", context_length=8, seed=seed)
        assert torch.equal(again.train.inputs, d.train.inputs)
    assert len(offsets) > 3


def test_squad_v2_skips_and_counts(root: Path) -> None:
    records, stats = read_squad(root / "train-v2.0.json", context_length=6)
    assert stats == SquadStats(questions=6, unanswerable=1, unaligned=1, too_long=1)
    assert stats.kept == 3 and len(records) == 3
    assert "kept 3 of 6" in str(stats) and "1 unanswerable" in str(stats)
    with pytest.warns(UserWarning, match=r"train-v2\.0\.json: kept 3 of 6 questions"):
        d = squad(root, train_file="train-v2.0.json", context_length=6)
    assert len(d.train) == 3
    records, stats = read_squad(root / "train-v2.0.json", context_length=7)
    assert stats.too_long == 0 and stats.kept == 4
    (record,) = [r for r in records if r.question[:2] == ("what", "was")]
    assert record.context[record.start : record.end + 1] == tuple(
        tokenize("The Eiffel Tower was built in 1889")
    )


def test_squad_answer_maps_to_the_tokens_it_overlaps(tmp_path: Path) -> None:
    path = tmp_path / "part.json"
    items = [_qa("q", PARIS, "iffel Tow"), _qa("q", PARIS, "1889 "), _qa("q", PARIS, " ", at=5)]
    _write(path, [(PARIS, items)])
    records, stats = read_squad(path, context_length=64)
    assert [(r.start, r.end) for r in records] == [(8, 9), (13, 13)]  # eiffel tower, 1889
    assert stats.unaligned == 1  # a blank answer overlaps no token


def test_content_words() -> None:
    assert content_words(tokenize("What is the name of Paris's river, in 1900?")) == {
        "name",
        "paris's",
        "river",
        "1900",
    }


def _one_line(e: pytest.ExceptionInfo[KdscopeError], *words: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["no such file"]),
        ("{not json", ["not valid JSON", "line 1"]),
        ('{"version": "1.1"}', ["the top level has no 'data'"]),
        ('{"data": [{"title": "x"}]}', ["data[0] has no 'paragraphs'"]),
        ('{"data": [{"paragraphs": [{"qas": []}]}]}', ["data[0].paragraphs[0] has no 'context'"]),
        ('{"data": [{"paragraphs": [{"context": "a", "qas": [{"question": "q"}]}]}]}',
         ["data[0].paragraphs[0].qas[0] has no 'answers'"]),
        ('{"data": [{"paragraphs": [{"context": "a", "qas": [{"question": "q", "answers": '
         '[{"text": "a", "answer_start": "0"}]}]}]}]}',
         ["qas[0].answers[0]['answer_start'] is not a int"]),
        ('{"data": [7]}', ["data[0] is not a JSON object"]),
        ('{"data": []}', ["no usable question"]),
    ],
)  # fmt: skip
def test_squad_bad_files(tmp_path: Path, content: str | None, words: list[str]) -> None:
    path = tmp_path / "train-v1.1.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KdscopeError) as e:
        build("squad", root=str(tmp_path))
    _one_line(e, "squad:", str(path), *words)


def test_squad_bad_parameters(root: Path) -> None:
    with pytest.raises(KdscopeError) as e:
        build("squad", root=str(root / "missing"))
    _one_line(e, "missing", "not a directory")
    for name, value in (("context_length", 0), ("question_length", 0), ("max_train", 0),
                        ("max_vocab", 2), ("min_count", 0), ("seed", -1)):  # fmt: skip
        with pytest.raises(KdscopeError) as e:
            build("squad", root=str(root), **{name: value})
        _one_line(e, "'squad'", name)


# ---------------------------------------------------------------------------- generated qa

TEMPLATE_WORDS = {"where", "is", "the", "who", "owns", "which", "in", "does", "own", "?"}


def _sentences(context: list[str]) -> list[tuple[int, list[str]]]:
    """(first position, tokens) of every sentence of a context (each ends with ".")."""
    out, first = [], 0
    for k, t in enumerate(context):
        if t == ".":
            out.append((first, context[first : k + 1]))
            first = k + 1
    assert first == len(context)
    return out


def _solve(question: list[str], sentence: list[str]) -> tuple[int, int] | None:
    """The answer's (first, last) position in ``sentence`` if it answers ``question``, by the
    templates written out independently of the generator."""
    q, s = question, sentence
    if q[0] == "where" and s[:5] == ["the", *q[3:5], "is", "in"]:
        return 5, len(s) - 2
    if q[0] == "who" and s[:5] == ["the", *q[3:5], "belongs", "to"]:
        return 5, 5
    if q[0] == "which" and q[2] == "is" and s[2:] == [q[1], "is", "in", *q[4:-1], "."]:
        return 1, 1
    if q[0] == "which" and q[2] == "does" and s[2:] == [q[1], "belongs", "to", q[3], "."]:
        return 1, 1
    return None


def _examples(ds: TensorDataset) -> list[tuple[list[str], list[str], int]]:
    """(question, context, context_start) of every row, decoded."""
    out = []
    for i in range(len(ds)):
        tokens = [t for t in _decode(ds, i) if t != "<pad>"]
        sep = tokens.index("<sep>")
        assert int(ds.tags["context_start"][i]) == sep + 1
        out.append((tokens[:sep], tokens[sep + 1 :], sep + 1))
    return out


@pytest.fixture(scope="module")
def generated() -> TensorDataset:
    return build("qa", n_train=400, n_test=200, seed=1).train


def test_qa_layout_and_metadata(generated: TensorDataset) -> None:
    ds, length = generated, 8 + 1 + 40
    assert "qa" in DATASETS and ds.modality == "text" and ds.task == "span" and not ds.class_names
    assert ds.inputs.shape == (400, length) and ds.num_classes == length * length
    assert ds.vocab[:3] == SPECIALS and "<unk>" not in _decode(ds, 0)
    assert "marked exactly by the generator" in ds.annotation
    assert set(ds.tags) == {"context_start", "answer_length", "question_type", "n_facts"}
    for question, context, _ in _examples(ds):  # no row overflows
        assert len(question) <= 8 and len(context) <= 40
    assert set(ds.tags["n_facts"].tolist()) == {3, 4}
    assert set(ds.tags["question_type"].tolist()) == set(range(len(QUESTION_TYPES)))
    assert set(ds.tags["answer_length"].tolist()) == {1, 2, 3}


def test_qa_labels_are_the_unique_answers(generated: TensorDataset) -> None:
    ds, length = generated, generated.inputs.shape[1]
    starts, ends = span_of(ds.labels, length)
    for i, (question, context, cs) in enumerate(_examples(ds)):
        found = [
            (first + a, first + b)
            for first, sentence in _sentences(context)
            if (ab := _solve(question, sentence)) is not None
            for a, b in [ab]
        ]
        assert found == [(int(starts[i]) - cs, int(ends[i]) - cs)]  # exactly one answer
        assert int(ds.tags["answer_length"][i]) == int(ends[i] - starts[i]) + 1


def test_qa_foreground_is_answer_plus_evidence(generated: TensorDataset) -> None:
    ds, length = generated, generated.inputs.shape[1]
    starts, ends = span_of(ds.labels, length)
    for i, (question, context, cs) in enumerate(_examples(ds)):
        start, end = int(starts[i]) - cs, int(ends[i]) - cs
        (first, sentence), *_ = [(f, s) for f, s in _sentences(context) if f <= start < f + len(s)]
        words = set(question) - TEMPLATE_WORDS
        evidence = {first + k for k, t in enumerate(sentence) if t in words}
        assert len(evidence) == len(words)  # each content word once in the answering fact
        expected = torch.zeros(length, dtype=torch.bool)
        expected[[cs + k for k in evidence | set(range(start, end + 1))]] = True
        assert torch.equal(ds.foreground[i], expected)


def test_qa_distractors_defeat_a_first_mention_heuristic(generated: TensorDataset) -> None:
    ds, length = generated, generated.inputs.shape[1]
    starts = span_of(ds.labels, length)[0]
    first_mention_right = 0
    for i, (question, context, cs) in enumerate(_examples(ds)):
        words = set(question) - TEMPLATE_WORDS
        answering_kind = "belongs" if {"who", "does"} & set(question) else "is"
        sentences = _sentences(context)
        answering = [s for f, s in sentences if f <= int(starts[i]) - cs < f + len(s)][0]
        partial = [
            s for _, s in sentences if s[3] == answering_kind and words & set(s) and s != answering
        ]
        assert len(partial) >= 2  # the two distractors (never sharing every content word)
        assert not any(words <= set(s) for s in partial)
        obj = question[4] if question[0] in ("where", "who") else question[1]
        mentions = [s for _, s in sentences if obj in s]
        first_mention_right += mentions[0] == answering
    assert first_mention_right / len(ds) < 0.75  # 0.61 for this seed


def test_qa_is_deterministic_and_fillers_fit() -> None:
    a, b = qa(n_train=50, n_test=20, seed=3), qa(n_train=50, n_test=20, seed=3)
    c = qa(n_train=50, n_test=20, seed=4)
    for name in ("inputs", "labels", "foreground"):
        assert torch.equal(getattr(a.train, name), getattr(b.train, name))
        assert torch.equal(getattr(a.test, name), getattr(b.test, name))
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.train.inputs[:20], a.test.inputs)
    full = qa(n_train=100, n_test=10, facts=[4, 4], filler=1.0, context_length=36, distractors=0)
    lengths = (full.train.inputs != PAD_ID).sum(1) - full.train.tags["context_start"]
    assert lengths.max() <= 36
    fillers = {" ".join(f) for f in FILLERS}
    texts = [" ".join(context) for _, context, _ in _examples(full.train)]
    assert any(f in t for t in texts for f in fillers)
    none = qa(n_train=20, n_test=5, filler=0.0)
    assert not any(f in " ".join(c) for _, c, _ in _examples(none.train) for f in fillers)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"n_train": 0}, "n_train"),
        ({"question_length": 7}, "question_length"),
        ({"facts": [5, 5]}, "facts"),  # 5 facts of 9 tokens do not fit in 40
        ({"facts": [3]}, "facts"),
        ({"facts": [4, 3]}, "facts[1]"),
        ({"distractors": 3}, "facts[0]"),  # 1 + 3 distractors > facts[0] = 3
        ({"distractors": 9}, "distractors"),
        ({"filler": 1.5}, "filler"),
        ({"seed": -1}, "seed"),
        ({"colour": 1}, "colour"),
    ],
)
def test_qa_parameter_validation(params: dict[str, Any], name: str) -> None:
    with pytest.raises(KdscopeError) as e:
        build("qa", **params)
    _one_line(e, "'qa'", name)
