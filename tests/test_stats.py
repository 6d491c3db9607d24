"""The hierarchical bootstrap against cases with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kdscope.stats import hierarchical_bootstrap, summarise


def test_constant_values_give_a_degenerate_interval() -> None:
    assert hierarchical_bootstrap([np.full(50, 0.7), np.full(30, 0.7)]) == pytest.approx((0.7, 0.7))


def test_one_seed_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.3).astype(float)
    lo, hi = hierarchical_bootstrap([x], n_boot=4000)
    se = np.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.004)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.004)


def test_no_within_seed_noise_reduces_to_resampling_seeds() -> None:
    means = [0.1, 0.5, 0.9, 0.2]
    # exact distribution of the mean of 4 seeds drawn with replacement: 256 equally likely draws
    exact = np.sort([np.mean(c) for c in itertools.product(means, repeat=4)])

    def quantile(q: float) -> float:  # smallest value whose CDF reaches q
        return float(exact[int(np.ceil(q * len(exact))) - 1])

    lo, hi = hierarchical_bootstrap([np.full(20, m) for m in means], n_boot=20000)
    assert quantile(0.02) - 1e-9 <= lo <= quantile(0.03) + 1e-9
    assert quantile(0.97) - 1e-9 <= hi <= quantile(0.98) + 1e-9


def test_summarise_reports_per_seed_mean_std() -> None:
    s = summarise({0: np.array([1.0, 0.0]), 2: np.array([1.0, 1.0])})
    assert s["per_seed"] == {"0": 0.5, "2": 1.0}
    assert s["mean"] == 0.75 and s["std"] == pytest.approx(0.25)
    assert s["ci95"][0] <= 0.75 <= s["ci95"][1]


def test_statistic_of_paired_columns() -> None:
    # std(student) - std(baseline) per seed; no input noise when every resample is the same set
    a = np.array([[0.0, 1.0], [2.0, 1.0]])  # student std 1, baseline std 0
    b = np.array([[1.0, 5.0], [1.0, 5.0]])  # student std 0, baseline std 0

    def std_diff(r: np.ndarray) -> np.ndarray:
        return r[..., 0].std(-1) - r[..., 1].std(-1)

    s = summarise({0: a, 1: b}, statistic=std_diff)
    assert s["per_seed"] == {"0": 1.0, "1": 0.0}
    assert s["mean"] == 0.5
    # a resample of a's rows has std 1 (both rows drawn) or 0 (one row twice): interval in [0, 1]
    assert 0.0 <= s["ci95"][0] <= s["ci95"][1] <= 1.0
    assert hierarchical_bootstrap([b], statistic=std_diff) == (0.0, 0.0)


def test_few_valued_fast_path_matches_row_resampling() -> None:
    """Correctness-like rows take the multinomial path; its interval agrees with resampling rows
    (forced by passing the mean as an explicit statistic) up to Monte Carlo error."""
    rng = np.random.default_rng(3)
    rows = [(rng.random(400) < p).astype(float) - (rng.random(400) < 0.2) for p in (0.6, 0.7, 0.8)]
    fast = hierarchical_bootstrap(rows, n_boot=4000)
    slow = hierarchical_bootstrap(
        rows, n_boot=4000, statistic=lambda r: r.reshape(*r.shape[:3], -1)[..., 0].mean(-1)
    )
    assert fast == pytest.approx(slow, abs=0.01)
    assert fast[0] < np.mean([r.mean() for r in rows]) < fast[1]
