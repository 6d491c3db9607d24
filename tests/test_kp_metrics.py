"""Knowledge-point metrics against the hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from kdscope.correlation import spearman
from kdscope.knowledge_points.metrics import (
    B_DEFAULT,
    background_level,
    knowledge_points,
    learning_speed,
    point_counts,
    stability,
)

# --------------------------------------------------------------------------------------------------
# hand-built trajectory, 4 units, fg {0, 1}, bg {2, 3}, inputs A and B, checkpoints 0..3

H_105 = np.array(
    [
        [  # input A
            [-2.8, -2.8, -2.8, -2.8],
            [-3.3, -2.7, -2.6, -2.9],
            [-3.4, -3.3, -2.6, -2.7],
            [-3.2, -2.7, -2.5, -2.8],
        ],
        [  # input B
            [-2.8, -2.8, -2.8, -2.8],
            [-3.3, -3.4, -2.5, -2.7],
            [-3.0, -2.7, -2.4, -3.2],
            [-3.3, -3.1, -2.7, -2.5],
        ],
    ]
)
FG_105 = np.array([[True, True, False, False]] * 2)
D_105 = np.cumsum([0.0, 0.4, 0.3, 0.2])  # (0, 0.4, 0.7, 0.9)
POINTS_105 = {  # (input, checkpoint) -> unit set
    (0, 0): set(),
    (0, 1): {0, 3},
    (0, 2): {0, 1},
    (0, 3): {0},
    (1, 0): set(),
    (1, 1): {0, 1},
    (1, 2): {0, 3},
    (1, 3): {0, 1},
}


def _points_105() -> np.ndarray:
    return knowledge_points(H_105, background_level(H_105, FG_105))


def test_b_default_is_the_reference_threshold() -> None:
    assert B_DEFAULT == 0.2


def test_trajectory_distance() -> None:
    np.testing.assert_allclose(D_105, [0.0, 0.4, 0.7, 0.9], atol=1e-12)


def test_trajectory_background_level() -> None:
    level = background_level(H_105, FG_105)
    assert level.shape == (4,)
    np.testing.assert_allclose(level, [-2.8, -2.675, -2.725, -2.625], atol=1e-12)


def test_trajectory_knowledge_point_sets() -> None:
    points = _points_105()
    assert points.shape == (2, 4, 4)
    assert points.dtype == bool
    for (x, k), units in POINTS_105.items():
        assert set(np.flatnonzero(points[x, k]).tolist()) == units, (x, k)


def test_trajectory_counts_and_quality() -> None:
    c = point_counts(_points_105(), FG_105)
    np.testing.assert_array_equal(c["n_fg"], [[0, 1, 2, 1], [0, 2, 1, 2]])
    np.testing.assert_array_equal(c["n_bg"], [[0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(c["n_total"], [[0, 2, 2, 1], [0, 2, 2, 2]])
    np.testing.assert_allclose(c["quality"], [[0, 0.5, 1, 1], [0, 1, 0.5, 1]])
    np.testing.assert_allclose(c["fg_ratio"], [[0, 0.5, 1, 0.5], [0, 1, 0.5, 1]])
    np.testing.assert_allclose(c["bg_ratio"], [[0, 0.5, 0, 0], [0, 0, 0.5, 0]])
    # final checkpoint: mean N_fg 1.5, mean N_bg 0, quality 1.0
    assert c["n_fg"][:, -1].mean() == pytest.approx(1.5)
    assert c["n_bg"][:, -1].mean() == pytest.approx(0.0)
    assert c["quality"][:, -1].mean() == pytest.approx(1.0)
    # checkpoint 1: 1.5, 0.5, 0.75
    assert c["n_fg"][:, 1].mean() == pytest.approx(1.5)
    assert c["n_bg"][:, 1].mean() == pytest.approx(0.5)
    assert c["quality"][:, 1].mean() == pytest.approx(0.75)
    # checkpoint 0: no points, quality 0 by the 0/0 rule
    np.testing.assert_array_equal(c["quality"][:, 0], [0.0, 0.0])


def test_trajectory_learning_speed() -> None:
    c = point_counts(_points_105(), FG_105)
    s = learning_speed(c["n_fg"], D_105)
    np.testing.assert_array_equal(s["m_hat"], [2, 1])  # B: first of the tied maxima
    np.testing.assert_allclose(s["d"], [0.7, 0.4])
    assert s["d_mean"] == pytest.approx(0.55)
    assert s["d_std"] == pytest.approx(0.15)
    assert s["d_var"] == pytest.approx(0.0225)
    np.testing.assert_allclose(s["slope"], [2 / 0.7, 2 / 0.4])


@pytest.mark.parametrize("include_initial", [True, False])
def test_trajectory_stability(include_initial: bool) -> None:
    rho = stability(_points_105(), FG_105, include_initial=include_initial)
    np.testing.assert_allclose(rho, [0.5, 1.0])
    assert rho.mean() == pytest.approx(0.75)


def test_trajectory_stability_background_and_all() -> None:
    points = _points_105()
    # bg: A final {} / union {3} -> 0; B final {} / union {3} -> 0
    np.testing.assert_allclose(stability(points, FG_105, which="bg"), [0.0, 0.0])
    # all: A final {0} / union {0, 1, 3} -> 1/3; B final {0, 1} / union {0, 1, 3} -> 2/3
    np.testing.assert_allclose(stability(points, FG_105, which="all"), [1 / 3, 2 / 3])


def test_stability_initial_checkpoint_matters_when_it_has_points() -> None:
    # one input, fg units {0, 1}; epoch 0 has point 1, later checkpoints only point 0
    points = np.array([[[False, True, False], [True, False, False], [True, False, False]]])
    fg = np.array([[True, True, False]])
    assert stability(points, fg, include_initial=True)[0] == pytest.approx(0.5)
    assert stability(points, fg, include_initial=False)[0] == pytest.approx(1.0)


def test_stability_is_zero_for_an_empty_union() -> None:
    points = np.zeros((2, 3, 4), dtype=bool)
    np.testing.assert_array_equal(stability(points, FG_105), [0.0, 0.0])


# --------------------------------------------------------------------------------------------------
# knowledge points at the calibrated optimum, fixture B


def test_fixture_b_knowledge_points_at_the_optimum() -> None:
    c = np.array([1.0, 4.0, 9.0, 36.0])
    h = -2.8 - 0.5 * (np.log(c) - np.log(c).mean())
    np.testing.assert_allclose(h, [-1.9041, -2.5973, -3.0027, -3.6959], atol=1e-4)
    assert h.mean() == pytest.approx(-2.8)
    entropy = h[None, None, :]  # single input, single checkpoint
    fg = np.array([[False, False, True, True]])  # bg = {0, 1}, fg = {2, 3}
    level = background_level(entropy, fg)
    np.testing.assert_allclose(level[0] - h, [-0.3466, 0.3466, 0.7520, 1.4452], atol=1e-4)
    points = knowledge_points(entropy, level)
    np.testing.assert_array_equal(points[0, 0], [False, True, True, True])
    counts = point_counts(points, fg)
    assert counts["n_fg"][0, 0] == 2
    assert counts["n_bg"][0, 0] == 1
    assert counts["quality"][0, 0] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------------
# threshold, per-input level, invalid units


@pytest.mark.parametrize("b", [0.25, 0.5])
def test_threshold_is_strict(b: float) -> None:
    # level = -2.5 exactly; unit 0 sits exactly b below it (all values exact in binary)
    entropy = np.array([[[-2.5 - b, -2.5 - 2 * b, -2.5, -2.5]]])
    fg = np.array([[True, True, False, False]])
    level = background_level(entropy, fg)
    assert level[0] == -2.5
    assert level[0] - entropy[0, 0, 0] == b
    points = knowledge_points(entropy, level, b=b)
    np.testing.assert_array_equal(points[0, 0], [False, True, False, False])
    # a slightly smaller threshold turns unit 0 into a point
    points = knowledge_points(entropy, level, b=np.nextafter(b, 0.0))
    np.testing.assert_array_equal(points[0, 0], [True, True, False, False])


def test_per_input_background_level() -> None:
    level = background_level(H_105, FG_105, per_input=True)
    assert level.shape == (2, 4)
    np.testing.assert_allclose(
        level, [[-2.8, -2.75, -2.65, -2.65], [-2.8, -2.6, -2.8, -2.6]], atol=1e-12
    )
    # b = 0.25 keeps every difference away from the threshold (B ckpt 2 unit 0 sits at 0.2)
    points = knowledge_points(H_105, level, b=0.25)
    # A ckpt 1 (level -2.75): diffs (0.55, -0.05, -0.15, 0.15) -> {0}
    assert np.flatnonzero(points[0, 1]).tolist() == [0]
    # B ckpt 2 (level -2.8): diffs (0.2, -0.1, -0.4, 0.4) -> {3}
    assert np.flatnonzero(points[1, 2]).tolist() == [3]
    c = point_counts(points, FG_105)
    np.testing.assert_array_equal(c["n_fg"], [[0, 1, 2, 1], [0, 2, 0, 2]])
    np.testing.assert_array_equal(c["n_bg"], [[0, 0, 0, 0], [0, 0, 1, 0]])


def test_level_of_wrong_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="level must have shape"):
        knowledge_points(H_105, np.zeros(3))
    with pytest.raises(ValueError, match="level must have shape"):
        knowledge_points(H_105, np.zeros((4, 2)))


def test_invalid_units_are_excluded_from_level_and_counts() -> None:
    # unit 4 is padding with a very low (would-be point) entropy; unit 5 is invalid background
    # whose entropy would otherwise shift the level
    entropy = np.array([[[-3.0, -2.5, -2.5, -2.5, -9.0, 4.0]]])
    fg = np.array([[True, False, False, False, True, False]])
    valid = np.array([[True, True, True, True, False, False]])
    level = background_level(entropy, fg, valid=valid)
    assert level[0] == pytest.approx(-2.5)
    assert background_level(entropy, fg)[0] == pytest.approx(-0.875)  # without the mask
    points = knowledge_points(entropy, level, valid=valid)
    np.testing.assert_array_equal(points[0, 0], [True, False, False, False, False, False])
    # points on invalid units are ignored by the counts even when passed in
    points_all = knowledge_points(entropy, level)
    assert points_all[0, 0, 4]
    c = point_counts(points_all, fg, valid=valid)
    assert c["n_fg"][0, 0] == 1
    assert c["n_bg"][0, 0] == 0
    assert c["quality"][0, 0] == pytest.approx(1.0)
    assert c["fg_ratio"][0, 0] == pytest.approx(1.0)  # |fg| = 1 valid unit
    assert c["bg_ratio"][0, 0] == pytest.approx(0.0)  # |bg| = 3 valid units
    assert stability(points_all, fg, valid=valid)[0] == pytest.approx(1.0)


def test_input_without_background_is_left_out_of_the_level() -> None:
    entropy = np.array([[[-3.0, -2.0]], [[-3.0, -3.0]]])  # (I=2, K=1, n=2)
    fg = np.array([[True, False], [True, True]])  # input 1 has no background
    per = background_level(entropy, fg, per_input=True)
    assert per[0, 0] == pytest.approx(-2.0)
    assert np.isnan(per[1, 0])
    assert background_level(entropy, fg)[0] == pytest.approx(-2.0)
    assert np.isnan(point_counts(np.zeros((2, 1, 2), bool), fg)["bg_ratio"][1, 0])


def test_slope_is_nan_at_zero_distance() -> None:
    s = learning_speed(np.array([[3, 1, 2], [0, 4, 4]]), np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(s["m_hat"], [0, 1])
    np.testing.assert_allclose(s["d"], [0.0, 0.5])
    assert np.isnan(s["slope"][0])
    assert s["slope"][1] == pytest.approx(8.0)
    assert s["d_mean"] == pytest.approx(0.25)
    assert s["d_var"] == pytest.approx(0.0625)
    assert s["d_std"] == pytest.approx(0.25)


# --------------------------------------------------------------------------------------------------
# spearman


def test_spearman_with_ties_by_hand() -> None:
    # ranks a = (1, 2.5, 2.5, 4), b = (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == (
        pytest.approx(np.sqrt(0.9), abs=1e-12)
    )
    # ties in both: ranks (1.5, 1.5, 3, 4) and (2, 2, 2, 4): r = 3 / sqrt(4.5 * 3) = sqrt(2/3)
    assert spearman(np.array([5.0, 5.0, 7.0, 9.0]), np.array([0.0, 0.0, 0.0, 1.0])) == (
        pytest.approx(np.sqrt(2 / 3), abs=1e-12)
    )
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0])) == pytest.approx(-1.0)


def test_spearman_random_permutation_matches_rank_pearson() -> None:
    n = 50
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    a = np.linspace(-1.0, 3.0, n) ** 3  # strictly increasing: ranks 1..n
    b = np.exp(perm / 10.0)  # strictly increasing in perm: ranks perm + 1
    expected = np.corrcoef(np.arange(1, n + 1), perm + 1)[0, 1]
    closed_form = 1 - 6 * np.sum((np.arange(n) - perm) ** 2) / (n * (n * n - 1))
    assert expected == pytest.approx(closed_form, abs=1e-12)
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(b, a) == pytest.approx(expected, abs=1e-12)


def test_spearman_nan_for_constant_input() -> None:
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    assert np.isnan(spearman(np.arange(5.0), np.full(5, 2.0)))


def test_spearman_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="1-D arrays of equal length"):
        spearman(np.arange(4.0), np.arange(5.0))
    with pytest.raises(ValueError, match="1-D arrays of equal length"):
        spearman(np.ones((2, 2)), np.ones((2, 2)))


# --------------------------------------------------------------------------------------------------
# shape validation


def test_shape_mismatch_errors() -> None:
    with pytest.raises(ValueError, match=r"entropy must have shape \(I, K, n\)"):
        background_level(np.zeros((2, 4)), FG_105)
    with pytest.raises(ValueError, match=r"foreground must have shape \(I, n\) = \(2, 4\)"):
        background_level(H_105, np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"valid must have shape \(I, n\) = \(2, 4\)"):
        background_level(H_105, FG_105, valid=np.ones((1, 4), bool))
    with pytest.raises(ValueError, match=r"valid must have shape"):
        knowledge_points(H_105, np.zeros(4), valid=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match=r"points must have shape \(I, K, n\)"):
        point_counts(np.zeros((2, 4), bool), FG_105)
    with pytest.raises(ValueError, match=r"foreground must have shape"):
        point_counts(np.zeros((3, 4, 4), bool), FG_105)
    with pytest.raises(ValueError, match=r"n_fg must have shape \(I, K\)"):
        learning_speed(np.zeros(4), D_105)
    with pytest.raises(ValueError, match=r"distance must have shape \(K,\) = \(4,\)"):
        learning_speed(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError, match=r"foreground must have shape"):
        stability(np.zeros((2, 4, 4), bool), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="which must be"):
        stability(np.zeros((2, 4, 4), bool), FG_105, which="edge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        stability(np.zeros((2, 1, 4), bool), FG_105, include_initial=False)
