"""Calibration and entropy of predictive distributions (docs/three_levels.md, pure numpy).

Probabilities p (n, K) with rows summing to 1, labels g (n,). Top-1 confidence c = max_i p_i,
correctness 1[argmax p = g].

* **ECE**: B equal-width bins (b/B, (b+1)/B], b = 0..B−1 (confidence 0 goes to the first bin);
  ECE = Σ_b (n_b/n) |acc_b − conf_b|.
* **NLL** = −mean log p_g; **Brier** = mean Σ_i (p_i − 1[i = g])²; **entropy** = mean −Σ_i p_i log p_i
  (natural log, 0 log 0 = 0).
"""

from __future__ import annotations

import numpy as np

from kdscope.teacher_knowledge.rescaling import _gt, _probs_labels

__all__ = [
    "brier",
    "brier_per_example",
    "calibration_summary",
    "ece",
    "ece_batched",
    "mean_entropy",
    "nll",
    "reliability",
]

N_BINS = 15


def _conf_correct(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64)
    k = np.asarray(correct).astype(np.float64)
    if c.shape != k.shape:
        raise ValueError(f"confidence and correct differ in shape: {c.shape} vs {k.shape}")
    if np.isnan(c).any() or (c.size and (c.min() < -1e-6 or c.max() > 1 + 1e-6)):
        raise ValueError("confidence must lie in [0, 1] without nan")
    return c, k


def _bin_index(c: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin b of (b/B, (b+1)/B], confidence 0 in bin 0: the number of inner edges strictly below c."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], c, side="left")


def reliability(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
) -> dict[str, list[float]]:
    """Reliability table over equal-width bins (b/B, (b+1)/B] (confidence 0 in bin 0).

    Returns JSON-ready lists of length B: 'lower', 'upper' (bin edges), 'count' n_b (ints),
    'confidence' conf_b = mean confidence in the bin, 'accuracy' acc_b = mean correctness
    (both nan for empty bins).
    """
    c, k = _conf_correct(confidence, correct)
    c, k = c.reshape(-1), k.reshape(-1)
    idx = _bin_index(c, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sc = np.bincount(idx, weights=c, minlength=n_bins)
    sk = np.bincount(idx, weights=k, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, sc / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, sk / np.maximum(count, 1), np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "count": [int(n) for n in count],
        "confidence": conf.tolist(),
        "accuracy": acc.tolist(),
    }


def ece_batched(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE along the last axis for every leading index (e.g. bootstrap resamples (..., n)):

        ECE = Σ_b (n_b/n) |acc_b − conf_b| = (1/n) Σ_b |Σ_{x ∈ b} (correct_x − conf_x)|

    Returns an array of the leading shape (nan where n = 0).
    """
    c, k = _conf_correct(confidence, correct)
    if c.ndim == 0:
        raise ValueError("ece_batched needs arrays of shape (..., n)")
    lead, n = c.shape[:-1], c.shape[-1]
    if n == 0:
        return np.full(lead, np.nan)
    rows = int(np.prod(lead, dtype=np.int64))
    idx = _bin_index(c, n_bins).reshape(rows, n) + (np.arange(rows) * n_bins)[:, None]
    gap = np.bincount(idx.reshape(-1), weights=(k - c).reshape(-1), minlength=rows * n_bins)
    return (np.abs(gap.reshape(rows, n_bins)).sum(axis=1) / n).reshape(lead)


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error ECE = Σ_b (n_b/n) |acc_b − conf_b| over all examples
    (flattened); nan for empty input."""
    c, k = _conf_correct(confidence, correct)
    return float(ece_batched(c.reshape(-1), k.reshape(-1), n_bins))


def nll_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example −log p_g, shape (n,); p_g is floored at the smallest positive float64 so a
    zero probability gives a large finite value (≈ 708) instead of inf."""
    p, y = _probs_labels(probs, labels)
    return -np.log(np.maximum(_gt(p, y), np.finfo(np.float64).tiny))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Negative log-likelihood −(1/n) Σ_x log p_g(x) (nan for no examples)."""
    per = nll_per_example(probs, labels)
    return float(per.mean()) if per.size else float("nan")


def brier_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example Brier score Σ_i (p_i − 1[i = g])² = Σ_i p_i² − 2 p_g + 1, shape (n,)."""
    p, y = _probs_labels(probs, labels)
    return (p * p).sum(axis=1) - 2.0 * _gt(p, y) + 1.0


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score (1/n) Σ_x Σ_i (p_i(x) − 1[i = g(x)])² (nan for no examples)."""
    per = brier_per_example(probs, labels)
    return float(per.mean()) if per.size else float("nan")


def entropy_rows(p: np.ndarray) -> np.ndarray:
    """−Σ_i p_i log p_i per row, natural log, 0 log 0 = 0."""
    pos = p > 0
    return -np.where(pos, p * np.log(np.where(pos, p, 1.0)), 0.0).sum(axis=-1)


def mean_entropy(probs: np.ndarray) -> float:
    """Mean prediction entropy (1/n) Σ_x −Σ_i p_i log p_i (natural log, 0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (n, K), got shape {p.shape}")
    if p.shape[0] == 0:
        return float("nan")
    return float(entropy_rows(p).mean())


def calibration_summary(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> dict[str, float | int]:
    """Scalars 'accuracy', 'ece', 'nll', 'brier', 'entropy' and 'n' of the predictions.

    Top-1 confidence max_i p_i, correctness 1[argmax_i p_i = g] (ties: the lower index).
    """
    p, y = _probs_labels(probs, labels)
    correct = p.argmax(axis=1) == y if y.size else np.zeros(0, dtype=bool)
    return {
        "n": int(y.size),
        "accuracy": float(correct.mean()) if y.size else float("nan"),
        "ece": ece(p.max(axis=1) if y.size else np.zeros(0), correct, n_bins),
        "nll": nll(p, y),
        "brier": brier(p, y),
        "entropy": mean_entropy(p),
    }
