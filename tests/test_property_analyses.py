"""Property-transfer analyses: their statistics on hand-built cases, and every analysis on a
small study with the teacher variants they need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdscope.analyses.property_transfer.shape_bias import cue_decisions, shape_bias, shape_bias_gap
from kdscope.analyses.property_transfer.subgroups import (
    group_means,
    shortfall_statistic,
    unfairness,
)
from kdscope.analyses.study_views import oriented
from kdscope.property_transfer.invariance import agreement, shift_pixels, transformed_pair
from kdscope.property_transfer.renderings import edges, render


def s(mean: float, lo: float, hi: float, ci90: tuple | None = None, n: int = 3) -> dict:
    """A hand-built summary; its 90 % interval lies inside the 95 % one unless given."""
    ci90 = ci90 or (lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))
    return {
        "per_seed": {"0": mean},
        "mean": mean,
        "std": 0.0,
        "n_seeds": n,
        "ci95": [lo, hi],
        "ci90": list(ci90),
    }


# ----------------------------------------------------------------------------- shape bias


def test_shape_bias_of_pure_shape_texture_and_neither_models() -> None:
    shape = torch.tensor([0, 1, 2, 3])
    texture = torch.tensor([1, 2, 3, 0])
    assert shape_bias(cue_decisions(shape, shape, texture)) == 1.0
    assert shape_bias(cue_decisions(texture, shape, texture)) == 0.0
    # predictions matching neither cue are excluded from both counts
    mixed = torch.tensor([0, 2, 9, 9])  # shape, texture, neither, neither
    rows = cue_decisions(mixed, shape, texture)
    assert rows.tolist() == [[1, 0], [0, 1], [0, 0], [0, 0]]
    assert shape_bias(rows) == 0.5
    assert np.isnan(shape_bias(cue_decisions(torch.full((4,), 9), shape, texture)))
    paired_rows = np.concatenate([cue_decisions(shape, shape, texture), rows], 1)
    assert shape_bias_gap(paired_rows) == 0.5  # 1.0 − 0.5


# ----------------------------------------------------------------------------- sub-groups


def test_group_means_unfairness_and_weak_group_shortfall() -> None:
    groups = np.array([0, 0, 1, 1, 2, 2])
    correct = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(group_means(correct, groups, 4)[:3], [1.0, 0.5, 0.0])
    assert np.isnan(group_means(correct, groups, 4)[3])  # empty group
    rows = np.stack([correct, groups], 1)
    assert unfairness(rows) == 1.0
    gain = np.array([0.2, 0.4, 0.3, 0.3, 0.0, 0.0])
    # gain on group 2 (0.0) − mean of the other groups' mean gains (0.3, 0.3)
    assert shortfall_statistic(2)(np.stack([gain, groups], 1)) == pytest.approx(-0.3)
    # vectorised over resamples (n_boot, k, I, 2)
    batch = np.broadcast_to(rows, (5, 2, 6, 2))
    np.testing.assert_allclose(unfairness(batch), np.ones((5, 2)))


# ----------------------------------------------------------------------------- verdicts


def test_transfer_verdict_and_orientation() -> None:
    """kdscope.verdicts.transfer on hand-built gaps (margin 0.03), and a gap whose teacher-ward
    direction is down (e.g. a distance to the teacher) oriented up before the rule."""
    from kdscope.verdicts import transfer

    gap = s(0.1, 0.05, 0.15)
    assert transfer(gap, [s(0.05, 0.01, 0.09)], 0.03) == "transfers"
    # the control differences are compared with 0 directly: one equivalent to 0 confounds,
    # one too wide to tell leaves the control inconclusive
    assert transfer(gap, [s(0.05, 0.01, 0.09), s(0.0, -0.02, 0.02)], 0.03) == "confounded"
    assert transfer(gap, [s(0.02, -0.01, 0.05)], 0.03) == "control inconclusive"
    assert transfer(gap, [], 0.03) == "no control"
    # a wide interval around 0 is inconclusive, never "no transfer"
    assert transfer(s(0.01, -0.2, 0.22), [], 0.03) == "inconclusive"
    # equivalence: the 90 % interval inside ±margin
    assert transfer(s(0.0, -0.03, 0.03, ci90=(-0.02, 0.02)), [], 0.03) == "no transfer"
    assert transfer(s(0.1, float("nan"), float("nan"), n=1), [], 0.03) == "too few seeds"
    down = s(-0.1, -0.15, -0.05)
    up = oriented(down, -1.0)
    assert up["mean"] == 0.1 and up["ci95"] == [0.05, 0.15] and up["per_seed"] == {"0": 0.1}
    assert up["ci90"] == pytest.approx([0.07, 0.13])
    assert transfer(down, [], 0.03) == "away from the teacher"
    assert transfer(up, [oriented(s(-0.05, -0.09, -0.01), -1.0)], 0.03) == "transfers"
    assert oriented(None, -1.0) is None


def test_findings_are_counted_once() -> None:
    from kdscope.analyses.property_transfer.property_claims import finding_name

    assert finding_name("decision_boundary", "boundary similarity, coloured") == finding_name(
        "decision_boundary", "boundary similarity, textured"
    )
    assert finding_name("domains", "edge rendering") == finding_name("domains", "sketch rendering")
    assert finding_name("domains", "unseen domains") != finding_name("domains", "edge rendering")


# ----------------------------------------------------------------------------- invariance


def test_agreement_is_100_percent_for_the_identity_and_for_a_constant_model() -> None:
    x = torch.rand(16, 3, 16, 16)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 5))
    assert agreement(net, x, x).mean() == 1.0
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 5))
    with torch.no_grad():
        constant[1].weight.zero_()
        constant[1].bias.copy_(torch.arange(5.0))
    for transform, strength in (("colour", "train"), ("colour", 0.6), ("crop", 0.3), ("shift", 4)):
        x1, x2 = transformed_pair(x, transform, strength, seed=0)
        assert agreement(constant, x1, x2).mean() == 1.0
        assert x1.shape == x2.shape == x.shape
        # every model sees the same transformed inputs: the pair is a function of the seed
        y1, y2 = transformed_pair(x, transform, strength, seed=0)
        assert torch.equal(x1, y1) and torch.equal(x2, y2)
    assert [shift_pixels(d, 28) for d in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert [shift_pixels(d, 32) for d in (1, 2, 3, 4)] == [1, 2, 3, 5]
    assert [shift_pixels(d, 16) for d in (1, 4)] == [1, 2]  # capped by the 32/28 resize
    with pytest.raises(ValueError, match="no training strength"):
        transformed_pair(x, "crop", "train", 0)


# ----------------------------------------------------------------------------- renderings


def test_renderings_by_hand() -> None:
    x = torch.zeros(1, 3, 5, 5)
    x[..., :, 3:] = 1.0  # a vertical step between columns 2 and 3
    e = edges(x)
    assert e.shape == (1, 3, 5, 5) and float(e.max()) == 1.0
    assert torch.all(e[..., :, 0] == 0) and torch.all(e[..., :, 2] == 1.0)
    assert torch.equal(render(x, torch.zeros(1, 5, 5, dtype=torch.bool), "sketch"), 1 - e)
    assert torch.all(edges(torch.full((1, 3, 4, 4), 0.3)) == 0)  # flat: no edge, no division
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True
    sil = render(x, mask, "silhouette")
    assert torch.all(sil[:, :, 1:3, 1:3] == 0) and float(sil.sum()) == 3 * (25 - 4)


# ----------------------------------------------------------------------------- on a study


def tiny_property_study() -> dict:
    """One tiny study exercising every property analysis: mixed domains (students see plain
    only), 3 groups (the teacher never sees group 1), class textures, a colour/crop-augmented
    teacher, KD, Hint and the soft-label control."""
    return {
        "name": "tiny_properties",
        "dataset": {
            "name": "shapes",
            "n_train": 360,
            "n_test": 96,
            "size": 16,
            "num_classes": 4,
            "background": "mixed",
            "groups": 3,
            "object_texture": "class",
            "seed": 0,
        },
        "teacher_subset": {"tag": "group", "counts": [100, 0, 100]},
        "student_subset": {"tag": "domain", "keep": [0]},
        "teacher": {
            "model": {"name": "cnn_small", "width": 6},
            "train": {"epochs": 2, "batch_size": 32, "augment": ["flip", "colour", "crop"]},
        },
        "student": {
            "model": {"name": "cnn_small", "width": 4},
            "train": {"epochs": 2, "batch_size": 32},
        },
        "students": [
            {"method": "kd"},
            {"method": "hint"},
            {"method": "soft_label", "noise_var": 0.02},
        ],
        "seeds": [0, 1],
        "checkpoints": [2],
        "analyses": [
            {"name": "invariance", "n_inputs": 32},
            {"name": "domains"},
            {"name": "decision_boundary", "triplets": 3, "resolution": 6},
            {"name": "shape_bias"},
            {"name": "subgroups"},
            {"name": "accuracy_matched", "n_inputs": 32, "factors": [0.5]},
            {"name": "property_claims"},
        ],
    }


def test_every_property_analysis_on_a_tiny_study_and_its_resume(tmp_path) -> None:
    import json

    from kdscope.config import parse_study
    from kdscope.pipeline import run_study

    cfg = parse_study(tiny_property_study())
    run_study(cfg, tmp_path, quiet=True)
    summary = (tmp_path / "summary.json").read_text()
    a = json.loads(summary)["analyses"]

    inv = a["invariance"]
    assert inv["control_teacher"] and set(inv["transforms"]) == {"colour", "crop", "shift"}
    colour = inv["transforms"]["colour"]
    assert (
        colour["teacher_trained_on_it"] and not inv["transforms"]["shift"]["teacher_trained_on_it"]
    )
    train = colour["strengths"]["train"]
    assert 0 <= train["teacher"] <= 1 and "kd*" in train["groups"] and "kd" in train["star_gaps"]
    colour_v = inv["verdicts"]["colour invariance"]
    assert set(colour_v["kd"]["controls"]) == {"soft_label", "kd*"}  # S* and the soft-label
    assert set(colour_v["hint"]["controls"]) == {"soft_label"}  # no S* for Hint
    assert "soft_label" not in colour_v  # a control gets no verdict of its own
    assert set(inv["premise"]) == {"kd", "hint"} and inv["margin"] == 0.03  # controls have none
    assert (tmp_path / "analyses" / "invariance" / "teacher_star" / "result.json").exists()

    dom = a["domains"]
    assert dom["student_domains"] == ["plain"]
    assert set(dom["teacher_domains"]) == {"plain", "coloured", "textured"}
    assert dom["domains"]["plain"]["seen_by_students"]
    assert not dom["domains"]["textured"]["seen_by_students"]
    assert set(dom["unseen"]["domains"]) == {"coloured", "textured"}
    assert set(dom["verdicts"]) == {
        "unseen domains",
        "edge rendering",
        "sketch rendering",
        "silhouette rendering",
    }
    n = sum(d["n_inputs"] for d in dom["domains"].values())
    assert n == 96

    db = a["decision_boundary"]["domains"]
    assert set(db) == {"plain", "coloured", "textured"}
    for d in db.values():
        assert 0 <= d["groups"]["kd"]["mean"] <= 1
        assert set(d["independent_pairs"]["baseline"]["per_pair"]) == {"0-1"}  # Ind vs Ind'
        assert len(d["example_plane"]["teacher"]) == 36
        assert set(d["records"]) == {"kd", "hint"}
    # the paper's claim is about the domains the students never saw
    assert set(a["decision_boundary"]["verdicts"]) == {
        "boundary similarity, coloured",
        "boundary similarity, textured",
    }

    sb = a["shape_bias"]
    assert sb["n_inputs"] == 96 and 0 <= sb["teacher"]["shape_bias"] <= 1
    assert "record" not in sb["students"]["soft_label"]
    assert set(sb["verdicts"]["shape bias"]) == {"kd", "hint"}

    sg = a["subgroups"]
    assert sg["n_groups"] == 3 and sg["teacher_groups"][1] == 0 and sum(sg["teacher_groups"]) == 200
    assert len(sg["students"]["kd"]["gain"]) == 3

    am = a["accuracy_matched"]
    assert am["students"]["kd"]["tried"] and am["margin"] == 0.03
    rec = am["verdicts"]["adversarial at matched accuracy"]["kd"]
    assert rec["premise"] == "not applicable (accuracy matched)"
    # the adversarial analysis' foreign net, replayed: a control only when its attacks fool it
    # somewhere (the tiny nets may sit at chance, fooled nowhere)
    foreign = {"foreign source"} if am["n_kept_foreign"] else set()
    assert set(rec["controls"]) == foreign
    if not am["students"]["kd"]["matched"]:
        assert rec["verdict"] == "not matched" and "verdict_without_guard" in rec
    adv = a["adversarial"]
    foreign = {"foreign source"} if adv["sources"]["foreign, ε×1"]["n_kept"] else set()
    records = adv["verdicts"]["adversarial vulnerability"]
    assert set(records) == {"kd", "hint"}
    assert set(records["kd"]["controls"]) == foreign | {"soft_label"}

    claims = a["property_claims"]
    assert {r["analysis"] for r in claims["rows"]} == {
        "adversarial",  # required by accuracy_matched, run with its defaults
        "accuracy_matched",
        "invariance",
        "domains",
        "decision_boundary",
        "shape_bias",
        "subgroups",
    }
    assert claims["not_measured"] == ["localisation", "representation_similarity"]
    scored = {"reproduced", "not reproduced", "not scored"}
    assert all(r["status"] in scored for r in claims["rows"] if r["counted"])
    assert all(not r["counted"] for r in claims["rows"] if r["analysis"] == "accuracy_matched")
    keys = [(f["finding"], f["family"]) for f in claims["findings"]]
    assert len(keys) == len(set(keys))  # each finding once
    assert sum(claims["counts"].values()) == len(keys)
    assert ("decision-boundary similarity on unseen domains", "kd") in keys
    html = (tmp_path / "report.html").read_text()
    for words in (
        "Agreement of each model",
        "cue-conflict",
        "Shortfall",
        "planes per domain",
        "Distinct findings",
        "Read this first",  # the guards: two seeds only
    ):
        assert words in html

    # a second run resumes every model (the analyses' own models included) with identical numbers
    run_study(cfg, tmp_path, quiet=True)
    assert json.loads((tmp_path / "summary.json").read_text())["analyses"] == a
