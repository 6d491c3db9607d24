"""Intervals for per-seed, per-input measurements: hierarchical bootstrap (seeds, then inputs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]


def safe_divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """num / den elementwise (broadcast), ``empty`` where den == 0, without warnings."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mean_of_first(resampled: np.ndarray) -> np.ndarray:
    return resampled.reshape(*resampled.shape[:3], -1)[..., 0].mean(-1)


MAX_DISTINCT = 16  # rows with at most this many distinct values take the multinomial fast path


def _inner(
    v: np.ndarray, n_boot: int, k: int, rng: np.random.Generator, statistic: Statistic | None
) -> np.ndarray:
    """(n_boot, k) statistics of independent input resamples of one seed's rows ``v``."""
    if statistic is None and v.ndim == 1:
        values, counts = np.unique(v, return_counts=True)
        if len(values) <= MAX_DISTINCT:
            draws = rng.multinomial(len(v), counts / len(v), size=(n_boot, k))
            return draws @ values / len(v)
    index = rng.integers(0, len(v), size=(n_boot, k, len(v)), dtype=np.int32)
    return (statistic or _mean_of_first)(v[index])


def hierarchical_bootstrap(
    per_seed: Sequence[np.ndarray],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    statistic: Statistic | None = None,
) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of a per-seed statistic of the inputs.

    Each resample draws seeds with replacement, then, independently for every drawn seed, its
    inputs (rows) with replacement; the statistic of a seed's resampled rows is averaged over
    the drawn seeds. ``statistic`` maps resampled rows (n_boot, k, I, ...) to (n_boot, k); the
    default is the mean of the rows (of the first column for 2-D rows). Paired quantities pass
    rows (I, 2) and a statistic of both columns, e.g. std(student) − std(baseline). With one
    seed this is the ordinary bootstrap over inputs.

    Fast path: the mean of rows that take few distinct values (correctness 0/1, its paired
    differences −1/0/1) is drawn exactly from the multinomial law of the resample's value counts,
    Σ_u u·c_u / I with c ~ Multinomial(I, f_u / I), instead of resampling every row.
    """
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    # inner[i, b, j]: statistic of a fresh input resample of seed i, for slot j of resample b
    inner = np.stack(
        [_inner(np.asarray(v, dtype=np.float64), n_boot, k, rng, statistic) for v in per_seed]
    )
    chosen = rng.integers(0, k, size=(n_boot, k))
    stats = inner[chosen, np.arange(n_boot)[:, None], np.arange(k)[None, :]].mean(1)
    alpha = (1 - level) / 2
    if np.isnan(stats).all():  # an undefined statistic (e.g. a correlation of constant rows)
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarise(
    per_seed: dict[int, np.ndarray], n_boot: int = 2000, statistic: Statistic | None = None
) -> dict[str, Any]:
    """Per-seed values of ``statistic`` (default: the mean of the inputs), their mean and
    population std, and the hierarchical 95 % interval. Seeds without inputs are left out; with
    none left every number is NaN."""
    stat = statistic or _mean_of_first
    seeds = [s for s in sorted(per_seed) if len(per_seed[s])]  # a seed with no inputs says nothing
    if not seeds:
        nan = float("nan")
        return {"per_seed": {str(s): nan for s in sorted(per_seed)}, "mean": nan, "std": nan,
                "ci95": [nan, nan]}  # fmt: skip
    rows = [np.asarray(per_seed[s], dtype=np.float64) for s in seeds]
    values = [float(stat(r[None, None])[0, 0]) for r in rows]
    lo, hi = hierarchical_bootstrap(rows, n_boot=n_boot, statistic=statistic)
    return {
        "per_seed": {str(s): v for s, v in zip(seeds, values, strict=True)},
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "ci95": [lo, hi],
    }


def pearson_statistic(rows: np.ndarray) -> np.ndarray:
    """Pearson correlation of the two columns of ``rows`` (..., I, 2) over the inputs axis, for
    :func:`hierarchical_bootstrap`; NaN where a column is constant."""
    x, y = rows[..., 0], rows[..., 1]
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)
