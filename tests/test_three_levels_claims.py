"""The three-levels claims and the teacher-check table on hand-built analysis results: every
verdict rule with a known answer, and the rendered teacher table parsed back."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import numpy as np

from kdscope.analyses.teacher_knowledge.teacher_check import TeacherCheckAnalysis
from kdscope.analyses.teacher_knowledge.three_levels import (
    ThreeLevelsAnalysis,
    kd_sim_groups,
    r_score_difference,
)

UP = {"mean": 0.10, "ci95": [0.05, 0.15], "per_seed": {}}
FLAT = {"mean": 0.00, "ci95": [-0.10, 0.10], "per_seed": {}}
DOWN = {"mean": -0.10, "ci95": [-0.15, -0.05], "per_seed": {}}


def _corr(ci: list[float], per_seed: dict[str, float]) -> dict[str, Any]:
    return {"mean": float(np.mean(list(per_seed.values()))), "ci95": ci, "per_seed": per_seed}


def _rescaling(partial: dict[str, Any], control: dict[str, Any] | None) -> SimpleNamespace:
    """A study whose ``rescaling`` result has a KD student whose plain Spearman is clearly above
    0 at its first checkpoint after initialisation (and, with ``control``, an LS-matched one)."""
    plain = _corr([0.5, 0.8], {"0": 0.6, "1": 0.7, "2": 0.65})

    def student(p: dict[str, Any]) -> dict[str, Any]:
        cp = {"w": {"spearman": plain, "partial_spearman": p}}
        return {"checkpoints": {"0": cp, "10": cp, "100": cp}}

    students = {"kd": student(partial)}
    if control is not None:
        students["ls_matched"] = student(control)
    return SimpleNamespace(results={"rescaling": {"students": students}})


def test_rescaling_claim_reads_the_partial_correlation_not_the_plain_one() -> None:
    claim = ThreeLevelsAnalysis()._rescaling_claim
    # the plain Spearman is above 0 but the partial one (given p_g) straddles 0
    flat = _corr([-0.05, 0.1], {"0": 0.0, "1": 0.05, "2": 0.02})
    out = claim(_rescaling(flat, None), "kd", None)
    assert out["verdict"] == "inconclusive"
    assert "plain Spearman" in out["measure"] and "+0.650 [+0.500, +0.800]" in out["measure"]
    below = _corr([-0.3, -0.1], {"0": -0.2, "1": -0.25, "2": -0.15})
    assert claim(_rescaling(below, None), "kd", None)["verdict"] == "not reproduced"
    above = _corr([0.55, 0.75], {"0": 0.6, "1": 0.7, "2": 0.65})
    assert claim(_rescaling(above, None), "kd", None)["verdict"] == "reproduced"


def test_rescaling_claim_needs_kd_to_exceed_the_ls_control() -> None:
    claim = ThreeLevelsAnalysis()._rescaling_claim
    kd = _corr([0.55, 0.75], {"0": 0.6, "1": 0.7, "2": 0.65})
    # the control has no partial correlation: KD − control per seed 0.55, 0.70, 0.55
    quiet = _corr([-0.1, 0.2], {"0": 0.05, "1": 0.0, "2": 0.1})
    out = claim(_rescaling(kd, quiet), "kd", "ls_matched")
    assert out["verdict"] == "reproduced"
    contrast = out["value"]["partial_minus_control"]
    assert math.isclose(contrast["mean"], 0.6)
    assert np.allclose([contrast["per_seed"][s] for s in "012"], [0.55, 0.7, 0.55])
    # a control with as much partial correlation: the claim is not specific to the teacher
    loud = _corr([0.55, 0.75], {"0": 0.62, "1": 0.66, "2": 0.66})
    out = claim(_rescaling(kd, loud), "kd", "ls_matched")
    assert out["verdict"] == "inconclusive"
    assert "minus the LS control ls_matched's" in out["measure"]


def test_ordering_claim_is_judged_per_kd_sim_variant() -> None:
    order = ThreeLevelsAnalysis()._ordering_claim
    cm, wc = "KD-sim (class-mean)", "KD-sim (weight-cosine)"
    # class-mean alone: the ordering holds
    assert order({cm: (UP, UP), wc: (None, None)})["verdict"] == "reproduced"
    # the weight-cosine variant beats KD-pt: the order depends on the variant
    out = order({cm: (UP, UP), wc: (DOWN, UP)})
    assert out["verdict"] == "inconclusive"
    assert out["measure"].startswith("the ordering depends on the KD-sim variant")
    assert out["value"][cm]["verdict"] == "reproduced"
    assert out["value"][wc]["verdict"] == "not reproduced"
    assert out["value"][wc]["KD-pt − KD-sim"] is DOWN
    # both variants agree
    assert order({cm: (UP, UP), wc: (UP, UP)})["verdict"] == "reproduced"
    assert order({cm: (DOWN, UP), wc: (FLAT, DOWN)})["verdict"] == "not reproduced"
    assert order({cm: (UP, FLAT), wc: (None, None)})["verdict"] == "inconclusive"
    assert order({cm: (None, UP), wc: (None, None)})["verdict"] == "not measured"


def test_kd_sim_groups_finds_the_first_student_of_each_variant() -> None:
    groups = [
        SimpleNamespace(name="kd", method="kd", method_params={}),
        SimpleNamespace(name="sim", method="kd_sim", method_params={}),
        SimpleNamespace(name="cos", method="kd_sim", method_params={"variant": "weight_cosine"}),
        SimpleNamespace(
            name="cos2", method="kd_sim", method_params={"variant": "weight_cosine", "beta": 0.2}
        ),
    ]
    study = SimpleNamespace(by_role=lambda role: groups if role == "student" else [])
    assert kd_sim_groups(study) == {  # type: ignore[arg-type]
        "KD-sim (class-mean)": "sim",
        "KD-sim (weight-cosine)": "cos",
    }
    only_cos = SimpleNamespace(by_role=lambda role: groups[2:] if role == "student" else [])
    assert kd_sim_groups(only_cos) == {  # type: ignore[arg-type]
        "KD-sim (class-mean)": None,
        "KD-sim (weight-cosine)": "cos",
    }


def _member(
    d1: bool | None, saturated: float, excess: float, vs_teacher: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "flags": {"D1_relation_free": {"flagged": d1}},
        "levels": {
            "domain": {"relational_excess": excess},
            "instance": {"frac_above_0.99": saturated},
        },
    }
    if vs_teacher is not None:
        out["kd_vs_teacher"] = vs_teacher
    return out


def _zoo(ls_gain: Any, ot_gain: Any, ls_d1: bool | None = True) -> SimpleNamespace:
    """The preset's pattern: D1 flags the label-smoothed teacher, the over-trained one saturates
    59 % of ρ¹_g against 13 %; their KD students against the study teacher's as given."""
    teachers = {
        "teacher": _member(False, 0.13, 0.49),
        "label_smoothed": _member(ls_d1, 0.05, 0.07, ls_gain),
        "over_trained": _member(False, 0.59, 0.40, ot_gain),
    }
    return SimpleNamespace(results={"teacher_check": {"teachers": teachers}})


def test_failure_claim_is_confronted_with_the_zoos_kd_gains() -> None:
    claim = ThreeLevelsAnalysis()._failure_claim
    # mechanism holds and both zoo teachers distil worse than the study teacher
    out = claim(_zoo(DOWN, DOWN))
    assert out["verdict"] == "reproduced"
    assert out["value"]["mechanism"] == "reproduced"
    assert "D1 on the label-smoothed teacher flagged" in out["measure"]
    assert "over-trained 0.590 vs study teacher 0.130" in out["measure"]
    # a zoo teacher distils better: the measured gains contradict the claim
    out = claim(_zoo(UP, DOWN))
    assert out["verdict"] == "not reproduced"
    assert out["value"]["worse_teacher"] == {
        "label_smoothed": "not reproduced",
        "over_trained": "reproduced",
    }
    assert "contradict" in out["measure"]
    # gains within noise (the preset: −0.006 and −0.002): never reproduced
    out = claim(_zoo(FLAT, FLAT))
    assert out["verdict"] == "inconclusive"
    assert "do not confirm a worse teacher" in out["measure"]
    # the zoo's students not trained: the consequence is not measured
    out = claim(_zoo(None, None))
    assert out["verdict"] == "inconclusive"
    assert "not measured" in out["measure"]
    # the mechanism fails: not reproduced whatever the gains
    assert claim(_zoo(DOWN, DOWN, ls_d1=False))["verdict"] == "not reproduced"
    assert claim(SimpleNamespace(results={}))["verdict"] == "not measured"


def test_r_score_difference_counts_undefined_resamples() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(30, 4)), np.arange(30) % 4
    # every class its own superclass: no same-superclass pair, the score is undefined
    out = r_score_difference(logits, labels, np.arange(4), tau=4.0, n_boot=20)
    assert out["undefined_resamples"] == 20 and out["n_boot"] == 20
    assert all(math.isnan(c) for c in out["ci95"])
    ok = r_score_difference(logits, labels, np.array([0, 0, 1, 1]), tau=4.0, n_boot=20)
    assert "undefined_resamples" not in ok
    assert ok["ci95"][0] <= ok["ci95"][1]


class _Tables(HTMLParser):
    """The text of every cell of every table row (header rows included)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _check(excess: float, excess1: float, auroc: float, **extra: Any) -> dict[str, Any]:
    flags = {
        "D1_relation_free": {"flagged": excess < 0.15, "message": "m"},
        "D2_over_confident": {"flagged": False, "message": "m"},
        "D3_uninformative_confidence": {"flagged": None, "message": "m"},
    }
    levels = {
        "universe": {"non_gt_mass": 0.61},
        "domain": {
            "relational_excess": excess,
            "relational_excess_tau1": excess1,
            "tail_entropy": 0.87,
        },
        "instance": {"rho_g_mean": 0.72, "frac_above_0.99": 0.13, "auroc": auroc},
    }
    return {"levels": levels, "flags": flags, **extra}


def test_teacher_check_table_has_one_cell_per_header() -> None:
    gain = {"mean": 0.057, "ci95": [0.05, 0.064], "per_seed": {}}
    vs = {"mean": -0.006, "ci95": [-0.012, 0.0004], "per_seed": {}}
    result = {
        "tau": 4.0,
        "lam": 0.7,
        "held_out_model": "ce",
        "thresholds": {"relational_excess": 0.15},
        "noisy_tail": None,
        "teachers": {
            "teacher": _check(0.491, 0.321, 0.81, kd_gain=gain),
            "label_smoothed": _check(
                0.071, 0.052, 0.66, recipe="label smoothing ε = 0.2", kd_gain=gain, kd_vs_teacher=vs
            ),
        },
    }
    html = TeacherCheckAnalysis().report_section(result, None)  # type: ignore[arg-type]
    header, *rows = _parsed(html)
    assert len(rows) == 2
    assert all(len(r) == len(header) for r in rows)
    cells = [dict(zip(header, r, strict=True)) for r in rows]
    teacher, smoothed = cells
    assert teacher["(b) relational excess at τ"] == "0.491"
    assert teacher["(b) relational excess τ=1"] == "0.321"
    assert teacher["(b) tail entropy at τ"] == "0.870"
    assert teacher["(c) AUROC"] == "0.810"
    assert smoothed["(b) relational excess at τ"] == "0.071"
    assert smoothed["(b) relational excess τ=1"] == "0.052"
    assert smoothed["D1_relation_free"] == "flagged"
    assert teacher["D1_relation_free"] == "ok"
    assert teacher["D3_uninformative_confidence"] == "not checked"
    assert smoothed["KD student − baseline"] == "+0.057 [+0.050, +0.064]"
    assert smoothed["KD student − study teacher's KD student"] == "-0.006 [-0.012, +0.000]"
    assert teacher["KD student − study teacher's KD student"] == "–"


def _parsed(html: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(html)
    return parser.rows
