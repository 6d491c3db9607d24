"""Simulated studies that check the verdict intervals: their false-positive rate when nothing is
there, and their power when something is.

Every design generates the per-seed data one analysis hands to :func:`kdscope.stats.summarise`
(or :func:`kdscope.stats.summarise_crossed`) and runs the very code the analyses run. A null
study has no true effect; its interval must exclude the null in at most 5 % of studies (both
sides together; ``kdscope bench verdicts`` prints the rate beside the nominal 5 %). The same
designs with a stated effect give the power, so that calibration is not bought with uselessly
wide intervals.

Designs (I inputs per seed; u: seed effect, a: input effect shared by every seed, e: noise):

* ``one value per seed``: θ_s = u_s + effect (e.g. matched CKA);
* ``per-input, seed effect``: x_si = u_s + e_si + effect, inputs differ by seed (e.g. knowledge
  points on each seed's effective inputs);
* ``shared inputs, seed × input``: x_si = u_s + a_i + e_si + effect on the same inputs (e.g. a
  per-input agreement gap); a_i has mean 0 over the input population, so a test set's own mean
  of a_i is not an effect;
* ``shared inputs, only 6``: the same with 6 inputs (decision-boundary planes, few triplets);
* ``0/1 differences, shared inputs``: d_si = c¹_si − c²_si of two exchangeable classifiers'
  correctness with input difficulty, seed shifts and an input × method interaction of mean 0
  (accuracy gaps); the effect raises the first classifier's logit;
* ``ratio statistic, shared inputs``: Σ shape / Σ decided of the first model minus the second's
  (shape-bias gap; jackknife pseudo-values carry the input part);
* ``std difference, per-input rows``: std over inputs of the student column minus the
  baseline's (D_std of knowledge points), inputs differ by seed;
* ``win rate over seed pairs``: win indicators of (student seed, independent seed, input)
  against 0.5, crossed student seeds × independent seeds × inputs (Grad-CAM win rate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdscope.stats import summarise, summarise_crossed

Generator = Callable[[np.random.Generator, int, float], dict[str, Any]]


@dataclass(frozen=True)
class Design:
    name: str
    generate: Generator  # (rng, seeds, effect) -> a summary
    effect: float  # the effect at which power is reported
    effect_note: str
    null: float = 0.0


def _one_value(rng: np.random.Generator, k: int, effect: float) -> dict[str, Any]:
    return summarise({s: np.array([rng.normal() + effect]) for s in range(k)})


def _nested(rng: np.random.Generator, k: int, effect: float, n: int = 100) -> dict[str, Any]:
    return summarise({s: rng.normal(0.5 * rng.normal() + effect, 1.0, n) for s in range(k)})


def _shared(rng: np.random.Generator, k: int, effect: float, n: int = 100) -> dict[str, Any]:
    a = rng.normal(0.0, 1.0, n)
    per = {s: 0.3 * rng.normal() + a + rng.normal(0.0, 1.0, n) + effect for s in range(k)}
    return summarise(per, shared_inputs=True)


def _few_shared(rng: np.random.Generator, k: int, effect: float) -> dict[str, Any]:
    return _shared(rng, k, effect, n=6)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _binary(rng: np.random.Generator, k: int, effect: float, n: int = 400) -> dict[str, Any]:
    difficulty = rng.normal(1.0, 1.5, n)
    interaction = rng.normal(0.0, 0.7, n)  # input-specific advantage, mean 0 in the population
    per = {}
    for s in range(k):
        p1 = _sigmoid(difficulty + interaction + 0.3 * rng.normal() + effect)
        p2 = _sigmoid(difficulty - interaction + 0.3 * rng.normal())
        per[s] = (rng.random(n) < p1).astype(float) - (rng.random(n) < p2).astype(float)
    return summarise(per, shared_inputs=True)


def _ratio_gap(rows: np.ndarray) -> np.ndarray:
    first = rows[..., 0].sum(-1) / np.maximum(rows[..., 1].sum(-1), 1)
    second = rows[..., 2].sum(-1) / np.maximum(rows[..., 3].sum(-1), 1)
    return first - second


def _ratio(rng: np.random.Generator, k: int, effect: float, n: int = 200) -> dict[str, Any]:
    cue = rng.normal(0.0, 1.0, n)  # how strongly each input's shape cue shows, shared
    per = {}
    for s in range(k):
        cols = []
        for shift in (effect, 0.0):
            decided = rng.random(n) < 0.8
            shape = decided & (rng.random(n) < _sigmoid(cue + 0.3 * rng.normal() + shift))
            cols += [shape, decided]
        per[s] = np.stack(cols, 1).astype(float)
    return summarise(per, statistic=_ratio_gap, shared_inputs=True)


def _std_gap(rows: np.ndarray) -> np.ndarray:
    return rows[..., 0].std(-1) - rows[..., 1].std(-1)


def _std(rng: np.random.Generator, k: int, effect: float, n: int = 30) -> dict[str, Any]:
    per = {}
    for s in range(k):
        scale = np.exp(0.2 * rng.normal())
        per[s] = np.stack([rng.normal(0, scale + effect, n), rng.normal(0, scale, n)], 1)
    return summarise(per, statistic=_std_gap)


def _wins(rng: np.random.Generator, k: int, effect: float, n: int = 100) -> dict[str, Any]:
    difficulty = rng.normal(0.0, 0.5, n)  # shared by both sides: no advantage in the population
    student = 0.3 * rng.normal(size=(k, 1)) + rng.normal(0.0, 0.3, n) + difficulty + effect
    independent = 0.3 * rng.normal(size=(k, 1)) + rng.normal(0.0, 0.3, n) + difficulty
    s = student[:, None, :] + rng.normal(0.0, 1.0, (k, k, n))
    i = independent[None, :, :] + rng.normal(0.0, 1.0, (k, k, n))
    labels = [f"{a}-{b}" for a in range(k) for b in range(k)]
    return summarise_crossed((s > i).astype(float), labels)


DESIGNS = [
    Design("one value per seed", _one_value, 2.0, "2 × the seed sd"),
    Design("per-input, seed effect", _nested, 1.0, "2 × the seed sd"),
    Design("shared inputs, seed × input", _shared, 0.6, "2 × the seed sd"),
    Design("shared inputs, only 6", _few_shared, 0.6, "2 × the seed sd"),
    Design("0/1 differences, shared inputs", _binary, 0.5, "+0.5 on the logit"),
    Design("ratio statistic, shared inputs", _ratio, 0.8, "+0.8 on the logit"),
    Design("std difference, per-input rows", _std, 0.5, "+0.5 on the sd"),
    Design("win rate over seed pairs", _wins, 0.4, "+0.4 on the similarity", null=0.5),
]


def simulate(
    designs: list[Design] | None = None,
    seeds: tuple[int, ...] = (2, 3, 5, 10),
    studies: int = 4000,
    rng_seed: int = 0,
) -> list[dict[str, object]]:
    """One row per (design, seed count): the false-positive rate of the 95 % interval over
    ``studies`` null studies (both sides), the nominal 0.05, the one-sided rates, the power at
    the design's stated effect, and whether the rate is within nominal + 0.01."""
    rows: list[dict[str, object]] = []
    for design in designs or DESIGNS:
        for k in seeds:
            rng = np.random.default_rng([rng_seed, k, len(rows)])
            above = below = power = 0
            for _ in range(studies):
                lo, hi = design.generate(rng, k, 0.0)["ci95"]
                above += lo > design.null
                below += hi < design.null
                lo, _ = design.generate(rng, k, design.effect)["ci95"]
                power += lo > design.null
            fpr = (above + below) / studies
            rows.append(
                {
                    "seeds": k,
                    "design": design.name,
                    "false_positive_rate": fpr,
                    "nominal": 0.05,
                    "above": above / studies,
                    "below": below / studies,
                    "power": power / studies,
                    "effect": design.effect_note,
                    "calibrated": fpr <= 0.05 + 0.01,
                }
            )
    return rows
