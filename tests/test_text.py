"""Text inputs: tokeniser and vocabulary, per-token units (the closed-form σ test
with noise on the embeddings), the text models and the QA span convention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kp_fixtures import FIXTURE_A, H_A, SIGMA_A
from torch import nn

from kdscope.analyses.knowledge_points.knowledge_points import counted_units
from kdscope.datasets.base import TensorDataset
from kdscope.datasets.text import (
    PAD_ID,
    SEP_ID,
    UNK_ID,
    Vocabulary,
    pad_ids,
    span_class,
    span_of,
    token_spans,
    tokenize,
)
from kdscope.errors import KdscopeError
from kdscope.knowledge_points.diagnosis import input_units
from kdscope.knowledge_points.estimator import (
    HALF_LOG_2PIE,
    EstimatorSettings,
    estimate,
    layer_probe,
    unit_sensitivity,
)
from kdscope.knowledge_points.units import token_units
from kdscope.models import build_model
from kdscope.models.text import TokenModel, context_positions, real_tokens
from kdscope.trainer import check_model_io

# -- tokeniser and vocabulary -----------------------------------------------------------------


def test_tokeniser_keeps_offsets_and_clitics() -> None:
    text = "It isn't BAD, it 's 'great' ca n't"
    spans = token_spans(text)
    assert [t for t, _, _ in spans] == [
        "it", "isn't", "bad", ",", "it", "'s", "'", "great", "'", "ca", "n't",
    ]  # fmt: skip
    assert all(text[a:b].lower() == t for t, a, b in spans)
    assert tokenize("A-b") == ["a", "-", "b"]


def test_vocabulary_order_encoding_and_padding() -> None:
    texts = [["b", "a", "b"], ["c", "b", "a", "<pad>"]]
    v = Vocabulary.build(texts)
    assert v.tokens == ("<pad>", "<unk>", "<sep>", "b", "a", "c")  # by count, ties alphabetical
    assert Vocabulary.build(texts[::-1]).tokens == v.tokens  # independent of the order
    assert Vocabulary.build(texts, max_size=4).tokens == ("<pad>", "<unk>", "<sep>", "b")
    assert Vocabulary.build(texts, min_count=2).tokens[3:] == ("b", "a")
    assert v.encode(["a", "zzz"]) == [4, UNK_ID]
    assert pad_ids([[3, 4, 5], [6]], 2).tolist() == [[3, 4], [6, PAD_ID]]
    with pytest.raises(ValueError, match="special"):
        Vocabulary(("a", "b"))


def test_span_class_round_trip() -> None:
    start, end = torch.tensor([0, 3, 5]), torch.tensor([0, 4, 6])
    label = span_class(start, end, 7)
    assert label.tolist() == [0, 25, 41]
    s, e = span_of(label, 7)
    assert s.tolist() == start.tolist() and e.tolist() == end.tolist()


# -- per-token units: the closed-form σ -------------------------------------------------

DIM = 3
SPLIT = torch.tensor([1 / 2, 1 / 3, 1 / 6]).sqrt()  # a token's weight spread over its 3 dims


class LinearOnEmbeddings(TokenModel):
    """f(ids) = W·flatten(embed(ids)) + a with a fixed embedding table (noise on its output)."""

    def __init__(self, weight: torch.Tensor, table: torch.Tensor) -> None:
        super().__init__(table.shape[0], table.shape[1])
        self.embed.weight.data = table.clone()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        self.fc.weight.data = weight.clone().float()
        self.fc.bias.data.fill_(0.3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids).flatten(1))


def _token_weight(per_token: torch.Tensor) -> torch.Tensor:
    return (per_token[:, :, None] * SPLIT).flatten(1)


def _closed_form(sigma_f: float, c: torch.Tensor, m: int, scale: float) -> torch.Tensor:
    star = torch.sqrt(7.0 * m * sigma_f / (2 * len(c) * c.double()))
    return star.clamp(0.001 * scale, scale)


def test_token_units_exclude_padding_and_separator() -> None:
    ids = torch.tensor([[5, SEP_ID, 6, PAD_ID], [7, 8, 9, 10]])
    units = token_units(ids, DIM, (PAD_ID, SEP_ID))
    assert units.valid.tolist() == [[True, False, True, False], [True] * 4]
    full = units.expand(torch.ones(2, 4))
    assert full.shape == (2, 4, DIM) and full[0].sum() == 2 * DIM
    fg = torch.tensor([[True, True, False, False], [False, True, False, False]])
    assert units.foreground(fg).tolist() == [
        [True, False, False, False],
        [False, True, False, False],
    ]
    assert real_tokens(ids).tolist() == units.valid.tolist()


def test_token_fixture_sensitivity_is_exact() -> None:
    table = torch.randn(12, DIM)
    model = LinearOnEmbeddings(_token_weight(FIXTURE_A), table)
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    with layer_probe(model, "fc") as fn:
        c, m = unit_sensitivity(
            fn, ids, token_units(ids, DIM, ()), EstimatorSettings(feature_transform="identity")
        )
    assert m == 2
    assert torch.allclose(c, torch.tensor([[1.0, 4.0, 9.0, 0.0]]).double().expand(2, -1))


@pytest.mark.parametrize("variant", ["tokens", "special", "embedding_scale"])
def test_optimum_mode_reaches_the_closed_form_per_token(variant: str) -> None:
    """σ* = sqrt(λ M σ_f / (2 n c_u)) per token, noise added to the embeddings.

    ``special``: a <sep> and two padding positions with large weights sit among the 4 real
    tokens; they are not units, get no noise and do not count in n, so σ is unchanged.
    ``embedding_scale``: an embedding table of RMS ≈ 4 and no fixed scale: s = the RMS of the
    real tokens' embeddings, so σ* = s · (fixture A's σ*), the ignored token at s.
    """
    torch.manual_seed(0)
    table = torch.randn(12, DIM) * (4.0 if variant == "embedding_scale" else 1.0)
    table[PAD_ID] = 0.0
    per_token, ids = FIXTURE_A, torch.tensor([[3, 4, 5, 6]])
    if variant == "special":
        order = [0, 4, 1, 2, 5, 3]
        per_token = torch.cat([FIXTURE_A, torch.full((2, 2), 5.0)], 1)[:, order]
        ids = torch.tensor([[3, SEP_ID, 4, 5, PAD_ID, 6]])
    model = LinearOnEmbeddings(_token_weight(per_token), table)
    units = input_units("text", model, ids)
    fixed = variant != "embedding_scale"
    settings = EstimatorSettings(
        mode="optimum", samples=4096, lam=7, feature_transform="identity",
        scale=1.0 if fixed else None,
    )  # fmt: skip
    res = estimate(model, "fc", ids, units, settings)
    scale = 1.0
    if not fixed:
        real = table[ids[0][real_tokens(ids)[0]]]
        scale = float(real.double().pow(2).mean().sqrt())
        assert res.scale == pytest.approx(scale) and scale > 2
    valid = units.valid[0]
    c = units.unit_sums(_token_weight(per_token).double().pow(2).sum(0)[None])[0][valid]
    assert c.tolist() == pytest.approx([1.0, 4.0, 9.0, 0.0])
    sigma = res.sigma[0][valid]
    star = _closed_form(float(res.sigma_f[0]), c, 2, scale)
    assert (sigma.log() - star.log()).abs().max() <= 0.03
    assert (sigma.log() - (scale * SIGMA_A).log()).abs().max() <= 0.05
    assert (res.entropy[0][valid] - math.log(scale) - H_A).abs().max() <= 0.05
    assert torch.allclose(res.entropy[0][valid], sigma.log() + HALF_LOG_2PIE)
    assert res.entropy[0][~valid].isnan().all()


# -- models ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text_cnn", "text_cnn_large", "text_transformer"])
def test_text_classifiers_ignore_padding(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 2, vocab_size=40).eval()
    ids = torch.randint(3, 40, (3, 7))
    padded = torch.cat([ids, torch.full((3, 5), PAD_ID)], 1)
    assert torch.allclose(model(ids), model(padded), atol=1e-5)
    empty = torch.full((1, 4), PAD_ID)
    assert torch.isfinite(model(empty)).all()
    for layer in model.diagnosable:
        dict(model.named_modules())[layer]  # every diagnosable layer exists


def test_text_model_scale_is_the_rms_of_real_token_embeddings() -> None:
    model = build_model("text_cnn", 2, vocab_size=10)
    ids = torch.tensor([[3, 4, SEP_ID, PAD_ID]])
    e = model.embed.weight[[3, 4]].detach().double()
    assert model.perturbation_scale(ids) == pytest.approx(float(e.pow(2).mean().sqrt()))


@pytest.mark.parametrize("name", ["span_transformer", "span_lstm"])
def test_span_model_logits_factorise(name: str) -> None:
    """Joint logits s_i + e_j: softmax is the product of the start and end distributions, so the
    span cross-entropy is the start plus the end cross-entropy; spans outside the
    context get no mass."""
    torch.manual_seed(0)
    length = 6
    model = build_model(name, length * length, vocab_size=20, dim=16).eval()
    ids = torch.tensor([[5, 6, SEP_ID, 7, 8, 9], [5, SEP_ID, 7, 8, PAD_ID, PAD_ID]])
    z = model(ids)
    assert z.shape == (2, length * length)
    start, end = model.span.start_end(*_head_inputs(model, ids))
    p = z.softmax(1).view(2, length, length)
    assert torch.allclose(p, start.softmax(1)[:, :, None] * end.softmax(1)[:, None, :], atol=1e-6)
    context = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert context_positions(ids).equal(context)
    inside = (context[:, :, None] & context[:, None, :]).flatten(1)
    assert float(z.detach().softmax(1)[~inside].max()) < 1e-12 and torch.isfinite(z).all()
    label = span_class(torch.tensor([3, 2]), torch.tensor([4, 3]), length)
    joint = F.cross_entropy(z, label)
    parts = F.cross_entropy(start, torch.tensor([3, 2])) + F.cross_entropy(
        end, torch.tensor([4, 3])
    )
    assert joint.item() == pytest.approx(parts.item(), rel=1e-5)
    padded = torch.cat([ids, torch.full((2, 3), PAD_ID)], 1)
    wide = build_model(name, 81, vocab_size=20, dim=16)
    state = model.state_dict()
    if "position.weight" in state:  # the same positions 0..5, three more for the padding
        state["position.weight"] = torch.cat([state["position.weight"], torch.zeros(3, 16)])
    wide.load_state_dict(state)
    start9, _ = wide.eval().span.start_end(*_head_inputs(wide, padded))
    assert torch.allclose(start9[:, :length][context], start[context], atol=1e-5)  # padding-free
    with pytest.raises(KdscopeError, match="L\\*L"):
        build_model(name, 10, vocab_size=20)


def _head_inputs(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the span head receives: the final states and the context mask."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = model.span.register_forward_pre_hook(lambda _m, args: seen.append(args))
    try:
        model(ids)
    finally:
        handle.remove()
    return seen[0]


def test_a_token_id_beyond_the_vocabulary_is_one_clear_error() -> None:
    model = build_model("text_cnn", 2, vocab_size=5)
    with pytest.raises(KdscopeError, match="cannot process"):
        check_model_io(model, torch.tensor([[3, 9]]), 2, "model 'text_cnn'")


def test_qa_counts_context_tokens_only() -> None:
    ids = torch.tensor([[5, 6, SEP_ID, 7, 8, PAD_ID], [5, SEP_ID, 7, 8, 9, 10]])
    fg = torch.tensor(
        [[False, False, False, True, False, False], [False, False, False, False, True, False]]
    )
    data = TensorDataset(
        ids, torch.zeros(2, dtype=torch.long), fg, 36, "text",
        tags={"context_start": torch.tensor([3, 2])}, task="span",
    )  # fmt: skip
    idx = torch.tensor([1, 0])
    foreground, counted = counted_units(data, idx, count_question=False)
    assert foreground.tolist() == fg[idx].tolist()
    assert counted.tolist() == [
        [False, False, True, True, True, True],
        [False, False, False, True, True, True],
    ]
    foreground, counted = counted_units(data, idx, count_question=True)
    assert counted is None and foreground[1, :2].all() and foreground[0, 0]


# -- studies end to end ---------------------------------------------------------------------


def _tiny_study(dataset: dict, teacher: dict, student: dict, layers: list[str], extra: list):
    from kdscope.config import parse_study

    train = {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.003}
    return parse_study(
        {
            "dataset": dataset,
            "teacher": {"model": teacher, "train": train},
            "student": {"model": student, "train": train},
            "students": [{"method": "kd"}],
            "seeds": [0],
            "layers": layers,
            "checkpoints": [0, 1, 2],
            # two epochs train no network whose background entropy exceeds its foreground's
            # (the "effective" rule); the filter is off so every analysed input is measured
            "analyses": [
                "accuracy",
                {"name": "knowledge_points", "candidates": 4, "target": None,
                 "effective_filter": False},
                *extra,
            ],
        }
    )  # fmt: skip


def test_knowledge_points_run_on_a_tiny_sentiment_study(tmp_path) -> None:
    """Text end to end: the vocabulary size reaches the models, one σ per real token, the
    logit-level analyses run, image-only ones are skipped with a note, tokens in the report."""
    from kdscope import io
    from kdscope.pipeline import run_study

    cfg = _tiny_study(
        {"name": "sentiment", "n_train": 64, "n_test": 32},
        {"name": "text_transformer", "dim": 16, "heads": 2},
        {"name": "text_cnn", "width": 8},
        ["last_conv"],
        ["calibration", "localisation"],
    )
    result = run_study(cfg, tmp_path, quiet=True)
    vocab = len(result.data.train.vocab)
    assert result.config.teacher.model.params["vocab_size"] == vocab  # bound from the dataset
    summary = io.read_json(tmp_path / "summary.json")["analyses"]
    kp = summary["knowledge_points"]
    assert kp["settings"]["perturbation_space"] == "embed"
    n = real_tokens(result.student_data.train.inputs[kp["candidates"]]).sum(1)
    assert kp["settings"]["units_n_range"] == [int(n.min()), int(n.max())]
    assert kp["settings"]["units_n"] == pytest.approx(float(n.double().mean()), abs=0.05)
    assert {a["what"] for a in kp["assumptions"]} >= {"foreground", "unit", "scale s"}
    assert set(kp["layers"]["last_conv"]["networks"]) == {"teacher", "baseline", "kd"}
    assert "ece" in summary["calibration"]["groups"]["kd"]
    assert summary["localisation"]["skipped"].startswith("Grad-CAM needs images")
    report = (tmp_path / "report.html").read_text()
    assert "class='tokens'" in report and "Choices and assumptions" in report


def test_knowledge_points_run_on_a_tiny_qa_study(tmp_path) -> None:
    """Extractive QA end to end: span classes as the prediction, per-token maps that count
    context tokens only, KD and feature mimicking on token inputs, class relations skipped."""
    from kdscope import io
    from kdscope.pipeline import run_study

    cfg = _tiny_study(
        {
            "name": "qa",
            "n_train": 48,
            "n_test": 16,
            "question_length": 8,
            "context_length": 24,
            "facts": [2, 2],
            "distractors": 1,
        },
        {"name": "span_transformer", "dim": 16, "heads": 2},
        {"name": "span_transformer", "dim": 16, "heads": 2},
        ["block1"],
        ["soft_labels", "rescaling"],
    )
    cfg = cfg.model_copy(
        update={"students": (*cfg.students, type(cfg.students[0])(method="feature_mimic",
                                                                  name="mimic", layer="block1"))}
    )  # fmt: skip
    result = run_study(cfg, tmp_path, quiet=True)
    train = result.student_data.train
    length = train.inputs.shape[1]
    assert train.task == "span" and result.data.num_classes == length * length
    summary = io.read_json(tmp_path / "summary.json")["analyses"]
    assert "class-relation" in summary["soft_labels"]["skipped"]
    assert "students" in summary["rescaling"]
    kp = summary["knowledge_points"]
    rows = {a["what"]: a["choice"] for a in kp["assumptions"]}
    assert rows["counted units"].startswith("context tokens")
    assert set(kp["layers"]["block1"]["networks"]) == {"teacher", "baseline", "kd", "mimic"}
    cached = io.load_npz(tmp_path / "analyses/knowledge_points/kd/seed0/block1.npz")
    idx = torch.as_tensor(kp["candidates"])[: len(cached["valid"])]
    question = torch.arange(length)[None, :] < train.tags["context_start"][idx][:, None]
    assert not cached["valid"][question.numpy()].any()  # question tokens are never counted
    assert cached["valid"].any(1).all()
