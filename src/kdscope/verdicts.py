"""One rule that turns an interval into a verdict, and the words each kind of verdict uses.

Every verdict in kdscope starts from a summary of :func:`kdscope.stats.summarise` (a mean with
a 95 % and a 90 % t interval over seeds) and :func:`classify`:

* **too few seeds**: fewer than :data:`kdscope.stats.MIN_SEEDS` seeds, so no interval exists;
* **equivalent**: with an equivalence ``margin`` δ, the 90 % interval lies inside
  [null − δ, null + δ]: both one-sided 5 % tests (TOST) reject an effect of size δ or more.
  An equivalence claim is the only way kdscope concludes "no effect"; a wide interval that
  merely contains the null is *inconclusive*;
* **above** / **below**: the 95 % interval lies entirely above / below the null;
* **inconclusive** otherwise.

Equivalence is checked first: an effect that is significant but smaller than the margin is
practically absent. Every verdict word and every rule that combines verdicts lives here; the
analyses decide which summaries feed which rule. The families:

* :func:`directional`: a hypothesis with an expected direction: **holds** / **does not hold**;
  for the knowledge-point hypotheses, :func:`chance_guard` (**model at chance**) on each metric
  and :func:`hypothesis` over a hypothesis' metrics (adds **partly supported**);
* :func:`comparison`: a difference a − b: **better** / **worse** (/ **equivalent**);
* :func:`transfer`: the property-transfer rule with its controls (**transfers**, **no transfer**,
  **away from the teacher**, **confounded**, **control inconclusive**, **no control**);
* :func:`reproduction`: a paper's claim with an expected direction: **reproduced** / **not
  reproduced**; :func:`all_reproduced`, :func:`reproduced_beyond` (a claim that must also beat a
  control) and :func:`from_checks` (a claim read from pass/fail checks without an interval)
  combine them; **not measured** when the claim's inputs are missing;
* :func:`claim_status`: a property-transfer verdict scored against the paper's expectation
  (**reproduced** / **not reproduced** / **not scored**, with a reason) and :func:`combine_statuses`
  over a finding's rows (adds **mixed**).

Each family also passes through **inconclusive** and **too few seeds** from :func:`classify`.
:func:`css` gives the report's colour class of every word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from kdscope.stats import MIN_SEEDS

ABOVE, BELOW, EQUIVALENT, INCONCLUSIVE, TOO_FEW_SEEDS = (
    "above",
    "below",
    "equivalent",
    "inconclusive",
    "too few seeds",
)
Direction = Literal["higher", "lower"]


def classify(summary: dict[str, Any] | None, null: float = 0.0, margin: float | None = None) -> str:
    """above / below / equivalent / inconclusive / too few seeds for a summary's intervals
    (see the module docstring). A missing summary or NaN interval with enough seeds (an
    undefined statistic) is inconclusive."""
    if summary is None:
        return INCONCLUSIVE
    if summary.get("n_seeds", MIN_SEEDS) < MIN_SEEDS:
        return TOO_FEW_SEEDS
    lo, hi = summary["ci95"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return INCONCLUSIVE
    if margin is not None:
        lo90, hi90 = summary.get("ci90", summary["ci95"])
        if null - margin < lo90 and hi90 < null + margin:
            return EQUIVALENT
    if lo > null:
        return ABOVE
    if hi < null:
        return BELOW
    return INCONCLUSIVE


HOLDS, DOES_NOT_HOLD = "holds", "does not hold"


def directional(summary: dict[str, Any] | None, expected: Direction, null: float = 0.0) -> str:
    """holds when the interval excludes ``null`` in the ``expected`` direction, does not hold
    when it excludes it in the other, else inconclusive (or too few seeds)."""
    c = classify(summary, null)
    if c in (ABOVE, BELOW):
        return HOLDS if (c == ABOVE) == (expected == "higher") else DOES_NOT_HOLD
    return c


def comparison(summary: dict[str, Any] | None, margin: float | None = None) -> str:
    """better / worse / equivalent / inconclusive / too few seeds for a difference a − b."""
    c = classify(summary, 0.0, margin)
    return {ABOVE: "better", BELOW: "worse"}.get(c, c)


TRANSFERS, NO_TRANSFER, AWAY, CONFOUNDED, CONTROL_INCONCLUSIVE, NO_CONTROL = (
    "transfers",
    "no transfer",
    "away from the teacher",
    "confounded",
    "control inconclusive",
    "no control",
)


def transfer(
    gap: dict[str, Any] | None,
    control_differences: list[dict[str, Any]],
    margin: float,
    null: float = 0.0,
) -> str:
    """The property-transfer verdict of a teacher-ward gap (distilled − independent, oriented so
    that toward the teacher is up), given the intervals of the distilled student's effect beyond
    each control (e.g. distilled − soft-label control, paired by seed: the distilled gap minus
    the control's gap):

    * **no transfer**: the gap is equivalent to ``null`` within ± ``margin`` (TOST, 90 %);
    * when the gap lies above ``null``: **transfers** if every control difference lies above 0;
      **confounded** if some control difference is equivalent to 0 within ± ``margin`` or lies
      below it (that control shows the effect as well); **control inconclusive** if a control
      difference is too uncertain to tell; **no control** if no control with enough seeds was
      measured;
    * **away from the teacher**: the gap lies below ``null``;
    * **inconclusive** / **too few seeds** otherwise.
    """
    c = classify(gap, null, margin)
    if c == EQUIVALENT:
        return NO_TRANSFER
    if c == BELOW:
        return AWAY
    if c != ABOVE:
        return c
    beyond = [classify(d, 0.0, margin) for d in control_differences]
    beyond = [d for d in beyond if d != TOO_FEW_SEEDS]
    if not beyond:
        return NO_CONTROL
    if any(d in (EQUIVALENT, BELOW) for d in beyond):
        return CONFOUNDED
    return TRANSFERS if all(d == ABOVE for d in beyond) else CONTROL_INCONCLUSIVE


# --------------------------------------------------------------------------------------------------
# knowledge-point hypotheses

AT_CHANCE, PARTLY_SUPPORTED = "model at chance", "partly supported"


def chance_guard(verdict: str, at_chance: Mapping[str, list[int]] | bool) -> str:
    """``verdict``, or **model at chance** when a compared network has seeds at chance level
    (``at_chance``: the seeds at chance per network, empty when none, or a flag)."""
    return AT_CHANCE if at_chance else verdict


def hypothesis(verdicts: list[str]) -> str:
    """One hypothesis from its metrics' verdicts (:func:`directional` through
    :func:`chance_guard`): too few seeds / model at chance if any metric reads so (they share
    their seeds and networks); not measured if no metric was (one checkpoint: no trajectory);
    holds if every metric holds; does not hold if any contradicts;
    partly supported if some hold; inconclusive otherwise."""
    for guard in (TOO_FEW_SEEDS, AT_CHANCE):
        if guard in verdicts:
            return guard
    if all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == DOES_NOT_HOLD for v in verdicts):
        return DOES_NOT_HOLD
    return PARTLY_SUPPORTED if HOLDS in verdicts else INCONCLUSIVE


# --------------------------------------------------------------------------------------------------
# a paper's claims

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"


def reproduction(
    summary: dict[str, Any] | None, expected: Direction = "higher", null: float = 0.0
) -> str:
    """A claimed increase (``expected="higher"``) or decrease (``"lower"``) of a statistic:
    reproduced when the 95 % interval excludes ``null`` in the expected direction, not
    reproduced when it excludes it in the other, else inconclusive (or too few seeds)."""
    v = directional(summary, expected, null)
    return {HOLDS: REPRODUCED, DOES_NOT_HOLD: NOT_REPRODUCED}.get(v, v)


def all_reproduced(verdicts: Iterable[str]) -> str:
    """A claim made of parts: reproduced when every part is, not reproduced when any part is
    not, else inconclusive."""
    verdicts = list(verdicts)
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE


def reproduced_beyond(summary: dict[str, Any] | None, contrast: dict[str, Any] | None) -> str:
    """:func:`reproduction` of ``summary``; when a control was measured (``contrast``: the
    statistic minus the control's), a "reproduced" also needs the contrast reproduced, else
    inconclusive (the control shows it as much)."""
    verdict = reproduction(summary)
    if verdict == REPRODUCED and contrast is not None:
        return REPRODUCED if reproduction(contrast) == REPRODUCED else INCONCLUSIVE
    return verdict


def from_checks(checks: Iterable[bool | None]) -> str:
    """A claim read from pass/fail checks without an interval: not reproduced when any check
    failed, reproduced when every one passed, inconclusive when some could not be evaluated
    (None) and none failed."""
    checks = list(checks)
    known = [bool(c) for c in checks if c is not None]
    if not all(known):
        return NOT_REPRODUCED
    return REPRODUCED if len(known) == len(checks) else INCONCLUSIVE


# --------------------------------------------------------------------------------------------------
# property-transfer findings scored against the paper

MIXED, NOT_SCORED = "mixed", "not scored"


def claim_status(expected: str, verdict: str, premise: str = "met") -> tuple[str, str]:
    """(status, reason) of one :func:`transfer` verdict against the paper's expectation
    ``expected`` ("yes": transfer found, "no": none found, anything else: weak or not reported):

    * "yes": reproduced when the verdict is *transfers*; not reproduced when it is *no
      transfer*, *away from the teacher* or *confounded*;
    * "no": reproduced only when equivalence was shown (*no transfer*); not reproduced when the
      verdict is *transfers*; *away* / *confounded* are not scored (equivalence not shown);
    * not scored otherwise, with the reason: a weak or absent expectation, the premise
      ``"unmet"``, or the verdict itself (inconclusive, too few seeds, model at chance, …).
    """
    if expected not in ("yes", "no"):
        return NOT_SCORED, "the paper's effect is weak or not reported"
    if premise == "unmet":
        return NOT_SCORED, "premise unmet: not more accurate than the independent student"
    if expected == "yes":
        if verdict == TRANSFERS:
            return REPRODUCED, ""
        if verdict in (NO_TRANSFER, AWAY, CONFOUNDED):
            return NOT_REPRODUCED, verdict
    else:
        if verdict == NO_TRANSFER:
            return REPRODUCED, "equivalence shown"
        if verdict == TRANSFERS:
            return NOT_REPRODUCED, ""
        if verdict in (AWAY, CONFOUNDED):
            return NOT_SCORED, f"{verdict}: equivalence not shown"
    return NOT_SCORED, verdict


def combine_statuses(statuses: Iterable[str]) -> str:
    """One finding's status from its rows' :func:`claim_status` (the scored ones): reproduced
    when every scored row is, not reproduced when every one is not, mixed otherwise; not scored
    without a scored row."""
    scored = [s for s in statuses if s != NOT_SCORED]
    if not scored:
        return NOT_SCORED
    if all(s == REPRODUCED for s in scored):
        return REPRODUCED
    if all(s == NOT_REPRODUCED for s in scored):
        return NOT_REPRODUCED
    return MIXED


# --------------------------------------------------------------------------------------------------
# report colours

#: the report's colour class of every verdict word: "better" (the claim or effect is there),
#: "worse" (contradicted) or "inconclusive" (neither)
CSS: dict[str, str] = {
    **dict.fromkeys(("better", HOLDS, TRANSFERS, REPRODUCED), "better"),
    **dict.fromkeys(("worse", DOES_NOT_HOLD, CONFOUNDED, AWAY, NOT_REPRODUCED), "worse"),
    **dict.fromkeys(
        (
            ABOVE,
            BELOW,
            EQUIVALENT,
            INCONCLUSIVE,
            TOO_FEW_SEEDS,
            NO_TRANSFER,
            CONTROL_INCONCLUSIVE,
            NO_CONTROL,
            AT_CHANCE,
            PARTLY_SUPPORTED,
            NOT_MEASURED,
            MIXED,
            NOT_SCORED,
        ),
        "inconclusive",
    ),
}


def css(verdict: str, default: str = "inconclusive") -> str:
    """The report's colour class of a verdict word (:data:`CSS`); ``default`` for anything else
    (e.g. a placeholder such as "–")."""
    return CSS.get(verdict, default)
