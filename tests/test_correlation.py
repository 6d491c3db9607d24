"""kdscope.correlation: known answers, agreement with scipy.stats on random data with ties, and
the edge cases (NaN, constant input, too few values)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from kdscope.correlation import (
    auroc,
    average_ranks,
    kendall_tau_b,
    partial_spearman,
    pearson,
    rank_residual,
    spearman,
)

NAN = float("nan")


def _tied(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 5, n).astype(np.float64)


def _scipy(f, *args, **kwargs) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f(*args, **kwargs).statistic)


# --------------------------------------------------------------------------------------------------
# average ranks


def test_average_ranks_by_hand() -> None:
    assert average_ranks([10.0, 20.0, 20.0, 5.0]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert average_ranks([3, 3, 3]).tolist() == [2.0, 2.0, 2.0]
    assert average_ranks(np.array([[2.0, 1.0], [1.0, 4.0]])).tolist() == [3.0, 1.5, 1.5, 4.0]
    assert average_ranks(np.zeros(0)).shape == (0,)


def test_average_ranks_puts_nans_last_and_tied() -> None:
    assert average_ranks([np.nan, 2.0, np.inf, np.nan, 1.0]).tolist() == [4.5, 2.0, 3.0, 4.5, 1.0]


def test_average_ranks_match_scipy() -> None:
    x = _tied(np.random.default_rng(0), 200)
    np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x))


# --------------------------------------------------------------------------------------------------
# Pearson and Spearman


def test_pearson_by_hand() -> None:
    # x̄ = 2, ȳ = 7/3: Σ dx dy = 3, Σ dx² = 2, Σ dy² = 14/3
    assert pearson([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(3 / np.sqrt(2 * 14 / 3))
    assert pearson([1.0, 2.0], [5.0, 3.0]) == -1.0
    assert pearson([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0]) == pytest.approx(1.0)


def test_spearman_by_hand_with_ties() -> None:
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): Σ dx dy = 4.5, Σ dx² = 4.5, Σ dy² = 5,
    # r = 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(np.sqrt(0.9))
    assert spearman([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == -1.0
    assert spearman([1.0, 5.0, 7.0], [0.1, 0.2, 100.0]) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_pearson_and_spearman_match_scipy_on_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = _tied(rng, 60)
    y = x + _tied(rng, 60)
    assert pearson(x, y) == pytest.approx(_scipy(stats.pearsonr, x, y), abs=1e-12)
    assert spearman(x, y) == pytest.approx(_scipy(stats.spearmanr, x, y), abs=1e-12)


def test_pearson_and_spearman_edge_cases() -> None:
    for f in (pearson, spearman):
        assert np.isnan(f([1.0], [2.0]))  # one pair
        assert np.isnan(f([], []))
        assert np.isnan(f(np.ones(5), np.arange(5.0)))  # constant side
        assert np.isnan(f(np.arange(5.0), np.full(5, 2.0)))
        assert np.isnan(f([1.0, np.nan, 3.0], [1.0, 2.0, np.nan]))  # one pair left
        with pytest.raises(ValueError, match="1-D arrays of equal length"):
            f(np.arange(4.0), np.arange(5.0))
        with pytest.raises(ValueError, match="1-D arrays of equal length"):
            f(np.ones((2, 2)), np.ones((2, 2)))
        with pytest.raises(ValueError, match="missing"):
            f([1.0, 2.0], [1.0, 2.0], missing="omit")  # type: ignore[arg-type]


def test_missing_drop_against_nan() -> None:
    x = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    y = np.array([2.0, 1.0, 4.0, 9.0, 3.0])
    for f in (pearson, spearman):
        assert f(x, y) == f(x[[0, 1, 2, 4]], y[[0, 1, 2, 4]])  # drop: the NaN pair goes
        assert np.isnan(f(x, y, missing="nan"))
    # ±inf: Pearson is undefined; Spearman ranks it as the extreme unless missing="nan"
    xi = np.array([1.0, 2.0, np.inf])
    assert np.isnan(pearson(xi, [1.0, 2.0, 3.0]))
    assert spearman(xi, [1.0, 2.0, 3.0]) == 1.0
    assert np.isnan(spearman(xi, [1.0, 2.0, 3.0], missing="nan"))


# --------------------------------------------------------------------------------------------------
# partial Spearman


def test_rank_residual_by_hand() -> None:
    # ranks y (1, 3, 2), control (1, 2, 3): centred (−1, 1, 0) and (−1, 0, 1), β = 1/2
    np.testing.assert_allclose(rank_residual([1.0, 9.0, 5.0], [0.0, 1.0, 2.0]), [-0.5, 1.0, -0.5])
    # constant control: β = 0, the centred ranks
    np.testing.assert_array_equal(rank_residual([3.0, 1.0, 2.0], np.ones(3)), [1.0, -1.0, 0.0])


def test_partial_spearman_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    z = _tied(rng, 80)
    x = z + _tied(rng, 80)
    y = z + x + _tied(rng, 80)
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    want = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert partial_spearman(x, y, z) == pytest.approx(want, abs=1e-12)


def test_partial_spearman_nan_when_the_control_explains_x() -> None:
    x = np.arange(6.0)
    assert np.isnan(partial_spearman(x, x[::-1] ** 2, 2 * x))


# --------------------------------------------------------------------------------------------------
# Kendall τ_b


def test_kendall_tau_b_by_hand() -> None:
    # x (1, 2, 2, 3), y (1, 3, 2, 4): pairs 6, concordant 5, tied in x 1, tied in y 0:
    # τ_b = 5 / sqrt(5 · 6)
    assert kendall_tau_b([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(
        5 / np.sqrt(30)
    )
    assert kendall_tau_b(np.arange(5.0), np.arange(5.0)[::-1]) == -1.0


def test_kendall_tau_b_rows_match_scipy() -> None:
    rng = np.random.default_rng(2)
    x = _tied(rng, 40 * 9).reshape(40, 9)
    y = x + _tied(rng, 40 * 9).reshape(40, 9)
    want = [_scipy(stats.kendalltau, a, b, variant="b") for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(kendall_tau_b(x, y), want, atol=1e-12)


def test_kendall_tau_b_edge_cases() -> None:
    assert np.isnan(kendall_tau_b([1.0, np.nan, 2.0], np.arange(3.0)))
    assert np.isnan(kendall_tau_b(np.ones(4), np.arange(4.0)))  # all tied on one side
    assert np.isnan(kendall_tau_b([1.0], [2.0]))
    out = kendall_tau_b(
        np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), np.tile(np.arange(3.0), (2, 1))
    )
    assert out[0] == 1.0 and np.isnan(out[1])
    with pytest.raises(ValueError, match="one shape"):
        kendall_tau_b(np.arange(3.0), np.arange(4.0))


# --------------------------------------------------------------------------------------------------
# AUROC


def test_auroc_by_hand() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9 > both) 2, (0.5 = 0.5) ½, (0.5 > 0.1) 1
    assert auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert auroc([0.1, 0.2, 0.3], [0, 0, 1]) == 1.0
    assert auroc([0.3, 0.2, 0.1], [0, 0, 1]) == 0.0


def test_auroc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    s = _tied(rng, 90)
    pos = rng.random(90) < 0.4
    u = stats.mannwhitneyu(s[pos], s[~pos], alternative="two-sided").statistic
    assert auroc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()), abs=1e-12)


def test_auroc_edge_cases() -> None:
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))  # no negatives
    assert np.isnan(auroc([0.1, 0.2], [0, 0]))
    assert np.isnan(auroc([], []))
    assert auroc([0.1, np.nan, 0.9], [0, 0, 1]) == 1.0  # the NaN score is dropped
    assert np.isnan(auroc([np.nan, 0.9], [0, 1]))  # …and with it the only negative
    with pytest.raises(ValueError, match="differ in size"):
        auroc([0.1, 0.2], [1])
