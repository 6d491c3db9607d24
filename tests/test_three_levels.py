"""The three-levels analyses on trained models: the teacher check on teachers built here, and a
whole small study (mechanics only: no expected ordering of methods is asserted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdscope.analyses import with_requirements
from kdscope.analyses.teacher_knowledge.teacher_check import check_teacher, format_check
from kdscope.config import AnalysisConfig, parse_study
from kdscope.datasets import build
from kdscope.models import build_model
from kdscope.pipeline import run_study


@pytest.fixture(scope="module")
def data():
    return build("hierarchy", n_train=60, n_test=50, seed=0)


def _train(data, eps: float, epochs: int, weight_decay: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("vector_mlp", data.num_classes, in_features=32, hidden=[256])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for b in data.train.batches(128, gen):
            loss = F.cross_entropy(model(b.input), b.label, label_smoothing=eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_teacher_check_flags_a_label_smoothed_teacher_and_passes_a_ce_teacher(data) -> None:
    ce = check_teacher(_train(data, 0.0, 30, 1e-4), data.train, data.test, tau=4.0, lam=0.7)
    ls = check_teacher(_train(data, 0.2, 30, 1e-4), data.train, data.test, tau=4.0, lam=0.7)
    assert ce["flagged"] == [], format_check(ce)
    assert "D1_relation_free" in ls["flagged"], format_check(ls)
    # the smoothed teacher keeps less relational structure than the CE teacher at both τ
    for key in ("relational_excess", "relational_excess_tau1"):
        assert ls["levels"]["domain"][key] < ce["levels"]["domain"][key]
    json.dumps(ce)  # plain JSON


def test_teacher_check_flags_a_saturated_teacher(data) -> None:
    """A teacher whose training outputs put 0.9999 on the ground truth is flagged by D2 (its
    uniform tail also carries no relations, so D1 fires too)."""
    table = {
        float(x): int(y) for x, y in zip(data.train.inputs[:, 0], data.train.labels, strict=True)
    }
    k = data.num_classes

    class Saturated(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            labels = torch.tensor([table[float(v)] for v in x[:, 0]])
            z = torch.full((len(x), k), math.log(1e-4 / (k - 1)))
            z[torch.arange(len(x)), labels] = math.log(0.9999)
            return z

    out = check_teacher(Saturated(), data.train, tau=4.0, lam=0.7)
    assert "D2_over_confident" in out["flagged"], format_check(out)
    assert out["levels"]["instance"]["frac_above_0.99"] > 0.99


def test_requirements_are_added_before_the_analysis_that_needs_them() -> None:
    entries = with_requirements(
        [AnalysisConfig(name="three_levels"), AnalysisConfig(name="calibration")]
    )
    names = [e.name for e in entries]
    assert names.index("three_levels") > max(
        names.index(n)
        for n in ("accuracy", "rescaling", "soft_labels", "class_geometry", "teacher_check")
    )
    assert names.count("calibration") == 1
    # a configured requirement keeps its parameters
    entries = with_requirements(
        [AnalysisConfig(name="three_levels"), AnalysisConfig(name="teacher_check", zoo=True)]
    )
    assert [e.params for e in entries if e.name == "teacher_check"] == [{"zoo": True}]


STUDY = {
    "name": "levels-mini",
    "dataset": {
        "name": "hierarchy",
        "n_super": 2,
        "n_sub": 3,
        "dim": 8,
        "n_train": 20,
        "n_test": 20,
        "difficulty": 0.5,
    },
    "transfer_size": 60,
    "teacher": {
        "model": {"name": "vector_mlp", "in_features": 8, "hidden": [32]},
        "train": {"epochs": 10, "optimizer": "adam", "lr": 0.01, "batch_size": 32},
    },
    "student": {
        "model": {"name": "vector_mlp", "in_features": 8, "hidden": []},
        "train": {"epochs": 4, "optimizer": "adam", "lr": 0.01, "batch_size": 32},
    },
    "students": [
        {"method": "ls_matched"},
        {"method": "kd", "tau": 4, "gamma": 0.3, "alpha": 0.7},
        {"method": "kd_pt"},
        {"method": "kd_sim"},
        {"method": "kd_sim", "name": "kd_sim_cosine", "variant": "weight_cosine"},
        {"method": "kd_topk"},
    ],
    "seeds": [0, 1],
    "checkpoints": [0, 1, 2, 4],
    "analyses": [
        "calibration",
        "difficulty",
        {"name": "teacher_check", "zoo": True},
        "three_levels",
    ],
}


def test_a_small_three_levels_study_runs_every_analysis(tmp_path) -> None:
    cfg = parse_study(STUDY)
    run_study(cfg, tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    a = summary["analyses"]
    for name in (
        "accuracy",
        "calibration",
        "rescaling",
        "soft_labels",
        "class_geometry",
        "difficulty",
        "teacher_check",
        "three_levels",
    ):
        assert name in a and "skipped" not in a[name], name
    claims = a["three_levels"]["claims"]
    assert len(claims) == 6
    assert {c["verdict"] for c in claims} <= {
        "reproduced",
        "not reproduced",
        "inconclusive",
        "not measured",
    }
    assert all(c["verdict"] != "not measured" for c in claims)
    # the report names every choice, defaults included
    assert "target_temperature='pre'" in a["three_levels"]["settings"]["kd_pt"]
    assert "tail='uniform'" in a["three_levels"]["settings"]["kd_topk"]
    # rescaling: every soft-target student at the checkpoints nearest 0/10/25/50/100 %
    resc = a["rescaling"]["students"]
    assert set(resc) == {"ls_matched", "kd", "kd_pt", "kd_sim", "kd_sim_cosine", "kd_topk"}
    assert list(resc["kd"]["checkpoints"]) == ["0", "1", "2", "4"]
    # at initialisation the student is the same for KD and KD-pt (same seed), and both give
    # the same w_g, which is affine in rho_g at p = u only for a zero-logit student: check
    # the correlation is defined and in [-1, 1]
    r = resc["kd"]["checkpoints"]["0"]["w_g"]["pearson"]["mean"]
    assert -1 <= r <= 1
    # the teacher zoo trained and checked, each with its KD students' gain
    zoo = a["teacher_check"]["teachers"]
    assert set(zoo) == {"teacher", "label_smoothed", "over_trained", "early_stopped"}
    assert all("kd_gain" in t for t in zoo.values())
    # a zoo KD student against the study teacher's, seed by seed: the difference of their gains
    # over the same baseline seed
    for name in ("label_smoothed", "over_trained", "early_stopped"):
        for s in ("0", "1"):
            assert math.isclose(
                zoo[name]["kd_vs_teacher"]["per_seed"][s],
                zoo[name]["kd_gain"]["per_seed"][s] - zoo["teacher"]["kd_gain"]["per_seed"][s],
                abs_tol=1e-12,
            )
    # both KD-sim variants are in the ordering claim, the zoo's KD students in the failure claim
    assert claims[2]["claim"] == "benefit ordering KD-pt > KD-sim > LS"
    assert set(claims[2]["value"]) == {"KD-sim (class-mean)", "KD-sim (weight-cosine)"}
    assert a["three_levels"]["groups"]["KD-sim (weight-cosine)"] == "kd_sim_cosine"
    assert set(claims[5]["value"]["kd_vs_teacher"]) == {"label_smoothed", "over_trained"}
    assert "partial_spearman" in claims[0]["value"]
    geo = a["class_geometry"]["groups"]
    assert set(geo["kd"]["hierarchy_score"]["per_seed"]) == {"0", "1"}
    assert a["difficulty"]["true_difficulty"] is not None
    html = (tmp_path / "report.html").read_text()
    for title in (
        "Calibration",
        "gradient rescaling",
        "class geometry",
        "teacher check",
        "paper's claims",
    ):
        assert title in html
    # a second run resumes everything (no training) and gives identical analyses
    run_study(cfg, tmp_path, quiet=True)
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["analyses"]["three_levels"] == a["three_levels"]


def test_check_teacher_command_trains_only_the_teacher(tmp_path, capsys) -> None:
    from kdscope.cli import main

    study = tmp_path / "study.yaml"
    study.write_text(json.dumps(STUDY))  # JSON is YAML
    out = tmp_path / "run"
    assert main(["check-teacher", str(study), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "D1_relation_free" in printed and "D2_over_confident" in printed
    result = json.loads((out / "teacher_check.json").read_text())
    assert set(result["flags"]) == {
        "D1_relation_free",
        "D2_over_confident",
        "D3_uninformative_confidence",
    }
    assert (out / "models" / "teacher" / "seed0" / "result.json").exists()
    assert not (out / "models" / "baseline").exists()
    assert main(["check-teacher", str(study), "--out", str(out), "--lam", "2"]) == 2


def test_check_teacher_computes_at_the_studys_threads_per_job(tmp_path, monkeypatch) -> None:
    """The check runs in the main process after the teacher's job, at the thread count of the
    study's jobs (its numbers depend on it), not at the process's own count."""
    import torch

    from kdscope.analyses.teacher_knowledge import teacher_check
    from kdscope.cli import main

    seen = []
    check = teacher_check.check_teacher

    def recording(*args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return check(*args, **kwargs)

    monkeypatch.setattr(teacher_check, "check_teacher", recording)
    study = tmp_path / "study.yaml"
    study.write_text(json.dumps(STUDY))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert (
            main(
                [
                    "check-teacher",
                    str(study),
                    "--out",
                    str(tmp_path / "run"),
                    "-q",
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
        assert seen == [1] and torch.get_num_threads() == 2  # restored afterwards
    finally:
        torch.set_num_threads(before)


def test_partial_rank_correlation_removes_a_shared_cause() -> None:
    """x and y both follow z: their Spearman correlation is high, the partial one given z ~ 0;
    a y that depends on x beyond z keeps a positive partial correlation."""
    from kdscope.correlation import partial_spearman, pearson, rank_residual, spearman

    rng = np.random.default_rng(0)
    z = rng.normal(size=4000)
    x = z + 0.3 * rng.normal(size=4000)
    y = z + 0.3 * rng.normal(size=4000)
    assert spearman(x, y) > 0.8
    assert abs(partial_spearman(x, y, z)) < 0.05
    y2 = z + 0.5 * x + 0.3 * rng.normal(size=4000)
    assert partial_spearman(x, y2, z) > 0.3
    assert partial_spearman(x, y2, z) == pearson(rank_residual(x, z), rank_residual(y2, z))
    # residuals are orthogonal to the control's ranks
    r = rank_residual(x, z)
    assert abs(float(np.corrcoef(r, np.argsort(np.argsort(z)))[0, 1])) < 1e-9


def test_equal_count_bins_split_ties_by_position() -> None:
    from kdscope.analyses.teacher_knowledge.difficulty import equal_count_bins

    score = np.array([0.5, 0.1, 0.5, 0.9, 0.5, 0.3, 0.7, 0.5, 0.2, 0.8])
    bins = equal_count_bins(score, 5)
    assert np.bincount(bins).tolist() == [2, 2, 2, 2, 2]
    # ascending: 0.1, 0.2 | 0.3, 0.5(i0) | 0.5(i2), 0.5(i4) | 0.5(i7), 0.7 | 0.8, 0.9
    assert bins.tolist() == [1, 0, 2, 4, 2, 1, 3, 3, 0, 4]


def test_head_inputs_are_the_last_linear_layers_input() -> None:
    from kdscope.analyses.teacher_knowledge.class_geometry import head_inputs, logit_layer

    model = build_model("vector_mlp", 4, in_features=6, hidden=[5])
    x = torch.randn(7, 6)
    torch.testing.assert_close(head_inputs(model, x, batch_size=3), model.features(x))
    assert logit_layer(model) is model.head
