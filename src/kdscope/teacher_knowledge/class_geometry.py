"""Level (b), domain knowledge: logit-layer geometry metrics (Tang et al. 2020;
docs/three_levels.md).

Last linear layer z_k = h·w_k + b_k with templates W (K, d) and biases b (K,); superclass map
sup(k) as an integer array of length K.

* **Class similarity** S_ij = cos(w̃_i, w̃_j), w̃_k = w_k − (1/K) Σ_l w_l (centred; softmax is
  invariant to adding one vector to every template); optionally b_k appended as a coordinate.
* **Hierarchy score** = mean_{i≠j, sup(i)=sup(j)} S_ij − mean_{sup(i)≠sup(j)} S_ij.
* **Mantel test**: Pearson correlation of the upper triangles of two K × K matrices, p-value from
  simultaneous row/column permutations of the second.
* **Distance-order agreement**: per example, Kendall τ_b between ‖h − w_i‖ and −ρ_i over the
  wrong classes i ≠ g. With b = 0 and ‖w_k‖ = c, ‖h − w_k‖² = ‖h‖² + c² − 2 z_k, so a student whose
  p equals ρ orders the wrong-class distances exactly as −ρ (τ_b = 1).
"""

from __future__ import annotations

import numpy as np

from kdscope.correlation import kendall_tau_b, pearson, spearman
from kdscope.teacher_knowledge.rescaling import _probs_labels

__all__ = [
    "class_similarity",
    "distance_order_agreement",
    "hierarchy_correlation",
    "hierarchy_score",
    "mantel",
    "upper",
]

_CHUNK = 1 << 21  # elements per chunk of pairwise work


def _square(name: str, a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {arr.shape}")
    return arr


def _pair_masks(superclass: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(same, cross) (K, K) masks: same = sup(i) = sup(j), i ≠ j; cross = sup(i) ≠ sup(j)."""
    sup = np.asarray(superclass).reshape(-1)
    if sup.shape != (k,):
        raise ValueError(f"superclass must have length K = {k}, got {sup.size}")
    eq = sup[:, None] == sup[None, :]
    return eq & ~np.eye(k, dtype=bool), ~eq


def upper(S: np.ndarray, k: int = 1) -> np.ndarray:
    """Entries S_ij of the upper triangle with j ≥ i + k (row-major order)."""
    a = _square("S", S)
    return a[np.triu_indices(a.shape[0], k)]


def class_similarity(
    W: np.ndarray,
    b: np.ndarray | None = None,
    centred: bool = True,
    include_bias: bool = False,
) -> np.ndarray:
    """Cosine similarity of class templates, (K, K).

        v_k = w_k  (or [w_k, b_k] with include_bias),   ṽ_k = v_k − (1/K) Σ_l v_l  (centred)
        S_ij = ṽ_i·ṽ_j / (‖ṽ_i‖ ‖ṽ_j‖)

    Rows and columns of a zero-norm template are nan (its diagonal too).
    """
    v = np.asarray(W, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"W must have shape (K, d), got shape {v.shape}")
    if include_bias:
        if b is None:
            raise ValueError("include_bias=True needs the biases b")
        bias = np.asarray(b, dtype=np.float64).reshape(-1)
        if bias.shape != (v.shape[0],):
            raise ValueError(f"b must have length K = {v.shape[0]}, got {bias.size}")
        v = np.concatenate([v, bias[:, None]], axis=1)
    if centred:
        v = v - v.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(v, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = v / np.where(norm > 0, norm, np.nan)[:, None]
    s = np.clip(u @ u.T, -1.0, 1.0)
    ok = norm > 0
    s[np.diag_indices_from(s)] = np.where(ok, 1.0, np.nan)
    return s


def hierarchy_score(S: np.ndarray, superclass: np.ndarray) -> float:
    """mean_{i≠j, sup(i)=sup(j)} S_ij − mean_{sup(i)≠sup(j)} S_ij over ordered pairs.

    Nan entries are ignored; nan when either set of pairs is empty. For a symmetric S this equals
    the same difference over the upper triangle.
    """
    a = _square("S", S)
    same, cross = _pair_masks(superclass, a.shape[0])
    vs, vc = a[same], a[cross]
    vs, vc = vs[~np.isnan(vs)], vc[~np.isnan(vc)]
    if vs.size == 0 or vc.size == 0:
        return float("nan")
    return float(vs.mean() - vc.mean())


def hierarchy_correlation(S: np.ndarray, superclass: np.ndarray) -> tuple[float, float]:
    """(Pearson, Spearman) between upper(S) and the indicator 1[sup(i) = sup(j)] over i < j."""
    a = _square("S", S)
    same, _ = _pair_masks(superclass, a.shape[0])
    ind = upper(same.astype(np.float64))
    vals = upper(a)
    return pearson(vals, ind), spearman(vals, ind)


def mantel(
    A: np.ndarray, B: np.ndarray, permutations: int = 999, seed: int = 0
) -> tuple[float, float]:
    """Mantel test: r = Pearson(upper(A), upper(B)) and a one-sided permutation p-value.

        p = (1 + #{π : r(A, B_π) ≥ r}) / (1 + P),   (B_π)_ij = B_{π(i) π(j)}

    with P random simultaneous row/column permutations π (seeded). A tolerance of 1e-12 on the
    comparison counts permutations that reproduce r up to rounding. p is nan when r is nan or P = 0.
    """
    a_mat, b_mat = _square("A", A), _square("B", B)
    if a_mat.shape != b_mat.shape:
        raise ValueError(f"A and B differ in shape: {a_mat.shape} vs {b_mat.shape}")
    k = a_mat.shape[0]
    iu, ju = np.triu_indices(k, 1)
    a = a_mat[iu, ju]
    r = pearson(a, b_mat[iu, ju])
    if np.isnan(r) or permutations <= 0 or not np.isfinite(b_mat).all():
        return r, float("nan")
    ac = a - a.mean()
    ac /= np.linalg.norm(ac)
    perms = np.argsort(np.random.default_rng(seed).random((permutations, k)), axis=1)
    step = max(1, _CHUNK // max(iu.size, 1))
    hits = 0
    for s in range(0, permutations, step):
        pc = perms[s : s + step]
        bp = b_mat[pc[:, iu], pc[:, ju]]  # (chunk, K(K-1)/2)
        bp -= bp.mean(axis=1, keepdims=True)
        nb = np.linalg.norm(bp, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rp = (bp @ ac) / nb
        hits += int(np.count_nonzero(rp >= r - 1e-12))
    return r, (1.0 + hits) / (1.0 + permutations)


def _drop_gt(a: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, K) → (n, K−1): every row without its ground-truth column."""
    keep = np.ones(a.shape, dtype=bool)
    keep[np.arange(a.shape[0]), labels] = False
    return a[keep].reshape(a.shape[0], a.shape[1] - 1)


def distance_order_agreement(
    h: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    rho: np.ndarray,
    labels: np.ndarray,
) -> dict[str, float | int]:
    """Agreement of the student's template distances with the teacher's wrong-class order.

    Per example x: τ_b(x) = Kendall τ_b between (‖h(x) − w_i‖)_{i≠g} and (−ρ_i(x))_{i≠g}. The
    distance order is computed from ‖w_i‖² − 2 h·w_i, which orders i exactly like ‖h − w_i‖² (the
    ‖h‖² term is common to the row). Also reported, since Tang et al.'s argument assumes equal norms
    and zero bias:

        norm_cv  = std_k ‖w_k‖ / mean_k ‖w_k‖        (population std)
        bias_std = std_k b_k                          (0 when b is None)

    Returns 'tau_b' (mean over examples with a defined τ_b), 'tau_b_std', 'n_valid', 'norm_cv',
    'bias_std'.
    """
    r, y = _probs_labels(rho, labels, name="rho")
    hh = np.asarray(h, dtype=np.float64)
    w = np.asarray(W, dtype=np.float64)
    if hh.ndim != 2 or w.ndim != 2 or hh.shape[1] != w.shape[1] or hh.shape[0] != r.shape[0]:
        raise ValueError(
            f"need h (n, d), W (K, d), rho (n, K); got {hh.shape}, {w.shape}, {r.shape}"
        )
    if w.shape[0] != r.shape[1]:
        raise ValueError(f"W has {w.shape[0]} templates but rho has {r.shape[1]} classes")
    sq_norm = (w * w).sum(axis=1)
    dist_order = sq_norm[None, :] - 2.0 * (hh @ w.T)
    tau = kendall_tau_b(_drop_gt(dist_order, y), _drop_gt(-r, y))
    tau = np.atleast_1d(tau)
    ok = ~np.isnan(tau)
    norms = np.sqrt(sq_norm)
    bias = np.zeros(0) if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
    return {
        "tau_b": float(tau[ok].mean()) if ok.any() else float("nan"),
        "tau_b_std": float(tau[ok].std()) if ok.any() else float("nan"),
        "n_valid": int(ok.sum()),
        "norm_cv": float(norms.std() / norms.mean()) if norms.mean() > 0 else float("nan"),
        "bias_std": float(bias.std()) if bias.size else 0.0,
    }
