"""Intervals with training seeds as the unit of replication.

A study trains every model with a few seeds (typically 3 to 5) and measures it on many inputs.
The quantity a verdict is about is a difference between methods that holds *for a new training
seed*; inputs are many, seeds are few, so the seed-to-seed variance dominates the uncertainty
and must be estimated from the seeds themselves. A percentile bootstrap over 3 seeds cannot do
that (it resamples 3 values and behaves like a z-interval with a downward-biased variance: in
null simulations its 95 % interval excluded 0 on one side in 11-12 % of studies instead of
2.5 %). kdscope therefore uses Student-t intervals built on the per-seed values:

* **Seeds only** (one value per seed, or inputs that differ from seed to seed): with per-seed
  statistics θ_1..θ_k, the estimate is their mean, SE² = s²/k with the sample variance s², and
  the interval is mean ± t_{k−1} · SE. Within-seed input noise is part of each θ_s, so it is
  accounted for.
* **Seeds × shared inputs** (every seed is measured on the same inputs, paired input by input):
  the input-specific part of the effect is common to every seed, so the θ_s are correlated and
  s²/k misses it. The values x_{s,i} (the per-input terms of the statistic: the values
  themselves for a mean, jackknife pseudo-values otherwise) form a crossed random-effects
  design, and the variance of the grand mean is estimated from the ANOVA mean squares,

      Var̂(x̄) = (MS_seed + MS_input − MS_seed×input) / (k·I)

  with Satterthwaite's degrees of freedom (:func:`crossed_estimate`, which handles any number of
  crossed factors, e.g. student seed × independent seed × input for win rates over seed pairs).

Both are exact (Student t) when the per-seed values are normal and conservative-to-calibrated
otherwise; ``kdscope bench verdicts`` simulates null studies for 2, 3, 5 and 10 seeds and prints
the false-positive rate of each design next to the nominal one, and the power at a stated
effect. Below :data:`MIN_SEEDS` seeds the seed variance cannot be estimated: the interval is
undefined (NaN) and every verdict reads "too few seeds".

Undefined values are never dropped silently: a seed whose statistic is undefined (NaN, e.g. a
correlation of constant values) is left out of the mean and the interval *and* listed under
``undefined_seeds``; NaN inputs of a mean are left out and counted under ``excluded_inputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations
from math import prod
from typing import Any

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]

MIN_SEEDS = 2  # the fewest seeds from which a seed-to-seed variance can be estimated
LEVEL = 0.95  # the level of ``ci95``; ``ci90`` (two one-sided 5 % tests) serves equivalence tests
_LOO_BUDGET = 2_000_000  # floats per chunk of leave-one-out rows in :func:`pseudo_values`


def safe_divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den elementwise (broadcast), ``empty`` where den == 0, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(frozen=True)
class Estimate:
    """A mean and the parts of its variance, each with the degrees of freedom of its estimate.

    The interval is mean ± sqrt(Σ_j t²_{df_j} · v_j): each part is scaled by its own Student-t
    quantile (a modified-large-sample combination). With one part this is the ordinary t
    interval; a part estimated from many inputs contributes about z² · v, a part estimated from
    a few seeds t²_{k−1} · v, so a small seed count is never hidden by many inputs.
    """

    mean: float
    parts: tuple[tuple[float, float], ...] = ()  # (variance, df)

    @property
    def se(self) -> float:
        if not self.parts:
            return float("nan")
        return float(np.sqrt(sum(v for v, _ in self.parts)))

    @property
    def df(self) -> float:
        """The degrees of freedom of the seed part (the first), which governs the width."""
        return float(self.parts[0][1]) if self.parts else 0.0

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """mean ± sqrt(Σ_j t_{df_j}((1 + level)/2)² · v_j); NaN when undefined."""
        if not self.parts or not np.isfinite(self.mean):
            return float("nan"), float("nan")
        from scipy import stats as scipy_stats  # here: importing it costs a second

        q = (1 + level) / 2
        half = np.sqrt(sum(float(scipy_stats.t.ppf(q, d)) ** 2 * v for v, d in self.parts if v > 0))
        return self.mean - float(half), self.mean + float(half)


def _effect(x: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """The ANOVA effect of the factor set ``factors`` of a crossed array: the inclusion–exclusion
    sum Σ_{B ⊆ A} (−1)^{|A|−|B|} x̄_B of the marginal means x̄_B (averaged over the other axes)."""
    out = np.zeros([x.shape[a] if a in factors else 1 for a in range(x.ndim)])
    for r in range(len(factors) + 1):
        for sub in combinations(factors, r):
            others = tuple(a for a in range(x.ndim) if a not in sub)
            out = out + (-1) ** (len(factors) - r) * x.mean(axis=others, keepdims=True)
    return out


def _mean_squares(x: np.ndarray) -> dict[tuple[int, ...], tuple[float, int]]:
    """MS_A and its df for every non-empty factor set A of the axes of size > 1:
    SS_A = N / Π_{f∈A} n_f · Σ effect_A², df_A = Π_{f∈A} (n_f − 1)."""
    axes = tuple(a for a in range(x.ndim) if x.shape[a] > 1)
    out = {}
    for r in range(1, len(axes) + 1):
        for factors in combinations(axes, r):
            ss = (
                x.size / prod(x.shape[a] for a in factors) * float((_effect(x, factors) ** 2).sum())
            )
            df = prod(x.shape[a] - 1 for a in factors)
            out[factors] = (ss / df, df)
    return out


def _signed_sum(
    ms: dict[tuple[int, ...], tuple[float, int]], family: list[tuple[int, ...]], n: int
) -> tuple[float, float, list[tuple[float, int]]]:
    """Σ_{A ∈ family} (−1)^{|A|+1} MS_A / N, its degrees of freedom and the signed terms.

    The df is Satterthwaite's (Σ c_A MS_A)² / Σ (c_A MS_A)²/df_A, but never below the smallest df
    of a positive term: when a subtracted mean square nearly cancels the positive ones,
    Satterthwaite's df collapses towards 0 and its t quantile explodes, although the absolute
    uncertainty of the (then small) difference is bounded by that of the positive terms."""
    terms = [((-1) ** (len(a) + 1) * ms[a][0] / n, ms[a][1]) for a in family]
    var = sum(v for v, _ in terms)
    den = sum(v**2 / d for v, d in terms)
    floor = min(d for v, d in terms if v > 0) if any(v > 0 for v, _ in terms) else 0
    return var, max(var**2 / den if den > 0 else 0.0, floor), terms


def seed_part(cells: np.ndarray) -> tuple[float, float]:
    """(variance, df) of the grand mean of per-seed values (one axis per crossed seed factor,
    e.g. (student seed, independent seed)): the crossed estimator over the seed factors. One
    axis gives s²/k with k − 1 df. When the signed sum falls below its largest positive term
    MS_A/N (whose expectation is smaller than the sum's: a negative variance-component estimate)
    that term is used with its own df. (NaN, 0) without replication."""
    cells = np.asarray(cells, dtype=np.float64)
    ms = _mean_squares(cells)
    if not ms:
        return float("nan"), 0.0
    var, df, terms = _signed_sum(ms, list(ms), cells.size)
    best = max(terms)
    return best if var <= best[0] else (var, df)


def input_part(x: np.ndarray) -> tuple[float, float]:
    """(variance, df) of the input-specific effect shared by every seed in the grand mean of a
    crossed array whose last axis is the inputs: the signed sum of the crossed estimator over
    the factor sets that contain the inputs axis, e.g. (MS_input − MS_seed×input)/N for seeds ×
    inputs; (0, 0) when it is estimated negative (the component is absent)."""
    x = np.asarray(x, dtype=np.float64)
    ms = _mean_squares(x)
    last = x.ndim - 1
    family = [a for a in ms if last in a]
    if not family:
        return 0.0, 0.0
    var, df, _ = _signed_sum(ms, family, x.size)
    return (var, df) if var > 0 else (0.0, 0.0)


def crossed_estimate(x: np.ndarray) -> Estimate:
    """Grand mean of a fully crossed random-effects array whose leading axes are seed factors and
    whose last axis is the inputs shared by every seed (one value per cell), with its variance.

    With factor sizes n_f, N = Π n_f and mean squares MS_A of every non-empty factor set A,
    E[MS_A] = Σ_{B ⊇ A} c_B where c_B = N σ²_B / Π_{f∈B} n_f, and Var(x̄) = Σ_B c_B / N. Möbius
    inversion over the factor sets gives the unbiased estimator

        Var̂(x̄) = (1/N) Σ_{A ≠ ∅} (−1)^{|A|+1} MS_A,

    e.g. (MS_seed + MS_input − MS_seed×input)/N for seeds × inputs. It splits into the **seed
    part** (the sets without the inputs axis; it equals the estimator on the seed cells' means,
    s²/k with k − 1 df for one seed axis; :func:`seed_part`) and the **input part** (the sets
    with it; :func:`input_part`), each with its own df; :class:`Estimate` combines them.
    """
    x = np.asarray(x, dtype=np.float64)
    seed = seed_part(x.mean(-1))
    if seed[1] <= 0:
        return Estimate(float(x.mean()))
    rest = input_part(x)
    return Estimate(float(x.mean()), (seed, rest) if rest[0] > 0 else (seed,))


def _per_seed_statistic(rows: np.ndarray, statistic: Statistic | None) -> float:
    if statistic is None:
        return float(rows.mean()) if rows.ndim == 1 else float(rows[:, 0].mean())
    return float(statistic(rows[None])[0])


def pseudo_values(rows: np.ndarray, statistic: Statistic | None) -> np.ndarray:
    """Jackknife pseudo-values ψ_i = I·θ − (I − 1)·θ_(−i) of a statistic over the rows (inputs)
    of one seed: per-input terms whose mean is the (bias-corrected) statistic and whose spread
    over inputs is its input-sampling variance. For the mean they are the values themselves."""
    if statistic is None:
        return rows if rows.ndim == 1 else rows[:, 0]
    n = len(rows)
    theta = float(statistic(rows[None])[0])
    width = int(np.prod(rows.shape[1:], dtype=np.int64)) or 1
    chunk = max(1, _LOO_BUDGET // max(1, n * width))
    drop = np.arange(n - 1)[None, :]
    out = np.empty(n)
    for start in range(0, n, chunk):
        left_out = np.arange(start, min(n, start + chunk))[:, None]
        index = drop + (drop >= left_out)  # every row but the left-out one
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(left_out)] = statistic(rows[index])
    return n * theta - (n - 1) * out


def summarise(
    per_seed: Mapping[int, np.ndarray],
    statistic: Statistic | None = None,
    shared_inputs: bool = False,
) -> dict[str, Any]:
    """Per-seed values of ``statistic`` over each seed's inputs, their mean, sample std and
    t intervals with seeds as the unit of replication (see the module docstring).

    ``per_seed`` maps a seed to its inputs: an array (I,) of values, or rows (I, C) for a
    ``statistic`` mapping rows (..., I, C) to (...) (default: the mean of the values, of the first
    column for rows). ``shared_inputs``: every seed holds the same inputs in the same order
    (paired input by input), so the input-specific part of the effect is common to all seeds
    and enters the variance through the crossed design seeds × inputs.

    Returns ``per_seed`` (str(seed) → value; NaN where undefined), ``mean``, ``std`` (over the
    defined seeds, ddof 1), ``n_seeds`` (defined seeds), ``se``, ``df``, ``ci95``, ``ci90``,
    ``design`` ("seeds" or "seeds × inputs") and, when any, ``undefined_seeds`` and
    ``excluded_inputs``. With fewer than :data:`MIN_SEEDS` defined seeds the intervals are NaN.
    """
    seeds = sorted(s for s in per_seed if len(per_seed[s]))  # a seed with no inputs says nothing
    rows = {s: np.asarray(per_seed[s], dtype=np.float64) for s in seeds}
    excluded = 0
    if statistic is None:  # NaN inputs of a mean: left out and counted
        if shared_inputs and seeds:
            keep = np.all([~np.isnan(_first(rows[s])) for s in seeds], axis=0)
            excluded = int((~keep).sum()) * len(seeds)
            rows = {s: r[keep] for s, r in rows.items()}
        else:
            excluded = sum(int(np.isnan(_first(r)).sum()) for r in rows.values())
            rows = {s: r[~np.isnan(_first(r))] for s, r in rows.items()}
        seeds = [s for s in seeds if len(rows[s])]
    values = {s: _per_seed_statistic(rows[s], statistic) for s in seeds}
    defined = [s for s in seeds if np.isfinite(values[s])]
    out: dict[str, Any] = {
        "per_seed": {str(s): values.get(s, float("nan")) for s in sorted(per_seed)},
        **_inference(rows, values, defined, statistic, shared_inputs),
    }
    undefined = [s for s in seeds if s not in defined]
    if undefined:
        out["undefined_seeds"] = undefined
    if excluded:
        out["excluded_inputs"] = excluded
    return out


def _first(r: np.ndarray) -> np.ndarray:
    return r if r.ndim == 1 else r[:, 0]


def _inference(
    rows: dict[int, np.ndarray],
    values: dict[int, float],
    defined: list[int],
    statistic: Statistic | None,
    shared_inputs: bool,
) -> dict[str, Any]:
    theta = np.array([values[s] for s in defined])
    mean = float(theta.mean()) if len(theta) else float("nan")
    std = float(theta.std(ddof=1)) if len(theta) > 1 else float("nan")
    design = "seeds"
    est = Estimate(mean)
    if len(defined) >= MIN_SEEDS:
        parts = [seed_part(theta)]
        if (
            shared_inputs
            and len({len(rows[s]) for s in defined}) == 1
            and len(rows[defined[0]]) > 1
        ):
            psi = np.stack([pseudo_values(rows[s], statistic) for s in defined])
            if np.isfinite(psi).all():
                design = "seeds × inputs"
                rest = input_part(psi)
                parts += [rest] if rest[0] > 0 else []
        est = Estimate(mean, tuple(parts))
    return {
        "mean": mean,
        "std": std,
        "n_seeds": len(defined),
        "se": est.se,
        "df": est.df,
        "ci95": list(est.interval(LEVEL)),
        "ci90": list(est.interval(0.90)),
        "design": design,
    }


def summarise_crossed(x: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """The summary of :func:`summarise` for values on a crossed grid of seeds and inputs, e.g.
    win indicators x[i, j, n] of (student seed i, independent seed j, input n): the grand mean,
    the mean of every seed cell (``per_seed``, keyed by ``labels`` in C order, e.g. "0-1"), and
    the interval of :func:`crossed_estimate` over every axis. Each seed axis needs
    :data:`MIN_SEEDS` seeds, else the interval is NaN."""
    x = np.asarray(x, dtype=np.float64)
    seed_axes = x.shape[:-1]
    est = crossed_estimate(x)
    if min(seed_axes) < MIN_SEEDS:
        est = Estimate(est.mean)
    per_cell = x.reshape(len(labels), -1).mean(1)
    return {
        "per_seed": dict(zip(labels, map(float, per_cell), strict=True)),
        "mean": est.mean,
        "std": float(per_cell.std(ddof=1)) if len(per_cell) > 1 else float("nan"),
        "n_seeds": int(min(seed_axes)),
        "se": est.se,
        "df": est.df,
        "ci95": list(est.interval(LEVEL)),
        "ci90": list(est.interval(0.90)),
        "design": " × ".join(["seeds"] * len(seed_axes) + ["inputs"]),
    }


def pearson_statistic(rows: np.ndarray) -> np.ndarray:
    """Pearson correlation of the two columns of ``rows`` (..., I, 2) over the inputs axis, for
    :func:`summarise`; NaN where a column is constant."""
    x, y = rows[..., 0], rows[..., 1]
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)
