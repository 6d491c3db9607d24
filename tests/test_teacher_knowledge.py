"""Pure-numpy core of the three-levels analyses against hand-computed goldens
and brute-force references."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from kdscope import teacher_knowledge as tk

SUP4 = np.array([0, 0, 1, 1])
S_GOLDEN = np.array(
    [[1, 0.5, 0, -0.2], [0.5, 1, -0.2, 0], [0, -0.2, 1, 0.6], [-0.2, 0, 0.6, 1]], dtype=float
)
Z_GOLDEN = np.array([[2.0, 1.0, 0.0, -1.0]])
V_GOLDEN = np.array([[3.0, 1.5, 0.0, -0.5]])
LAM = 0.7


# --------------------------------------------------------------------------------------------------
# brute-force references


def _avg_ranks_brute(x: np.ndarray) -> np.ndarray:
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2.0 for v in x])


def _kendall_brute(x: np.ndarray, y: np.ndarray) -> float:
    num = nx = ny = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        num += sx * sy
        nx += sx != 0
        ny += sy != 0
    return num / np.sqrt(nx * ny) if nx * ny else float("nan")


def _auroc_brute(s: np.ndarray, pos: np.ndarray) -> float:
    total = 0.0
    for a in s[pos]:
        for b in s[~pos]:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (pos.sum() * (~pos).sum())


# --------------------------------------------------------------------------------------------------
# calibration


def test_ece_golden_and_reliability_bins():
    conf, correct = np.array([0.9, 0.9, 0.65, 0.65]), np.array([1, 0, 1, 1])
    assert tk.ece(conf, correct) == pytest.approx(0.375, abs=1e-12)
    table = tk.reliability(conf, correct)
    assert np.nonzero(table["count"])[0].tolist() == [9, 13]
    assert table["accuracy"][13] == pytest.approx(0.5) and table["confidence"][9] == 0.65
    assert np.isnan(table["accuracy"][0])
    # bin edges are right-closed; confidence 0 goes to the first bin
    edge = tk.reliability(np.array([0.0, 1 / 15, 2 / 15, 1.0]), np.ones(4))
    assert edge["count"][:2] == [2, 1] and edge["count"][-1] == 1
    json.dumps(table)


def test_ece_calibrated_sample_and_batched():
    rng = np.random.default_rng(0)
    c = rng.random(200_000)
    correct = rng.random(c.size) < c
    assert tk.ece(c, correct) < 0.01
    batch_c, batch_k = rng.random((3, 2, 50)), rng.random((3, 2, 50)) < 0.5
    batched = tk.ece_batched(batch_c, batch_k)
    assert batched.shape == (3, 2)
    for i, j in itertools.product(range(3), range(2)):
        assert batched[i, j] == pytest.approx(tk.ece(batch_c[i, j], batch_k[i, j]), abs=1e-12)


def test_nll_brier_entropy_summary():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    y = np.array([0, 1])
    assert tk.nll(p, y) == pytest.approx(-(np.log(0.5) + np.log(0.2)) / 2)
    assert tk.brier(p, y) == pytest.approx((0.25 + 0.25 + (0.04 + 0.64 + 0.36)) / 2)
    assert tk.brier_per_example(p, y).tolist() == pytest.approx([0.5, 1.04])
    h0 = -2 * 0.5 * np.log(0.5)  # 0 log 0 = 0
    h1 = -(2 * 0.2 * np.log(0.2) + 0.6 * np.log(0.6))
    assert tk.mean_entropy(p) == pytest.approx((h0 + h1) / 2)
    s = tk.calibration_summary(p, y)
    assert set(s) == {"n", "accuracy", "ece", "nll", "brier", "entropy"}
    assert s["accuracy"] == 0.5  # row 0 ties → index 0 = label
    assert all(isinstance(v, float | int) for v in s.values())


# --------------------------------------------------------------------------------------------------
# rescaling


def test_rescaling_goldens():
    rho1 = tk.softmax(V_GOLDEN)
    assert rho1[0] == pytest.approx([0.767392, 0.171228, 0.038206, 0.023173], abs=1e-6)
    r = tk.rescaling_factors(Z_GOLDEN, rho1, [0], 1.0, 1 - LAM, LAM)
    assert r.grad[0] == pytest.approx([-0.193260, 0.117023, 0.060400, 0.015837], abs=1e-6)
    assert r.w[0] == pytest.approx(0.542735, abs=1e-6) and r.w_g[0] == pytest.approx(r.w[0])
    assert r.condition[0] and r.tail_nonnegative[0]
    assert tk.closed_form_w(rho1[0, 0], r.p_g[0], LAM) == pytest.approx(r.w[0], abs=1e-12)
    r2 = tk.rescaling_factors(Z_GOLDEN, tk.softmax(V_GOLDEN, 2.0), [0], 2.0, 1 - LAM, LAM)
    assert r2.grad[0] == pytest.approx([-0.218705, 0.103690, 0.093396, 0.021620], abs=1e-6)
    assert r2.w[0] == pytest.approx(0.614192, abs=1e-6)
    assert r2.w_g[0] == pytest.approx(0.614192, abs=1e-6)


def _random_state(n: int = 3000, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    v = rng.normal(0, 3.0, (n, k))
    y = rng.integers(0, k, n)
    return z, v, y


def test_closed_form_equals_exact_when_condition_holds():
    z, v, y = _random_state()
    rho = tk.softmax(v)
    r = tk.rescaling_factors(z, rho, y, 1.0, 1 - LAM, LAM)
    closed = tk.closed_form_w(rho[np.arange(len(y)), y], r.p_g, LAM)
    assert 0 < r.condition.mean() < 1  # both cases occur
    np.testing.assert_allclose(r.w[r.condition], closed[r.condition], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.w_g, closed, rtol=1e-10, atol=1e-12)  # w_g is always closed-form
    assert (r.condition == r.tail_nonnegative).all()  # same condition at τ = 1
    assert (r.w >= np.abs(r.w_g) - 1e-12).all()
    assert (r.w[~r.condition] > closed[~r.condition] + 1e-12).all()


def test_w_at_initialisation_is_affine_in_rho_g():
    _, v, y = _random_state(seed=1)
    rho = tk.softmax(v)
    r = tk.rescaling_factors(np.zeros_like(v), rho, y, 1.0, 1 - LAM, LAM)
    rho_g = rho[np.arange(len(y)), y]
    assert tk.pearson(r.w_g, rho_g) == pytest.approx(1.0, abs=1e-12)
    assert tk.spearman(r.w_g, rho_g) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
def test_kd_and_kd_pt_share_w_g(tau):
    z, v, y = _random_state(n=500, seed=2)
    rho = tk.softmax(v, tau)
    k = rho.shape[1]
    rho_g = rho[np.arange(len(y)), y]
    q_pt = np.repeat(((1 - rho_g) / (k - 1))[:, None], k, axis=1)
    q_pt[np.arange(len(y)), y] = rho_g
    kd = tk.rescaling_factors(z, rho, y, tau, 1 - LAM, LAM)
    pt = tk.rescaling_factors(z, q_pt, y, tau, 1 - LAM, LAM)
    np.testing.assert_allclose(kd.w_g, pt.w_g, rtol=1e-12, atol=1e-12)


def test_saturated_student_gives_nan():
    r = tk.rescaling_factors(
        np.array([[1000.0, 0.0, 0.0]]), np.full((1, 3), 1 / 3), [0], 1.0, 0.3, 0.7
    )
    assert np.isnan(r.w[0]) and np.isnan(r.w_g[0])
    assert np.isnan(tk.closed_form_w(0.5, 1.0, 0.7))


def test_decile_curve_bins_and_ties():
    x = np.arange(100.0)
    c = tk.decile_curve(x, 2 * x)
    assert c["count"].tolist() == [10] * 10
    np.testing.assert_allclose(c["y"], 2 * c["x"])
    tied = tk.decile_curve(np.repeat([0.0, 1.0, 2.0], [50, 30, 20]), np.ones(100))
    assert tied["count"].sum() == 100 and len(tied["count"]) <= 3
    assert tied["x"].tolist() == [0.0, 1.0, 2.0]
    const = tk.decile_curve(np.ones(7), np.arange(7.0))
    assert const["count"].tolist() == [7] and const["y"][0] == 3.0
    assert tk.decile_curve(np.array([np.nan, 1.0]), np.array([1.0, 2.0]))["count"].tolist() == [1]


def test_pearson_spearman_ties_nan_and_constant():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)
    y = x + rng.integers(0, 3, 40)
    rx, ry = _avg_ranks_brute(x), _avg_ranks_brute(y)
    assert tk.spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1], abs=1e-12)
    assert tk.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    xn, yn = np.append(x, np.nan), np.append(y, 7.0)
    assert tk.spearman(xn, yn) == pytest.approx(tk.spearman(x, y))
    assert tk.pearson(xn, yn) == pytest.approx(tk.pearson(x, y))
    assert np.isnan(tk.pearson(np.full(5, 0.1), np.arange(5.0)))
    assert np.isnan(tk.spearman(np.ones(5), np.arange(5.0)))
    assert np.isnan(tk.pearson([1.0], [2.0]))


# --------------------------------------------------------------------------------------------------
# geometry


def test_hierarchy_goldens():
    assert tk.hierarchy_score(S_GOLDEN, SUP4) == pytest.approx(0.65, abs=1e-12)
    pr, _ = tk.hierarchy_correlation(S_GOLDEN, SUP4)
    assert pr == pytest.approx(0.962303, abs=1e-6)
    assert tk.hierarchy_score(np.eye(4), SUP4) == 0.0
    assert tk.upper(S_GOLDEN).tolist() == [0.5, 0, -0.2, -0.2, 0, 0.6]


def test_class_similarity_centred_and_bias():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 5))
    s = tk.class_similarity(w)
    np.testing.assert_allclose(s, tk.class_similarity(w + rng.normal(size=5)), atol=1e-12)
    np.testing.assert_allclose(np.diag(s), 1.0)
    np.testing.assert_allclose(s, s.T)
    raw = tk.class_similarity(w, centred=False)
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(raw, u @ u.T, atol=1e-12)
    b = rng.normal(size=6)
    wb = np.concatenate([w, b[:, None]], axis=1)
    np.testing.assert_allclose(
        tk.class_similarity(w, b, include_bias=True), tk.class_similarity(wb), atol=1e-12
    )
    with pytest.raises(ValueError):
        tk.class_similarity(w, include_bias=True)


def _random_symmetric(rng: np.random.Generator, k: int) -> np.ndarray:
    a = rng.normal(size=(k, k))
    return (a + a.T) / 2


def test_mantel_self_and_null():
    rng = np.random.default_rng(5)
    a = _random_symmetric(rng, 10)
    r, p = tk.mantel(a, a)
    assert r == pytest.approx(1.0) and p <= 0.01
    ps = np.array(
        [
            tk.mantel(_random_symmetric(rng, 10), _random_symmetric(rng, 10), 99, seed=i)[1]
            for i in range(200)
        ]
    )
    assert 0.01 <= (ps < 0.05).mean() <= 0.12
    assert abs(ps.mean() - 0.5) <= 0.1
    big = _random_symmetric(rng, 100)
    r100, p100 = tk.mantel(big, big + 0.1 * _random_symmetric(rng, 100), permutations=999)
    assert r100 > 0.9 and p100 == pytest.approx(1 / 1000)


def test_kendall_tau_b_against_brute_force():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 4, (30, 9)).astype(float)  # many ties
    y = rng.integers(0, 3, (30, 9)).astype(float)
    y[0] = 1.0  # all tied → nan
    got = tk.kendall_tau_b(x, y)
    want = np.array([_kendall_brute(a, b) for a, b in zip(x, y, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert np.isnan(got[0])
    assert tk.kendall_tau_b(np.arange(5.0), np.arange(5.0)[::-1]) == -1.0
    assert np.isnan(tk.kendall_tau_b(np.array([1.0, np.nan, 2.0]), np.arange(3.0)))


def test_distance_order_is_exact_when_student_matches_teacher():
    rng = np.random.default_rng(7)
    k, d, n = 12, 8, 200
    w = rng.normal(size=(k, d))
    w *= 2.0 / np.linalg.norm(w, axis=1, keepdims=True)  # equal norms
    h = rng.normal(size=(n, d))
    rho = tk.softmax(h @ w.T)  # p = ρ, zero bias
    y = rng.integers(0, k, n)
    out = tk.distance_order_agreement(h, w, None, rho, y)
    assert out["tau_b"] == 1.0 and out["n_valid"] == n
    assert out["norm_cv"] < 1e-12 and out["bias_std"] == 0.0
    anti = tk.distance_order_agreement(h, w, np.zeros(k), 1 - rho, y)
    assert anti["tau_b"] == -1.0


# --------------------------------------------------------------------------------------------------
# soft-label structure

RHO4 = np.array(
    [
        [0.6, 0.3, 0.06, 0.04],  # g = 0: sibling share 0.3 / 0.4 = 0.75
        [0.1, 0.1, 0.5, 0.3],  # g = 2: sibling share 0.3 / 0.5 = 0.6
        [1.0, 0.0, 0.0, 0.0],  # ρ_g = 1: skipped
    ]
)
Y4 = np.array([0, 2, 0])


def test_relational_mass_by_hand():
    out = tk.relational_mass(RHO4, Y4, SUP4)
    assert out["n"] == 2
    assert out["mass"] == pytest.approx(0.675)
    assert out["chance"] == pytest.approx(1 / 3)
    assert out["excess"] == pytest.approx((0.675 - 1 / 3) / (2 / 3))
    assert tk.non_gt_mass(RHO4, Y4) == pytest.approx((0.4 + 0.5 + 0.0) / 3)


def test_tail_concentration_uniform_and_peaked():
    k, n = 10, 4
    rho = np.full((n, k), 0.5 / (k - 1))
    y = np.arange(n)
    rho[np.arange(n), y] = 0.5
    out = tk.tail_concentration(rho, y)
    assert out["normalised_entropy"] == pytest.approx(1.0)
    assert out["top5_mass"] == pytest.approx(5 / 9)
    peaked = tk.tail_concentration(RHO4[:1], Y4[:1], top=1)
    r = np.array([0.3, 0.06, 0.04]) / 0.4
    assert peaked["normalised_entropy"] == pytest.approx(-(r * np.log(r)).sum() / np.log(3))
    assert peaked["top1_mass"] == pytest.approx(0.75)


def test_class_mean_correlation_and_offdiag():
    m = tk.class_mean_matrix(RHO4, Y4, 4)
    np.testing.assert_allclose(m[0], [0.8, 0.15, 0.03, 0.02])
    assert np.isnan(m[1]).all() and np.isnan(m[3]).all()
    rho = np.array([[0.5, 0.5, 0.0], [0.7, 0.3, 0.0], [0.2, 0.8, 0.0]])
    r = tk.class_correlation(rho)
    np.testing.assert_allclose(r, [[1, -1, 0], [-1, 1, 0], [0, 0, 1]], atol=1e-12)
    asym = np.array(
        [[9, 0.4, 0.1, 0.0], [0.2, 9, 0.0, 0.1], [0.1, 0.0, 9, 0.3], [0.0, 0.1, 0.5, 9]]
    )
    out = tk.offdiag_hierarchy(asym, SUP4)
    same = [0.4, 0.2, 0.3, 0.5]
    cross = [0.1, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 0.1]
    assert out["score"] == pytest.approx(np.mean(same) - np.mean(cross))
    ind = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1], dtype=float)
    vals = asym[~np.eye(4, dtype=bool)]
    assert out["pearson"] == pytest.approx(np.corrcoef(vals, ind)[0, 1])


# --------------------------------------------------------------------------------------------------
# teacher check


def test_auroc_against_brute_force():
    rng = np.random.default_rng(8)
    s = rng.integers(0, 6, 60).astype(float)
    pos = rng.random(60) < 0.4
    assert tk.auroc(s, pos) == pytest.approx(_auroc_brute(s, pos), abs=1e-12)
    assert tk.auroc([0.1, 0.9], [False, True]) == 1.0
    assert np.isnan(tk.auroc([0.1, 0.9], [True, True]))


SUP20 = np.repeat(np.arange(5), 4)  # 5 superclasses × 4 classes


def _teacher(n_per: int, rho_g: np.ndarray | float, sibling_share: float | None, seed: int):
    """Teacher logits log ρ on K = 20 classes: ρ_g given, the wrong-class mass split with
    ``sibling_share`` going to the 3 same-superclass classes (None: uniform wrong-class mass)."""
    rng = np.random.default_rng(seed)
    k = SUP20.size
    y = np.repeat(np.arange(k), n_per)
    n = y.size
    g = np.broadcast_to(np.asarray(rho_g, dtype=float), (n,))
    same = (SUP20[None, :] == SUP20[y][:, None]) & (np.arange(k)[None, :] != y[:, None])
    if sibling_share is None:
        tail = np.where(np.arange(k)[None, :] == y[:, None], 0.0, 1.0)
    else:
        jitter = rng.uniform(0.5, 1.5, (n, k))
        tail = np.where(same, sibling_share / 3, (1 - sibling_share) / 16) * jitter
        tail[np.arange(n), y] = 0.0
    tail /= tail.sum(axis=1, keepdims=True)
    rho = (1 - g)[:, None] * tail
    rho[np.arange(n), y] = g
    return np.log(rho), y


def test_teacher_check_flags_over_confident_teacher():
    # at τ = 2 the sibling structure survives tempering (relational excess ≈ 0.28); at τ = 4 it
    # would fall below the D1 threshold too
    logits, y = _teacher(30, 0.9999, 0.7, seed=0)
    out = tk.teacher_check(logits, y, tau=2.0, lam=0.7, superclass=SUP20)
    assert out["flagged"] == ["D2_over_confident"]
    assert out["flags"]["D2_over_confident"]["value"] == 1.0
    assert out["flags"]["D3_uninformative_confidence"]["flagged"] is None
    json.dumps(out, allow_nan=False)


def test_teacher_check_flags_relation_free_teacher():
    rng = np.random.default_rng(1)
    logits, y = _teacher(30, rng.uniform(0.3, 0.95, 600), None, seed=1)
    out = tk.teacher_check(logits, y, tau=4.0, lam=0.7, superclass=SUP20)
    assert out["flagged"] == ["D1_relation_free"]
    assert out["levels"]["domain"]["relational_excess_tau1"] == pytest.approx(0.0, abs=1e-9)
    no_hier = tk.teacher_check(logits, y, tau=4.0, lam=0.7)
    assert no_hier["flags"]["D1_relation_free"]["flagged"] is True
    assert no_hier["flags"]["D1_relation_free"]["measure"] == "tail_entropy"
    assert "label smoothing" in no_hier["flags"]["D1_relation_free"]["message"]


def test_teacher_check_passes_informative_teacher():
    # τ = 2: this synthetic tail (siblings 12× the other classes) keeps its relations there
    rng = np.random.default_rng(2)
    logits, y = _teacher(30, rng.uniform(0.3, 0.95, 600), 0.7, seed=2)
    g_held = rng.uniform(0.3, 0.95, 400)
    held, y_held = _teacher(20, g_held, 0.7, seed=3)
    correct = rng.random(400) < (g_held - 0.3) / 0.65  # a held-out model, right where ρ_g is high
    out = tk.teacher_check(
        logits,
        y,
        tau=2.0,
        lam=0.7,
        superclass=SUP20,
        heldout_logits=held,
        heldout_labels=y_held,
        heldout_correct=correct,
    )
    assert out["flagged"] == []
    assert all(f["flagged"] is False for f in out["flags"].values())
    lv = out["levels"]
    assert set(lv) == {"universe", "domain", "instance"}
    assert lv["domain"]["relational_excess_tau1"] > 0.5
    assert lv["instance"]["auroc"] > 0.7
    assert lv["instance"]["auroc_target"].startswith("heldout_correct")
    assert lv["instance"]["frac_above_0.99"] == 0.0
    json.dumps(out, allow_nan=False)
    # uninformative held-out confidence → D3
    noise = tk.teacher_check(
        logits, y, 2.0, 0.7, SUP20, held, y_held, heldout_correct=rng.random(400) < 0.5
    )
    assert noise["flagged"] == ["D3_uninformative_confidence"]
