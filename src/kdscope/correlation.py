"""Rank and correlation statistics: average ranks, Pearson, Spearman, partial Spearman,
Kendall τ_b, AUROC.

Every function takes plain arrays and returns a float (or, for :func:`kendall_tau_b` on 2-D
input, one value per row). Undefined statistics are NaN, never an exception: fewer than two
pairs, a constant side (a zero denominator), a class absent (AUROC). Ranks come from
:func:`scipy.stats.rankdata`; the correlations are the textbook formulas below, computed in
numpy (tests check them against :func:`scipy.stats.pearsonr`, :func:`~scipy.stats.spearmanr`,
:func:`~scipy.stats.kendalltau` and :func:`~scipy.stats.mannwhitneyu`): scipy's versions raise
or warn on the edge cases above, and :func:`kendall_tau_b` must run over many rows at once.
The per-seed Pearson statistic of :func:`kdscope.stats.summarise` is
:func:`kdscope.stats.pearson_statistic` (vectorised over seeds).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "auroc",
    "average_ranks",
    "kendall_tau_b",
    "partial_spearman",
    "pearson",
    "rank_residual",
    "spearman",
]

Missing = Literal["drop", "nan"]
_CHUNK = 1 << 21  # elements per chunk of pairwise work in kendall_tau_b


def average_ranks(x: ArrayLike) -> np.ndarray:
    """1-based ranks of the flattened ``x``, ties sharing the mean of the ranks they span
    (:func:`scipy.stats.rankdata`, ``method="average"``):

        R_i = #{j : x_j < x_i} + (#{j : x_j = x_i} + 1) / 2

    NaNs rank above every number, all tied with each other (numpy's sort order).
    """
    from scipy.stats import rankdata  # here: importing scipy.stats costs a second

    a = np.asarray(x).reshape(-1)
    if a.dtype.kind not in "fc":
        return rankdata(a)
    nan = np.isnan(a)
    if not nan.any():
        return rankdata(a)
    out = np.empty(a.size, dtype=np.float64)
    n_num = a.size - int(nan.sum())
    out[~nan] = rankdata(a[~nan])
    out[nan] = n_num + (a.size - n_num + 1) / 2.0
    return out


def _pairs(x: ArrayLike, y: ArrayLike, missing: Missing) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, y) as float64 1-D arrays of equal length, NaN pairs dropped (``missing="drop"``);
    None when ``missing="nan"`` and a value is not finite."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if missing == "nan":
        return (a, b) if np.isfinite(a).all() and np.isfinite(b).all() else None
    if missing != "drop":
        raise ValueError(f"missing must be 'drop' or 'nan', got {missing!r}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two finite 1-D arrays; NaN below two pairs or for a constant side."""
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ac = a - a.mean()
    bc = b - b.mean()
    den = float(np.sqrt((ac * ac).sum() * (bc * bc).sum()))
    if den == 0.0:
        return float("nan")
    return float(np.clip((ac * bc).sum() / den, -1.0, 1.0))


def pearson(x: ArrayLike, y: ArrayLike, missing: Missing = "drop") -> float:
    """Pearson correlation of two 1-D arrays of equal length,

        r = Σ (x − x̄)(y − ȳ) / sqrt(Σ (x − x̄)² Σ (y − ȳ)²),   clipped to [−1, 1].

    ``missing="drop"`` drops the pairs with a NaN; ``"nan"`` returns NaN when any value is not
    finite. NaN when fewer than two pairs remain, when either side is constant, or when an
    infinite value remains.
    """
    pairs = _pairs(x, y, missing)
    return float("nan") if pairs is None else _pearson(*pairs)


def spearman(x: ArrayLike, y: ArrayLike, missing: Missing = "drop") -> float:
    """Spearman correlation: the Pearson correlation of the average ranks R (ties share their
    mean rank),

        r_s = Σ (R_x − R̄_x)(R_y − R̄_y) / sqrt(Σ (R_x − R̄_x)² Σ (R_y − R̄_y)²).

    ``missing="drop"`` drops the pairs with a NaN (±inf then rank as extremes); ``"nan"``
    returns NaN when any value is NaN or ±inf. NaN when fewer than two pairs remain or either
    side is constant.
    """
    pairs = _pairs(x, y, missing)
    if pairs is None or pairs[0].size < 2:
        return float("nan")
    return _pearson(average_ranks(pairs[0]), average_ranks(pairs[1]))


def rank_residual(y: ArrayLike, control: ArrayLike) -> np.ndarray:
    """Ranks of ``y`` minus their least-squares fit (with intercept) on the ranks of
    ``control``: what is left of y's order once the control's order is accounted for,

        e = (R_y − R̄_y) − β (R_c − R̄_c),   β = Σ (R_y − R̄_y)(R_c − R̄_c) / Σ (R_c − R̄_c)²

    (β = 0 for a constant control)."""
    ry, rc = average_ranks(y), average_ranks(control)
    rc = rc - rc.mean()
    den = float(rc @ rc)
    slope = float((ry - ry.mean()) @ rc) / den if den > 0 else 0.0
    return ry - ry.mean() - slope * rc


def partial_spearman(x: ArrayLike, y: ArrayLike, control: ArrayLike) -> float:
    """Partial Spearman correlation of x and y given ``control``: the Pearson correlation of
    their :func:`rank_residual` on the control's ranks, which equals

        (r_xy − r_xc r_yc) / sqrt((1 − r_xc²)(1 − r_yc²))

    on the Spearman correlations r. NaN when either residual is constant (e.g. x's order is the
    control's)."""
    return pearson(rank_residual(x, control), rank_residual(y, control))


def _signs(a: np.ndarray, iu: np.ndarray, ju: np.ndarray) -> np.ndarray:
    """sign(a_i − a_j) for the pairs (iu, ju), as int8 (rows of a)."""
    left, right = a[:, iu], a[:, ju]
    return (left > right).astype(np.int8) - (left < right).astype(np.int8)


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> np.ndarray | float:
    """Kendall τ_b of x and y along the last axis (row by row for 2-D input),

        τ_b = Σ_{i<j} sgn(x_i − x_j) sgn(y_i − y_j) / sqrt(n_x n_y),
        n_x = #{i<j : x_i ≠ x_j},   n_y = #{i<j : y_i ≠ y_j}

    (n_x = n_0 − n_1, n_y = n_0 − n_2 in the usual notation; scipy's
    ``kendalltau(variant="b")``, vectorised over rows). NaN for a row with a NaN or with
    n_x n_y = 0 (all tied on one side, or fewer than two entries). 1-D input returns a float.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim not in (1, 2):
        raise ValueError(f"x and y must be 1-D or 2-D of one shape, got {xa.shape} and {ya.shape}")
    one = xa.ndim == 1
    xa, ya = np.atleast_2d(xa), np.atleast_2d(ya)
    n, m = xa.shape
    iu, ju = np.triu_indices(m, 1)
    out = np.full(n, np.nan)
    step = max(1, _CHUNK // max(iu.size, 1))
    for s in range(0, n, step):
        sx = _signs(xa[s : s + step], iu, ju)
        sy = _signs(ya[s : s + step], iu, ju)
        num = (sx * sy).sum(axis=1, dtype=np.int64)
        den = np.sqrt(
            np.count_nonzero(sx, axis=1).astype(np.float64)
            * np.count_nonzero(sy, axis=1).astype(np.float64)
        )
        out[s : s + step] = np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
    bad = np.isnan(xa).any(axis=1) | np.isnan(ya).any(axis=1)
    out[bad] = np.nan
    return float(out[0]) if one else out


def auroc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Area under the ROC curve by the Mann–Whitney statistic, ties counted 1/2:

        AUROC = (1/(n₊ n₋)) Σ_{i ∈ +} Σ_{j ∈ −} (1[s_i > s_j] + ½ 1[s_i = s_j])
              = (Σ_{i ∈ +} R_i − n₊(n₊ + 1)/2) / (n₊ n₋),   R = average ranks of s

    (U₊ / (n₊ n₋) of :func:`scipy.stats.mannwhitneyu`). Examples with a NaN score are dropped;
    NaN when either class is absent.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives).reshape(-1).astype(bool)
    if s.shape != pos.shape:
        raise ValueError(f"scores and positives differ in size: {s.size} vs {pos.size}")
    keep = ~np.isnan(s)
    s, pos = s[keep], pos[keep]
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    u = average_ranks(s)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
