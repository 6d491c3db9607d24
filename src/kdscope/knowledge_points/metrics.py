"""Knowledge-point metrics: quantity, quality, learning speed and stability (pure numpy).

All functions take per-unit entropies H_i(x, k) of the information-discarding estimator, laid out as
``entropy[x, k, i]``: I analysed inputs x, K listed checkpoints k (index 0 is epoch 0, the last index
the final checkpoint), n units i (cells of the input grid, points, tokens). ``foreground[x, i]`` says
whether unit i of input x is foreground; an optional ``valid[x, i]`` mask removes units entirely
(padding, masked tokens): an invalid unit is neither foreground nor background, never a knowledge
point and never counted.

Quantities (docs/knowledge_points.md, 'Formulas'):

* **Background level** H̄(k) = mean_x mean_{i ∈ bg(x)} H_i(x, k): one constant per network,
  checkpoint and layer (reference), or H̄(x, k) = mean_{i ∈ bg(x)} H_i(x, k) per input (option).
* **Knowledge point**: unit i of input x at checkpoint k iff H̄ − H_i(x, k) > b (strict), b = 0.2
  nats. A unit whose entropy is well below the background level keeps more of the input's
  information in the diagnosed feature.
* **Quantity and quality**: N_fg, N_bg = numbers of foreground / background knowledge points;
  quality = N_fg / (N_fg + N_bg), 0 when both are 0; ratios N_fg/|fg|, N_bg/|bg| for modalities
  with varying unit counts.
* **Learning speed**: m̂(x) = first argmax over the checkpoint list of N_fg(x, k);
  d(x) = D(ckpt[m̂(x)]) with D the cumulative normalised weight path length of the diagnosed layer;
  D_mean, D_std and D_var (population) over inputs, and the slope N_fg(m̂) / d. m̂ indexes the
  checkpoint list directly (the reference reads d one checkpoint too early for residual networks,
  because it skips checkpoint 0 without offsetting the index; kdscope does not reproduce that).
* **Stability**: ρ(x) = |S_K(x)| / |∪_k S_k(x)| with S_k(x) the set of knowledge-point positions
  (foreground by default) at checkpoint k; the union runs over all listed checkpoints including
  epoch 0 (reference) or over checkpoints 1..K−1 (paper); 0 when the union is empty.

Nothing here loops over inputs or checkpoints in Python; every function is vectorised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from kdscope.stats import safe_divide

__all__ = [
    "B_DEFAULT",
    "background_level",
    "knowledge_points",
    "learning_speed",
    "point_counts",
    "stability",
]

B_DEFAULT = 0.2
"""Threshold b in nats: a unit is a knowledge point iff H̄ − H > b [ref]."""


# --------------------------------------------------------------------------------------------------
# validation helpers


def _as_3d(name: str, x: np.ndarray, dtype: type | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (I, K, n), got shape {arr.shape}")
    return arr


def _mask(name: str, m: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """An (I, n) bool mask matching the (I, n) of the per-unit array; None stays None."""
    if m is None:
        return None
    arr = np.asarray(m)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape (I, n) = {shape}, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _masks(
    foreground: np.ndarray, valid: np.ndarray | None, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(fg, bg) masks of shape (I, n): fg = foreground & valid, bg = ~foreground & valid."""
    fg = _mask("foreground", foreground, shape)
    ok = _mask("valid", valid, shape)
    if fg is None:
        raise ValueError("foreground mask is required")
    if ok is None:
        return fg, ~fg
    return fg & ok, ~fg & ok


# --------------------------------------------------------------------------------------------------
# quantity and quality


def background_level(
    entropy: np.ndarray,
    foreground: np.ndarray,
    valid: np.ndarray | None = None,
    per_input: bool = False,
) -> np.ndarray:
    """Background entropy level H̄.

    entropy (I, K, n) float; foreground (I, n) bool; valid (I, n) bool or None (all valid).
    With bg(x) = {i : valid[x, i] and not foreground[x, i]}:

        H̄(x, k) = (1 / |bg(x)|) Σ_{i ∈ bg(x)} H_i(x, k)          per_input=True  -> (I, K)
        H̄(k)    = (1 / I) Σ_x H̄(x, k)                            per_input=False -> (K,)

    An input without background units has H̄(x, k) = nan and is left out of the mean over inputs
    (nan if no input has background units). The (K,) form is the reference's one constant per
    network, checkpoint and layer.
    """
    h = _as_3d("entropy", entropy, np.float64)
    n_in, n_ck, n_u = h.shape
    _, bg = _masks(foreground, valid, (n_in, n_u))
    n_bg = bg.sum(axis=1)  # (I,)
    total = np.where(bg[:, None, :], h, 0.0).sum(axis=2)  # (I, K); nan outside bg ignored
    per = safe_divide(total, n_bg[:, None], np.nan)  # (I, K)
    if per_input:
        return per
    has_bg = n_bg > 0
    if not has_bg.any():
        return np.full(n_ck, np.nan)
    return per[has_bg].mean(axis=0)


def knowledge_points(
    entropy: np.ndarray,
    level: np.ndarray,
    b: float = B_DEFAULT,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Knowledge-point mask P (I, K, n), bool.

        P[x, k, i] = valid[x, i]  and  H̄(k) − H_i(x, k) > b      (strict inequality)

    level: H̄ of shape (K,) (one per checkpoint) or (I, K) (per input). A nan level or entropy
    gives no point.
    """
    h = _as_3d("entropy", entropy, np.float64)
    n_in, n_ck, n_u = h.shape
    lev = np.asarray(level, dtype=np.float64)
    if lev.shape == (n_ck,):
        lev = np.broadcast_to(lev, (n_in, n_ck))
    elif lev.shape != (n_in, n_ck):
        raise ValueError(
            f"level must have shape (K,) = ({n_ck},) or (I, K) = ({n_in}, {n_ck}), "
            f"got shape {lev.shape}"
        )
    points = (lev[:, :, None] - h) > b
    ok = _mask("valid", valid, (n_in, n_u))
    if ok is not None:
        points &= ok[:, None, :]
    return points


def point_counts(
    points: np.ndarray, foreground: np.ndarray, valid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-input, per-checkpoint counts of knowledge points, all of shape (I, K).

        n_fg = Σ_{i ∈ fg(x)} P[x, k, i],   n_bg = Σ_{i ∈ bg(x)} P[x, k, i],   n_total = n_fg + n_bg
        quality  = n_fg / (n_fg + n_bg)   (0 when n_fg = n_bg = 0)
        fg_ratio = n_fg / |fg(x)|,  bg_ratio = n_bg / |bg(x)|   (nan when the set is empty)

    fg(x), bg(x) are the valid foreground / background units; points on invalid units are ignored.
    """
    p = _as_3d("points", points).astype(bool, copy=False)
    n_in, _, n_u = p.shape
    fg, bg = _masks(foreground, valid, (n_in, n_u))
    pi = p.astype(np.int64)
    n_fg = np.einsum("ikn,in->ik", pi, fg.astype(np.int64))
    n_bg = np.einsum("ikn,in->ik", pi, bg.astype(np.int64))
    n_total = n_fg + n_bg
    return {
        "n_fg": n_fg,
        "n_bg": n_bg,
        "n_total": n_total,
        "quality": safe_divide(n_fg, n_total, 0.0),
        "fg_ratio": safe_divide(n_fg, fg.sum(axis=1)[:, None], np.nan),
        "bg_ratio": safe_divide(n_bg, bg.sum(axis=1)[:, None], np.nan),
    }


# --------------------------------------------------------------------------------------------------
# learning speed and stability


def learning_speed(n_fg: np.ndarray, distance: np.ndarray) -> dict[str, np.ndarray | float]:
    """Distance travelled until the most foreground points are encoded.

    n_fg (I, K): counts over the checkpoint list; distance (K,): D at each listed checkpoint
    (cumulative normalised path length of the diagnosed layer's weight, D = 0 at epoch 0).

        m̂(x) = first argmax_k n_fg(x, k),   d(x) = D[m̂(x)]
        d_mean = mean_x d,  d_var = mean_x (d − d_mean)²,  d_std = sqrt(d_var)
        slope(x) = n_fg(x, m̂(x)) / d(x)   (nan where d = 0)

    Pass background counts instead of n_fg for the background version. Returns the keys
    'm_hat' (I,) int, 'd' (I,), 'd_mean', 'd_std', 'd_var' (floats; nan with no inputs), 'slope' (I,).
    """
    n = np.asarray(n_fg)
    if n.ndim != 2:
        raise ValueError(f"n_fg must have shape (I, K), got shape {n.shape}")
    dist = np.asarray(distance, dtype=np.float64)
    if dist.ndim != 1 or dist.shape[0] != n.shape[1]:
        raise ValueError(
            f"distance must have shape (K,) = ({n.shape[1]},) matching n_fg {n.shape}, "
            f"got shape {dist.shape}"
        )
    if n.shape[1] == 0:
        raise ValueError("learning_speed needs at least one checkpoint")
    m_hat = np.argmax(n, axis=1)  # numpy returns the first of tied maxima
    d = dist[m_hat]
    best = np.take_along_axis(n, m_hat[:, None], axis=1)[:, 0]
    if d.size:
        d_mean, d_var = float(d.mean()), float(d.var())
    else:
        d_mean = d_var = float("nan")
    return {
        "m_hat": m_hat,
        "d": d,
        "d_mean": d_mean,
        "d_std": float(np.sqrt(d_var)),
        "d_var": d_var,
        "slope": safe_divide(best, d, np.nan),
    }


def stability(
    points: np.ndarray,
    foreground: np.ndarray,
    include_initial: bool = True,
    which: Literal["fg", "bg", "all"] = "fg",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Stability ρ(x) per input, shape (I,).

        S_k(x) = {i ∈ U(x) : P[x, k, i]},   U = fg, bg or all valid units (``which``)
        ρ(x) = |S_{K−1}(x)| / |∪_{k ∈ J} S_k(x)|,   0 when the union is empty

    J = {0, ..., K−1} with include_initial (reference, epoch 0 included), else {1, ..., K−1}
    (paper). The headline ρ is the mean over inputs.
    """
    p = _as_3d("points", points).astype(bool, copy=False)
    n_in, n_ck, n_u = p.shape
    if which not in ("fg", "bg", "all"):
        raise ValueError(f"which must be 'fg', 'bg' or 'all', got {which!r}")
    if n_ck < (1 if include_initial else 2):
        raise ValueError(
            f"stability needs at least {1 if include_initial else 2} checkpoints "
            f"(include_initial={include_initial}), got {n_ck}"
        )
    fg, bg = _masks(foreground, valid, (n_in, n_u))
    sel = {"fg": fg, "bg": bg, "all": fg | bg}[which]
    s = p & sel[:, None, :]
    final = s[:, -1, :].sum(axis=1)
    union = s[:, (0 if include_initial else 1) :, :].any(axis=1).sum(axis=1)
    return safe_divide(final, union, 0.0)
