"""kdscope.verdicts: every rule that turns intervals into verdicts or combines verdicts, on
hand-built summaries (dicts with "ci95", "ci90", "n_seeds")."""

from __future__ import annotations

from typing import Any

import pytest

from kdscope.verdicts import (
    CSS,
    all_reproduced,
    chance_guard,
    claim_status,
    combine_statuses,
    css,
    directional,
    from_checks,
    hypothesis,
    reproduced_beyond,
    reproduction,
    transfer,
)

NAN = float("nan")


def s(lo: float, hi: float, n: int = 5) -> dict[str, Any]:
    """A summary with the 95 % interval [lo, hi] (and the same 90 % one) over n seeds."""
    return {"mean": (lo + hi) / 2, "ci95": [lo, hi], "ci90": [lo, hi], "n_seeds": n}


# --------------------------------------------------------------------------------------------------
# knowledge-point hypotheses


def test_metric_verdicts_need_an_interval_over_seeds() -> None:
    def diff(ci: list[float], n_seeds: int = 3) -> dict:
        return {"ci95": ci, "ci90": ci, "n_seeds": n_seeds}

    assert directional(diff([0.1, 0.5]), "higher") == "holds"
    assert directional(diff([-0.5, -0.1]), "higher") == "does not hold"
    assert directional(diff([-0.5, -0.1]), "lower") == "holds"
    assert directional(diff([0.1, 0.5]), "lower") == "does not hold"
    assert directional(diff([-0.1, 0.5]), "higher") == "inconclusive"
    assert directional(diff([0.0, 0.5]), "higher") == "inconclusive"  # must exclude 0
    one_seed = diff([float("nan"), float("nan")], n_seeds=1)
    assert directional(one_seed, "higher") == "too few seeds"
    assert hypothesis(["too few seeds", "holds"]) == "too few seeds"
    assert chance_guard("holds", {"baseline": [1]}) == "model at chance"
    assert chance_guard("holds", {}) == "holds"
    assert hypothesis(["model at chance", "model at chance"]) == "model at chance"


def test_hypothesis_verdicts() -> None:
    assert hypothesis(["holds", "holds"]) == "holds"
    assert hypothesis(["holds", "inconclusive"]) == "partly supported"
    assert hypothesis(["holds", "does not hold"]) == "does not hold"
    assert hypothesis(["inconclusive"]) == "inconclusive"


# --------------------------------------------------------------------------------------------------
# a paper's claims


def test_reproduction_in_either_direction() -> None:
    assert reproduction(s(0.01, 0.2)) == "reproduced"
    assert reproduction(s(-0.2, -0.01)) == "not reproduced"
    assert reproduction(s(-0.1, 0.1)) == "inconclusive"
    assert reproduction(s(0.0, 0.1)) == "inconclusive"  # must exclude 0
    assert reproduction(s(0.01, 0.2, n=1)) == "too few seeds"
    assert reproduction(s(NAN, NAN)) == "inconclusive"
    assert reproduction(None) == "inconclusive"
    assert reproduction(s(-0.2, -0.01), "lower") == "reproduced"
    assert reproduction(s(0.01, 0.2), "lower") == "not reproduced"
    assert reproduction(s(-0.1, 0.1), "lower") == "inconclusive"
    assert reproduction(s(0.6, 0.7), null=0.5) == "reproduced"


def test_all_reproduced() -> None:
    assert all_reproduced(["reproduced", "reproduced"]) == "reproduced"
    assert all_reproduced(["reproduced", "inconclusive"]) == "inconclusive"
    assert all_reproduced(["reproduced", "too few seeds"]) == "inconclusive"
    assert all_reproduced(["inconclusive", "not reproduced", "reproduced"]) == "not reproduced"
    assert all_reproduced(iter(["reproduced"])) == "reproduced"


def test_reproduced_beyond_a_control() -> None:
    up, down, wide = s(0.1, 0.3), s(-0.3, -0.1), s(-0.1, 0.2)
    assert reproduced_beyond(up, None) == "reproduced"  # no control measured
    assert reproduced_beyond(up, up) == "reproduced"
    assert reproduced_beyond(up, wide) == "inconclusive"  # the control shows it as much
    assert reproduced_beyond(up, down) == "inconclusive"
    assert reproduced_beyond(down, up) == "not reproduced"  # the contrast never rescues it
    assert reproduced_beyond(wide, up) == "inconclusive"
    assert reproduced_beyond(s(0.1, 0.3, n=1), up) == "too few seeds"


def test_from_checks() -> None:
    assert from_checks([True, True]) == "reproduced"
    assert from_checks([True, False]) == "not reproduced"
    assert from_checks([None, False]) == "not reproduced"
    assert from_checks([None, True]) == "inconclusive"
    assert from_checks([True, 0.3 > 0.2]) == "reproduced"


# --------------------------------------------------------------------------------------------------
# property-transfer findings scored against the paper


def test_claim_status_rules() -> None:
    def st(expected: str, verdict: str, premise: str = "met") -> str:
        return claim_status(expected, verdict, premise)[0]

    assert st("yes", "transfers") == "reproduced"
    assert st("yes", "no transfer") == "not reproduced"
    assert st("yes", "confounded") == "not reproduced"
    assert st("yes", "away from the teacher") == "not reproduced"
    assert st("no", "no transfer") == "reproduced"  # "no transfer" means equivalence was shown
    assert st("no", "transfers") == "not reproduced"
    # a wide interval around 0 is not evidence of no transfer: never scored reproduced
    for verdict in ("inconclusive", "too few seeds", "confounded", "away from the teacher"):
        assert st("no", verdict) == "not scored"
    for verdict in (
        "inconclusive",
        "control inconclusive",
        "no control",
        "model at chance",
        "too few seeds",
    ):
        assert st("yes", verdict) == "not scored"
    assert st("weak", "transfers") == "not scored"
    assert st("yes", "transfers", premise="unmet") == "not scored"
    assert "premise" in claim_status("yes", "transfers", "unmet")[1]


def test_no_transfer_rows_need_an_equivalence_test() -> None:
    """End to end through the verdict rule: a gap whose interval merely contains 0 cannot make
    an expected "no transfer" row reproduced; only a 90 % interval inside ±margin can."""
    wide = {"mean": 0.01, "n_seeds": 3, "ci95": [-0.2, 0.22], "ci90": [-0.15, 0.17]}
    tight = {"mean": 0.01, "n_seeds": 3, "ci95": [-0.025, 0.045], "ci90": [-0.02, 0.04]}
    assert claim_status("no", transfer(wide, [], margin=0.05))[0] == "not scored"
    assert claim_status("no", transfer(tight, [], margin=0.05))[0] == "reproduced"
    assert claim_status("no", transfer(tight, [], margin=0.03))[0] == "not scored"  # 0.04 > 0.03


def test_combine_statuses() -> None:
    assert combine_statuses(["reproduced", "not scored", "reproduced"]) == "reproduced"
    assert combine_statuses(["not reproduced", "not scored"]) == "not reproduced"
    assert combine_statuses(["reproduced", "not reproduced"]) == "mixed"
    assert combine_statuses(["not scored"]) == "not scored"
    assert combine_statuses([]) == "not scored"


# --------------------------------------------------------------------------------------------------
# report colours


@pytest.mark.parametrize(
    ("verdict", "cls"),
    [
        ("better", "better"),
        ("holds", "better"),
        ("transfers", "better"),
        ("reproduced", "better"),
        ("worse", "worse"),
        ("does not hold", "worse"),
        ("confounded", "worse"),
        ("away from the teacher", "worse"),
        ("not reproduced", "worse"),
        ("equivalent", "inconclusive"),
        ("inconclusive", "inconclusive"),
        ("too few seeds", "inconclusive"),
        ("no transfer", "inconclusive"),
        ("control inconclusive", "inconclusive"),
        ("no control", "inconclusive"),
        ("model at chance", "inconclusive"),
        ("partly supported", "inconclusive"),
        ("not measured", "inconclusive"),
        ("mixed", "inconclusive"),
        ("not scored", "inconclusive"),
    ],
)
def test_css_of_every_verdict_word(verdict: str, cls: str) -> None:
    assert css(verdict) == cls
    assert css(verdict, default="note") == cls


def test_css_default_for_anything_else() -> None:
    assert css("–") == "inconclusive"
    assert css("–", default="note") == "note"
    assert set(CSS.values()) == {"better", "worse", "inconclusive"}
