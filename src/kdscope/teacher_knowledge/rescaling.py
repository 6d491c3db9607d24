"""Level (c), instance-specific knowledge: the gradient rescaling factor (Tang et al. 2020;
docs/three_levels.md).

Student logits z (n, K), p = softmax(z), p^τ = softmax(z/τ); target q (n, K) built from the tempered
teacher (q = ρ^τ for KD); ground truth g. The soft-target loss (docs/methods.md) with weights
a = ce_weight (1 − λ) and s = soft_weight (λ),

    L = a · H(e_g, p) + s · τ² · H(q, p^τ),

has the logit gradient

    ∇_z L = a (p − e_g) + s τ (p^τ − q),

and the rescaling factor of example x is the L1 ratio against the plain hard-label gradient:

    w(x)   = ‖∇_z L‖₁ / ‖∇_z H(e_g, p)‖₁,   ‖∇_z H(e_g, p)‖₁ = 2 (1 − p_g)
    w_g(x) = [∂L/∂z_g] / (p_g − 1)                                   (ground-truth component ratio)

At τ = 1 with a = 1 − λ, s = λ: w_g = 1 − λ (1 − ρ_g) / (1 − p_g) exactly, and w = w_g whenever
p_i ≥ λ ρ_i for every i ≠ g (then all wrong-class components are ≥ 0 and ‖∇L‖₁ = 2 |∂L/∂z_g|).

Also here: numerically stable softmax and a quantile-bin curve, used by the other modules of this
package (the correlations are in :mod:`kdscope.correlation`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdscope.stats import safe_divide

__all__ = [
    "Rescaling",
    "closed_form_w",
    "decile_curve",
    "rescaling_factors",
    "softmax",
]


# --------------------------------------------------------------------------------------------------
# helpers shared by the package


def _probs_labels(
    probs: np.ndarray, labels: np.ndarray, name: str = "probs"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate an (n, K) float array and an (n,) integer label array in [0, K)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2:
        raise ValueError(f"{name} must have shape (n, K), got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("labels must be integers")
        y = y.astype(np.int64)
    y = y.astype(np.int64, copy=False)
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]}), got [{y.min()}, {y.max()}]")
    return p, y


def _gt(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """a[x, g(x)] for every row x."""
    return np.take_along_axis(a, labels[:, None], axis=1)[:, 0]


# --------------------------------------------------------------------------------------------------
# softmax and rescaling factors


def softmax(logits: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """softmax(z/τ) over the last axis, computed as exp(z/τ − max z/τ) / Σ exp(z/τ − max z/τ)."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    z = np.asarray(logits, dtype=np.float64) / tau
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Rescaling:
    """Per-example rescaling quantities, all of shape (n,) except ``grad`` (n, K).

    p_g: student probability of the ground truth at τ = 1; grad: ∇_z L; w: exact L1 ratio;
    w_g: ground-truth component ratio; condition: p_i ≥ soft_weight · q_i for all i ≠ g (the
    closed-form condition); tail_nonnegative: ∂L/∂z_i ≥ 0 for all i ≠ g, the exact condition for
    w = w_g at any τ (equal to ``condition`` at τ = 1 when ce_weight + soft_weight = 1).
    """

    p_g: np.ndarray
    grad: np.ndarray
    w: np.ndarray
    w_g: np.ndarray
    condition: np.ndarray
    tail_nonnegative: np.ndarray


def rescaling_factors(
    z: np.ndarray,
    q: np.ndarray,
    labels: np.ndarray,
    tau: float,
    ce_weight: float,
    soft_weight: float,
) -> Rescaling:
    """Exact gradient rescaling factors of the soft-target loss.

    z (n, K) student logits, q (n, K) target (rows sum to 1), labels (n,).

        ∇_z L = ce_weight (p − e_g) + soft_weight τ (p^τ − q)
        w     = ‖∇_z L‖₁ / (2 (1 − p_g))
        w_g   = [∂L/∂z_g] / (p_g − 1)
        condition(x) = [p_i ≥ soft_weight · q_i for all i ≠ g]

    The condition is "student not sharper than the scaled teacher" with soft_weight · q_i
    in place of λ ρ_i; at τ = 1 with ce_weight = 1 − soft_weight it guarantees w = w_g =
    1 − λ (1 − ρ_g)/(1 − p_g). At other τ it is descriptive only; use ``tail_nonnegative``.
    Where p_g = 1 (the hard-label gradient vanishes) w and w_g are nan.
    """
    zz, y = _probs_labels(z, labels, name="z")
    qq = np.asarray(q, dtype=np.float64)
    if qq.shape != zz.shape:
        raise ValueError(f"q must have the shape of z {zz.shape}, got {qq.shape}")
    p = softmax(zz)
    pt = p if tau == 1 else softmax(zz, tau)
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, y[:, None], 1.0, axis=1)
    grad = ce_weight * (p - onehot) + soft_weight * tau * (pt - qq)
    p_g = _gt(p, y)
    one_minus = 1.0 - p_g
    w = safe_divide(np.abs(grad).sum(axis=1), 2.0 * one_minus, np.nan)
    w_g = safe_divide(_gt(grad, y), -one_minus, np.nan)
    wrong = onehot == 0
    condition = np.all((p >= soft_weight * qq) | ~wrong, axis=1)
    tail_nonnegative = np.all((grad >= 0) | ~wrong, axis=1)
    return Rescaling(
        p_g=p_g, grad=grad, w=w, w_g=w_g, condition=condition, tail_nonnegative=tail_nonnegative
    )


def closed_form_w(
    rho_g: np.ndarray | float, p_g: np.ndarray | float, lam: float
) -> np.ndarray | float:
    """Closed-form rescaling factor at τ = 1, broadcasting:

        w = 1 − λ (1 − ρ_g) / (1 − p_g)       (nan where p_g = 1)

    Equal to w_g always, and to the exact L1 ratio w when the condition of :class:`Rescaling` holds.
    """
    out = 1.0 - lam * safe_divide(
        1.0 - np.asarray(rho_g, dtype=np.float64), 1.0 - np.asarray(p_g), np.nan
    )
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------------
# decile curves


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same size, got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def decile_curve(x: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Mean y per quantile bin of x (pairs with a nan dropped).

    Edges e_0 ≤ … ≤ e_B are the 0, 1/B, …, 1 quantiles of x, de-duplicated; bin b = [e_b, e_{b+1})
    (the last bin closed). Tied values of x always share a bin, so with ties or few distinct values
    there are fewer (and unequal) bins; empty bins are dropped. Returns arrays over the kept bins:
    'x' (mean x per bin), 'y' (mean y per bin), 'median' (median y per bin, robust where y is
    heavy-tailed, as w is when the student fits an example: 1 − p_g → 0), 'count'.
    """
    a, b = _finite_pairs(x, y)
    if a.size == 0:
        empty = np.zeros(0)
        return {"x": empty, "y": empty, "median": empty, "count": np.zeros(0, dtype=np.int64)}
    edges = np.unique(np.quantile(a, np.linspace(0.0, 1.0, n_bins + 1)))
    idx = np.searchsorted(edges[1:-1], a, side="right")
    n_b = max(len(edges) - 1, 1)
    count = np.bincount(idx, minlength=n_b)
    sx = np.bincount(idx, weights=a, minlength=n_b)
    sy = np.bincount(idx, weights=b, minlength=n_b)
    keep = count > 0
    median = np.array([np.median(b[idx == i]) for i in np.flatnonzero(keep)])
    return {
        "x": sx[keep] / count[keep],
        "y": sy[keep] / count[keep],
        "median": median,
        "count": count[keep].astype(np.int64),
    }
