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
practically absent. The words per family: :func:`directional` (a hypothesis with an expected
direction: holds / does not hold), :func:`comparison` (better / worse) and :func:`transfer`
(the property-transfer rule with its control).
"""

from __future__ import annotations

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


def css(verdict: str) -> str:
    """The report's colour class of a verdict word."""
    if verdict in ("better", HOLDS, TRANSFERS, "reproduced"):
        return "better"
    if verdict in ("worse", DOES_NOT_HOLD, CONFOUNDED, AWAY, "not reproduced"):
        return "worse"
    return "inconclusive"
