"""The information-discarding estimator against analytic cases."""

from __future__ import annotations

import math

import pytest
import torch
from kp_fixtures import FIXTURE_A, H_A, SIGMA_A, Linear

from kdscope.knowledge_points.estimator import (
    HALF_LOG_2PIE,
    EstimatorSettings,
    estimate,
    layer_probe,
    select_snapshot,
    unit_sensitivity,
)
from kdscope.knowledge_points.units import image_grid, per_element, per_row
from kdscope.models import build_model

IDENTITY = {"feature_transform": "identity", "scale": 1.0}


def _closed_form(sigma_f: float, c: torch.Tensor, m: int, lam: float = 7.0) -> torch.Tensor:
    """σ* = clip(sqrt(λ M σ_f / (2 n c_u)), σ_min, σ_max)."""
    n = len(c)
    with torch.no_grad():
        star = torch.sqrt(lam * m * sigma_f / (2 * n * c.double()))
    return star.clamp(0.001, 1.0)


def test_fixture_a_expected_numbers() -> None:
    # with σ_f at its expectation σ0²C/M the closed form gives exact values
    c = torch.tensor([1.0, 4.0, 9.0, 0.0])
    star = _closed_form(0.01**2 * 14 / 2, c, 2)
    assert torch.allclose(star, SIGMA_A, rtol=1e-12)
    assert torch.allclose(torch.log(star) + HALF_LOG_2PIE, H_A, atol=1e-4)


@pytest.mark.parametrize("variant", ["units", "cells", "scaled"])
def test_optimum_mode_reaches_the_closed_form(variant: str) -> None:
    weight, units, m = FIXTURE_A, per_element((4,)), 2
    if variant == "cells":  # every unit a 2x2 cell whose four pixels share the column norm
        weight = torch.zeros(2, 1, 4, 4)
        for u, (r, cc) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
            for row in range(2):
                weight[row, 0, r : r + 2, cc : cc + 2] = FIXTURE_A[row, u] / 2
        weight = weight.flatten(1)
        units = image_grid((1, 4, 4), 2)
    if variant == "scaled":
        weight = FIXTURE_A * 10
    model = Linear(weight)
    x = torch.randn(1, *units.shape)
    res = estimate(
        model, "fc", x, units, EstimatorSettings(mode="optimum", samples=4096, lam=7, **IDENTITY)
    )
    c = units.unit_sums(weight.double().pow(2).sum(0)[None])[0]
    star = _closed_form(float(res.sigma_f[0]), c, m)
    assert (res.sigma[0].log() - star.log()).abs().max() <= 0.03
    # σ_f at its Monte Carlo value is close to its expectation, so the closed-form numbers hold too
    assert (res.sigma[0].log() - SIGMA_A.log()).abs().max() <= 0.05


def test_sensitivity_is_exact_with_a_full_basis() -> None:
    model = Linear(FIXTURE_A)
    with layer_probe(model, "fc") as fn:
        c, m = unit_sensitivity(
            fn, torch.randn(3, 4), per_element((4,)), EstimatorSettings(**IDENTITY)
        )
    assert m == 2
    assert torch.allclose(c, torch.tensor([[1.0, 4.0, 9.0, 0.0]]).double().expand(3, -1))


@pytest.mark.parametrize("batched", [True, False])
def test_sensitivity_of_a_conv_net_is_the_sum_of_per_direction_vjps(batched, monkeypatch) -> None:
    """c_u from one forward pass and K batched backward passes (or, where torch cannot batch
    them, the fallback of one forward pass per direction) equals, to float rounding, the sum
    over the K directions of (Jᵀv)² computed one direction at a time."""
    if not batched:
        grad = torch.autograd.grad

        def unbatched(*args, is_grads_batched=False, **kwargs):
            if is_grads_batched:
                raise RuntimeError("no batching rule (planted)")
            return grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", unbatched)
    torch.manual_seed(0)
    model = build_model("cnn_small", num_classes=4, width=4).eval()
    x, units = torch.rand(3, 3, 16, 16), image_grid((3, 16, 16), 4)
    settings = EstimatorSettings(projections=8, chunk_rows=16)
    with layer_probe(model, "conv") as fn:
        c, m = unit_sensitivity(fn, x, units, settings)
        feat = fn(x[:1], None).shape[1:]
        gen = torch.Generator().manual_seed(settings.seed + 7919)
        q, _ = torch.linalg.qr(torch.randn(m, 8, generator=gen))
        expected = torch.zeros(3, 16 * 16 * 3, dtype=torch.float64)
        for v in q.T * math.sqrt(m / 8):
            d = torch.zeros(3, *units.shape, requires_grad=True)
            out = torch.relu(fn(x, d))
            (g,) = grad_of(out, d, v.view(1, *feat).expand_as(out))
            expected += g.double().pow(2).reshape(3, -1)
    assert torch.allclose(c, units.unit_sums(expected), rtol=1e-5, atol=0)


def grad_of(out: torch.Tensor, d: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor]:
    """∂⟨out, v⟩/∂d, by torch's own (unbatched) autograd."""
    return torch.autograd.grad((out * v).sum(), d)


def test_random_projections_are_unbiased() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 16)
    exact = weight.pow(2).sum(0).double()
    model = Linear(weight)
    estimates = []
    for seed in range(40):
        with layer_probe(model, "fc") as fn:
            c, _ = unit_sensitivity(
                fn,
                torch.randn(1, 16),
                per_element((16,)),
                EstimatorSettings(projections=16, seed=seed, **IDENTITY),
            )
        estimates.append(c[0])
    mean = torch.stack(estimates).mean(0)
    assert ((mean - exact).abs() / exact).max() < 0.15
    assert ((estimates[0] - exact).abs() / exact).max() > 1e-3  # a real estimate, not exact


def _grid_linear(rows: int = 16, seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, 32 * 32, generator=gen) * torch.rand(1, 32 * 32, generator=gen)
    units = image_grid((1, 32, 32), 16)
    c = units.unit_sums(weight.double().pow(2).sum(0)[None])[0]
    return Linear(weight), units, c


def _expected_path(c: torch.Tensor, m: int, sigma_f: float, steps: int, lam: float = 7.0):
    """σ_u ← clamp(σ_u − η(2 c_u σ_u / (M σ_f) − λ / (n σ_u))), η = 1e-4."""
    n = len(c)
    sigma = torch.full((n,), 0.01, dtype=torch.float64)
    out = []
    for _ in range(steps):
        sigma = sigma.clamp(0.001, 1.0)
        out.append(sigma)
        sigma = sigma - 1e-4 * (2 * c * sigma / (m * sigma_f) - lam / (n * sigma))
    return torch.stack(out)


def test_fast_mode_follows_the_expected_reference_dynamics() -> None:
    model, units, c = _grid_linear()
    res = estimate(
        model,
        "fc",
        torch.rand(1, 1, 32, 32),
        units,
        EstimatorSettings(lam=7, **IDENTITY),
        history=True,
    )
    sigma_f = 0.01**2 * float(c.sum()) / 16
    assert float(res.sigma_f[0]) == pytest.approx(sigma_f, rel=1e-5)
    path = _expected_path(c, 16, sigma_f, 60)
    assert res.history_sigma is not None
    assert torch.allclose(res.history_sigma[:60, 0], path, rtol=1e-5)
    # the snapshot is the recorded step closest to the target
    assert abs(float(res.mean_entropy[0]) + 2.8) <= 0.05 and bool(res.calibrated[0])
    assert torch.allclose(res.sigma[0], res.history_sigma[int(res.step[0]), 0])


def test_uniform_sensitivity_first_step() -> None:
    # every unit equally used: σ(1) = σ0 − (η/σ0)(2/n − λ/n) = 0.01 + 0.01·5/256
    model = Linear(torch.ones(1, 32 * 32))
    res = estimate(
        model,
        "fc",
        torch.rand(1, 1, 32, 32),
        image_grid((1, 32, 32), 16),
        EstimatorSettings(lam=7, **IDENTITY),
        history=True,
    )
    assert res.history_sigma is not None
    assert torch.allclose(res.history_sigma[1, 0], torch.tensor(0.0101953125).double())


def test_reference_mode_tracks_the_expected_trajectory() -> None:
    model, units, c = _grid_linear(seed=1)
    settings = EstimatorSettings(
        mode="reference", samples=4096, lam=7, max_steps=31, check_step=30, **IDENTITY
    )
    res = estimate(model, "fc", torch.rand(1, 1, 32, 32), units, settings, history=True)
    assert res.history_sigma is not None
    path = _expected_path(c, 16, float(res.sigma_f[0]), 31)
    rel = (res.history_sigma[:31, 0] - path).abs() / path
    assert float(rel.max()) <= 0.02
    # the snapshot's entropies rank units by decreasing sensitivity (no unit near the clamp)
    chosen = res.sigma[0]
    if float(chosen.min()) > 0.002:
        ranks_h = chosen.argsort().argsort().double()
        ranks_c = (-c).argsort().argsort().double()
        assert torch.corrcoef(torch.stack([ranks_h, ranks_c]))[0, 1] > 0.95


def test_an_ignored_unit_moves_deterministically_in_reference_mode() -> None:
    model, units, _ = _grid_linear(seed=2)
    weight = model.fc.weight.data.view(16, 32, 32)
    weight[:, 0:2, 0:2] = 0  # unit 0 (top-left cell) does not influence f
    res = estimate(
        model,
        "fc",
        torch.rand(1, 1, 32, 32),
        units,
        EstimatorSettings(mode="reference", samples=8, lam=7, **IDENTITY),
        history=True,
    )
    assert res.history_sigma is not None
    sigma = 0.01
    for t in range(10):
        assert float(res.history_sigma[t, 0, 0]) == pytest.approx(sigma, rel=1e-12, abs=0)
        sigma = min(max(sigma + 1e-4 * 7 / (256 * sigma), 0.001), 1.0)
    assert float(res.history_sigma[1, 0, 0]) == pytest.approx(0.0102734375, rel=1e-12)


def test_an_ignored_unit_gets_the_largest_sigma_in_fast_and_optimum_modes() -> None:
    weight = FIXTURE_A.clone()
    model = Linear(weight)
    for mode in ("fast", "optimum"):
        res = estimate(
            model,
            "fc",
            torch.randn(1, 4),
            per_element((4,)),
            EstimatorSettings(mode=mode, samples=1024, optimum_steps=200, lam=7, **IDENTITY),
        )
        assert int(res.sigma[0].argmax()) == 3
    assert float(res.sigma[0, 3]) == pytest.approx(1.0)  # optimum: at σ_max


def test_snapshot_selection_searches_executed_steps_only() -> None:
    means = torch.tensor([-3.19, -3.0, -2.85, -2.78, -2.6], dtype=torch.float64)[:, None]
    best, dist = select_snapshot(means, torch.ones(5, 1, dtype=torch.bool), -2.8)
    assert int(best[0]) == 3 and float(dist[0]) == pytest.approx(0.02)
    executed = torch.tensor([True, True, True, False, False])[:, None]
    best, _ = select_snapshot(means, executed, -2.8)
    assert int(best[0]) == 2


def test_lambda_is_raised_when_the_target_is_never_exceeded() -> None:
    # a unit-less map where every unit is strongly used: σ shrinks, the entropy never rises
    model = Linear(torch.ones(1, 32 * 32) * 50)
    res = estimate(
        model,
        "fc",
        torch.rand(1, 1, 32, 32),
        image_grid((1, 32, 32), 16),
        EstimatorSettings(lam=7, sigma_init=0.01, target=5.0, **IDENTITY),
        history=True,
    )
    assert float(res.lam[0]) == pytest.approx(10.5)
    assert res.history_mean is not None and res.history_mean.shape[0] == 80
    crossed = EstimatorSettings(lam=7, **IDENTITY)
    res = estimate(
        Linear(torch.ones(1, 32 * 32)),
        "fc",
        torch.rand(1, 1, 32, 32),
        image_grid((1, 32, 32), 16),
        crossed,
        history=True,
    )
    assert float(res.lam[0]) == pytest.approx(7.0)
    assert res.history_mean is not None and res.history_mean.shape[0] == 60  # stopped at 59


@pytest.mark.parametrize("mode", ["fast", "reference", "optimum"])
def test_dead_features_make_the_input_non_effective(mode: str) -> None:
    model = Linear(FIXTURE_A, bias=-100.0)  # ReLU(f) is identically zero near x
    res = estimate(
        model,
        "fc",
        torch.zeros(1, 4),
        per_element((4,)),
        EstimatorSettings(mode=mode, samples=16, optimum_steps=5, scale=1.0),
    )
    assert not bool(res.effective[0]) and float(res.sigma_f[0]) == 0.0
    assert bool(torch.isfinite(res.sigma).all())


def test_input_scale_rescales_the_whole_estimate() -> None:
    # x → s·x with W → W/s is the same problem; entropies shift by log s exactly
    model, units, _ = _grid_linear(seed=3)
    x = torch.rand(2, 1, 32, 32)
    base = estimate(model, "fc", x, units, EstimatorSettings(lam=7, **IDENTITY))
    s = 5.0
    scaled = Linear(model.fc.weight.data / s)
    res = estimate(
        scaled, "fc", x * s, units, EstimatorSettings(lam=7, feature_transform="identity", scale=s)
    )
    assert torch.allclose(res.entropy, base.entropy + math.log(s), atol=1e-6)
    assert torch.equal(res.step, base.step)


def test_determinism_no_hooks_and_restored_mode() -> None:
    torch.manual_seed(0)
    model = build_model("cnn_small", 4, width=4)
    model.train()
    x = torch.rand(2, 3, 16, 16)
    units = image_grid((3, 16, 16), 8)
    settings = EstimatorSettings(mode="reference", samples=8, max_steps=12, check_step=10)
    a = estimate(model, "conv", x, units, settings)
    b = estimate(model, "conv", x, units, settings)
    assert torch.equal(a.sigma, b.sigma)
    fast = EstimatorSettings(projections=8)
    assert torch.equal(
        estimate(model, "fc1", x, units, fast).sigma, estimate(model, "fc1", x, units, fast).sigma
    )
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_noise_is_added_after_the_normaliser() -> None:
    # identical normalised inputs give identical maps whatever the model's mean/std
    torch.manual_seed(0)
    a = build_model("cnn_small", 4, width=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    b = build_model("cnn_small", 4, width=4, mean=(0.0,) * 3, std=(1.0,) * 3)
    b.load_state_dict(
        {k: v for k, v in a.state_dict().items() if "normalize" not in k}, strict=False
    )
    x = torch.rand(1, 3, 16, 16)
    units = image_grid((3, 16, 16), 8)
    ra = estimate(a, "fc1", x, units, EstimatorSettings(projections=64))
    rb = estimate(b, "fc1", (x - 0.5) / 0.25, units, EstimatorSettings(projections=64))
    assert torch.allclose(ra.entropy, rb.entropy, atol=1e-5)
    assert ra.scale == 1.0


def test_unit_maps() -> None:
    grid = image_grid((3, 4, 4), 2)
    sigma = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    full = grid.expand(sigma)
    assert full.shape == (1, 3, 4, 4) and float(full[0, 2, 3, 0]) == 3.0
    v = torch.randn(1, 3, 4, 4)
    # unit_sums is the adjoint of expand: <expand(σ), v> = <σ, unit_sums(v)>
    assert torch.allclose((full * v).sum(), (sigma * grid.unit_sums(v)).sum())
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True  # half of cell 0
    mask[0, 3, 3] = True  # a quarter of cell 3, its centre element (1,1) of the cell
    assert grid.foreground(mask).tolist() == [[True, False, False, False]]
    assert grid.foreground(mask, "center_sample").tolist() == [[False, False, False, True]]
    rows = per_row((4, 3), excluded=torch.tensor([[False, False, True, True], [False] * 4]))
    assert rows.valid.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert rows.expand(torch.ones(2, 4))[0].sum() == 6
    with pytest.raises(Exception, match="must divide"):
        image_grid((3, 30, 30), 16)
