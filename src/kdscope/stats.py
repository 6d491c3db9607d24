"""Intervals for per-seed, per-input measurements: hierarchical bootstrap (seeds, then inputs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def hierarchical_bootstrap(
    per_seed: Sequence[np.ndarray], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of per-seed input means.

    Each resample draws seeds with replacement, then, independently for every drawn seed, its
    inputs with replacement; the statistic is the mean over drawn seeds of their input means.
    With one seed this is the ordinary bootstrap over inputs.
    """
    rng = np.random.default_rng(seed)
    k = len(per_seed)
    # inner[i, b, j]: mean of a fresh input resample of seed i, for slot j of resample b
    inner = np.stack(
        [
            np.asarray(v, dtype=np.float64)[rng.integers(0, len(v), size=(n_boot, k, len(v)))].mean(
                -1
            )
            for v in per_seed
        ]
    )
    chosen = rng.integers(0, k, size=(n_boot, k))
    stats = inner[chosen, np.arange(n_boot)[:, None], np.arange(k)[None, :]].mean(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarise(per_seed: dict[int, np.ndarray], n_boot: int = 2000) -> dict[str, Any]:
    """Per-seed means, their mean and population std, and the hierarchical 95 % interval."""
    seeds = sorted(per_seed)
    means = [float(np.mean(per_seed[s])) for s in seeds]
    lo, hi = hierarchical_bootstrap([per_seed[s] for s in seeds], n_boot=n_boot)
    return {
        "per_seed": {str(s): m for s, m in zip(seeds, means, strict=True)},
        "mean": float(np.mean(means)),
        "std": float(np.std(means)),
        "ci95": [lo, hi],
    }
