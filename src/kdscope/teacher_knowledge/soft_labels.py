"""Level (b) in the teacher: structure of the soft labels (docs/three_levels.md, pure numpy).

Teacher distributions ρ (n, K) at one temperature (ρ^τ), labels g (n,), superclass map sup (K,).
The non-GT part of an example is r = ρ_{−g} / (1 − ρ_g) over the K − 1 wrong classes, with
1 − ρ_g computed as Σ_{k≠g} ρ_k (equal for normalised rows; exact when ρ_g rounds to 1).

* **Class-mean matrix** M[c] = mean of ρ(x) over the examples of class c.
* **Class–class correlation** R_ij = Pearson over examples of ρ_i(x) and ρ_j(x).
* **Relational mass** = mean_x Σ_{k≠g, sup(k)=sup(g)} r_k; chance = (s_{sup(g)} − 1)/(K − 1);
  excess = (mass − chance)/(1 − chance).
* **Tail concentration**: H(r)/log(K − 1) and the mass of r's top entries, averaged over x.
"""

from __future__ import annotations

import numpy as np

from kdscope.correlation import pearson
from kdscope.teacher_knowledge.class_geometry import _drop_gt, _pair_masks, _square, hierarchy_score
from kdscope.teacher_knowledge.rescaling import _gt, _probs_labels

__all__ = [
    "class_correlation",
    "class_mean_matrix",
    "non_gt_mass",
    "offdiag_hierarchy",
    "relational_mass",
    "tail_concentration",
]


def class_mean_matrix(rho: np.ndarray, labels: np.ndarray, K: int) -> np.ndarray:
    """M (K, K), M[c] = (1/n_c) Σ_{x : g(x) = c} ρ(x); rows of classes without examples are nan."""
    r, y = _probs_labels(rho, labels, name="rho")
    if r.shape[1] != K:
        raise ValueError(f"rho has {r.shape[1]} classes, expected K = {K}")
    member = np.zeros((K, y.size))
    member[y, np.arange(y.size)] = 1.0
    counts = member.sum(axis=1)
    sums = member @ r
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], np.nan)


def class_correlation(rho: np.ndarray) -> np.ndarray:
    """R (K, K), R_ij = Σ_x (ρ_i − ρ̄_i)(ρ_j − ρ̄_j) / sqrt(Σ_x (ρ_i − ρ̄_i)² Σ_x (ρ_j − ρ̄_j)²).

    A constant column has correlation 0 with every other column; the diagonal is 1.
    """
    x = np.asarray(rho, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"rho must have shape (n, K), got shape {x.shape}")
    xc = x - x.mean(axis=0, keepdims=True)
    ss = (xc * xc).sum(axis=0)
    if x.shape[0]:
        ss = np.where(np.ptp(x, axis=0) > 0, ss, 0.0)
    den = np.sqrt(np.outer(ss, ss))
    cov = xc.T @ xc
    out = np.zeros_like(cov)
    np.divide(cov, den, out=out, where=den > 0)
    out = np.clip(out, -1.0, 1.0)
    out[np.diag_indices_from(out)] = 1.0
    return out


def offdiag_hierarchy(M: np.ndarray, superclass: np.ndarray) -> dict[str, float]:
    """Hierarchy of a (possibly asymmetric) K × K matrix over ordered pairs i ≠ j.

        score   = mean_{i≠j, sup(i)=sup(j)} M_ij − mean_{sup(i)≠sup(j)} M_ij
        pearson = Pearson(M_ij, 1[sup(i) = sup(j)]) over all i ≠ j

    The diagonal is excluded; nan entries (classes without examples) are dropped.
    Returns 'score', 'pearson'.
    """
    a = _square("M", M)
    same, _ = _pair_masks(superclass, a.shape[0])
    off = ~np.eye(a.shape[0], dtype=bool)
    return {
        "score": hierarchy_score(a, superclass),
        "pearson": pearson(a[off], same[off].astype(np.float64)),
    }


def _tail(rho: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ok, r, g): examples with wrong-class mass (ρ_g < 1 and Σ_{k≠g} ρ_k > 0) and the normalised
    non-GT part r (n, K) with r_g = 0 (rows of skipped examples are 0), and the labels."""
    r, y = _probs_labels(rho, labels, name="rho")
    rest = r.copy()
    rest[np.arange(y.size), y] = 0.0
    mass = rest.sum(axis=1)
    ok = (_gt(r, y) < 1.0) & (mass > 0)
    rest[ok] /= mass[ok, None]
    rest[~ok] = 0.0
    return ok, rest, y


def relational_mass(
    rho: np.ndarray, labels: np.ndarray, superclass: np.ndarray
) -> dict[str, float | int]:
    """Share of the wrong-class mass that stays inside the ground truth's superclass.

        mass   = mean_x Σ_{k≠g, sup(k)=sup(g)} ρ_k / (1 − ρ_g)
        chance = mean_x (s_{sup(g)} − 1)/(K − 1),   s = number of classes in a superclass
        excess = (mass − chance)/(1 − chance)          (nan when chance = 1)

    Examples with ρ_g = 1 exactly (no wrong-class mass) are skipped. Returns 'mass', 'chance',
    'excess', 'n' (examples used).
    """
    ok, r, y = _tail(rho, labels)
    k = r.shape[1]
    same, _ = _pair_masks(superclass, k)
    if not ok.any():
        return {"mass": float("nan"), "chance": float("nan"), "excess": float("nan"), "n": 0}
    per = (r * same[y]).sum(axis=1)[ok]
    chance_per = same.sum(axis=1)[y[ok]] / (k - 1)
    mass, chance = float(per.mean()), float(chance_per.mean())
    excess = (mass - chance) / (1.0 - chance) if chance < 1.0 else float("nan")
    return {"mass": mass, "chance": chance, "excess": float(excess), "n": int(ok.sum())}


def tail_concentration(rho: np.ndarray, labels: np.ndarray, top: int = 5) -> dict[str, float | int]:
    """Concentration of the non-GT part r = ρ_{−g}/(1 − ρ_g) over the K − 1 wrong classes.

        normalised_entropy = mean_x −Σ_{k≠g} r_k log r_k / log(K − 1)   (1 = uniform; nan for K = 2)
        top{top}_mass      = mean_x Σ of the min(top, K − 1) largest r_k

    Examples with ρ_g = 1 exactly are skipped. Returns 'normalised_entropy', f'top{top}_mass'
    (e.g. 'top5_mass'), 'n'.
    """
    ok, r, y = _tail(rho, labels)
    k = r.shape[1]
    t = int(min(top, k - 1))
    key = f"top{top}_mass"
    if not ok.any() or t < 1:
        return {"normalised_entropy": float("nan"), key: float("nan"), "n": int(ok.sum())}
    rr = _drop_gt(r[ok], y[ok])
    pos = rr > 0
    h = -np.where(pos, rr * np.log(np.where(pos, rr, 1.0)), 0.0).sum(axis=1)
    norm_h = h / np.log(k - 1) if k > 2 else np.full(h.shape, np.nan)
    top_mass = np.partition(rr, k - 1 - t, axis=1)[:, k - 1 - t :].sum(axis=1)
    return {
        "normalised_entropy": float(norm_h.mean()),
        key: float(top_mass.mean()),
        "n": int(ok.sum()),
    }


def non_gt_mass(rho: np.ndarray, labels: np.ndarray) -> float:
    """Mean wrong-class mass (1/n) Σ_x (1 − ρ_g(x)) (nan for no examples)."""
    r, y = _probs_labels(rho, labels, name="rho")
    return float((1.0 - _gt(r, y)).mean()) if y.size else float("nan")
