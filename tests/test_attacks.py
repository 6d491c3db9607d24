"""I-FGSM, fooling, ε calibration and transfer rates (Ojha et al. 2023) against the
closed form of a linear binary logistic model and a hand-written reference loop; the adversarial
analysis' source attacks and its foreign-source contrast on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdscope.property_transfer.adversarial import (
    calibrate_eps,
    fooled,
    fooling_rate,
    ifgsm,
    predict_labels,
    transfer_rates,
)

W = torch.tensor(
    [2.0, -1.0, 0.0, 0.5, -3.0, 0.0, 1.5, -0.25, 1.0, 0.0, -2.0, 0.75], dtype=torch.float64
)
D = W.numel()


def linear_model(w: torch.Tensor = W, scale: float = 1.0) -> nn.Linear:
    """z = Wx + b with rows (w, −w) and b = (c, −c), c = −wᵀ½: the class-0 margin is
    m_0 = z_0 − z_1 = 2 wᵀ(x − ½), and m_1 = −m_0."""
    w = w * scale
    lin = nn.Linear(w.numel(), 2, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w, -w]))
        c = -0.5 * w.sum()
        lin.bias.copy_(torch.stack([c, -c]))
    return lin


def labels_of(x: torch.Tensor, w: torch.Tensor = W) -> torch.Tensor:
    """True class = the model's clean prediction: 0 when wᵀ(x − ½) > 0."""
    return ((x - 0.5) @ w < 0).long()


def true_margin(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = model(x)
    return z.gather(1, y[:, None])[:, 0] - z.gather(1, 1 - y[:, None])[:, 0]


def middle_inputs(n: int, seed: int = 0, spread: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + spread * (2 * torch.rand(n, D, generator=g, dtype=torch.float64) - 1)


# --------------------------------------------------------------------------------------------------
# the linear closed form


@pytest.mark.parametrize("scale", [1.0, 400.0])  # 400: margins 12–170, CE gradient ≪ 1e-6
def test_linear_steps_move_each_pixel_by_a(scale: float) -> None:
    model = linear_model(scale=scale)
    x = middle_inputs(16, seed=1, spread=0.05)
    y = labels_of(x)
    yprime = (1 - 2 * y).double()[:, None]  # +1 for class 0, −1 for class 1
    direction = -yprime * torch.sign(W)[None]  # lowers the true-class margin; 0 where w_j = 0
    a = 0.01
    for k in (1, 2, 3):  # no projection: k·a < ε
        adv = ifgsm(model, x, y, eps=0.2, steps=k, step_size=a)
        torch.testing.assert_close(adv - x, k * a * direction, atol=1e-12, rtol=0)


@pytest.mark.parametrize("eps", [0.02, 0.08, 0.15])
def test_linear_five_steps_reach_the_ball_and_margin_drops(eps: float) -> None:
    model = linear_model()
    x = middle_inputs(32, seed=2)
    y = labels_of(x)
    yprime = (1 - 2 * y).double()[:, None]
    adv = ifgsm(model, x, y, eps=eps)  # 5 steps, a = ε/4: 1.25 ε, projected back to ε
    delta = adv - x
    torch.testing.assert_close(delta, -yprime * eps * torch.sign(W)[None], atol=1e-12, rtol=0)
    assert torch.all(delta[:, W == 0] == 0)
    # margin m_y = z_y − z_{1−y} = ±2 wᵀ(x − ½) drops by 2 ε ‖w‖₁ in this parametrisation
    drop = true_margin(model, x, y) - true_margin(model, adv, y)
    torch.testing.assert_close(drop, torch.full_like(drop, 2 * eps * W.abs().sum().item()))


def test_clipping_near_bounds_and_eps_zero() -> None:
    model = linear_model()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, D, generator=g, dtype=torch.float64)
    pick = torch.randint(0, 3, x.shape, generator=g)
    x[pick == 0] = 0.01
    x[pick == 1] = 0.995
    y = labels_of(x)
    yprime = (1 - 2 * y).double()[:, None]
    eps = 0.1
    adv = ifgsm(model, x, y, eps=eps)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-12
    # constant gradient sign: each step clips at the bound, the end point is clip(x + δ*, 0, 1)
    expected = (x - yprime * eps * torch.sign(W)[None]).clamp(0, 1)
    torch.testing.assert_close(adv, expected, atol=1e-12, rtol=0)
    assert (adv == 0).any() and (adv == 1).any()

    same = ifgsm(model, x, y, eps=0.0)
    assert torch.equal(same, x) and same is not x


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 4)).double()


def reference_ifgsm(model: nn.Module, x, y, eps: float, steps: int = 5) -> torch.Tensor:
    """The I-FGSM update written out, gradient at the current iterate."""
    a = eps / 4
    it = x.clone()
    for _ in range(steps):
        it.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(it), y, reduction="sum"), it)
        it = it.detach() + a * g.sign()
        it = torch.minimum(torch.maximum(it, x - eps), x + eps).clamp(0, 1)
    return it.detach()


def test_matches_reference_loop_on_mlp_and_chunks() -> None:
    model = mlp().eval()
    g = torch.Generator().manual_seed(4)
    x = torch.rand(50, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (50,), generator=g)
    for eps in (0.03, 0.3):
        adv = ifgsm(model, x, y, eps=eps)
        torch.testing.assert_close(adv, reference_ifgsm(model, x, y, eps), atol=1e-12, rtol=0)
        torch.testing.assert_close(ifgsm(model, x, y, eps=eps, batch_size=7), adv, atol=0, rtol=0)


def all_hooks_empty(model: nn.Module) -> bool:
    per_module = all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
        and not getattr(m, "_backward_pre_hooks", {})
        for m in model.modules()
    )
    from torch.nn.modules import module as mm

    return per_module and not (mm._global_forward_hooks or mm._global_forward_pre_hooks)


def test_eval_mode_restored_no_hooks_no_param_grads() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 4)
    ).double()
    model.train()
    model[3].eval()  # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]
    bn_mean = model[1].running_mean.clone()
    x = torch.rand(20, 10, dtype=torch.float64)
    y = torch.randint(0, 4, (20,))

    adv1 = ifgsm(model, x, y, eps=0.1)
    adv2 = ifgsm(model, x, y, eps=0.1)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(adv1, adv2)  # dropout off during the attack
    assert torch.equal(model[1].running_mean, bn_mean)  # BN not updated: eval mode
    assert all(p.grad is None for p in model.parameters())
    assert all_hooks_empty(model)

    f = fooled(model, x, adv1)
    assert f.dtype == torch.bool and f.shape == (20,)
    assert [m.training for m in model.modules()] == modes
    model.eval()
    assert torch.equal(ifgsm(model, x, y, eps=0.1), adv1)
    assert torch.equal(f, predict_labels(model, adv1) != predict_labels(model, x))


# --------------------------------------------------------------------------------------------------
# fooling and calibration on a population with spread margins


def predicted_rate(x: torch.Tensor, eps: float) -> float:
    """Linear model, no clipping: fooled iff |wᵀ(x − ½)| < ε ‖w‖₁."""
    return float(((x - 0.5) @ W).abs().lt(eps * W.abs().sum()).double().mean())


def test_fooling_rate_monotone_and_exact() -> None:
    model = linear_model()
    x = middle_inputs(400, seed=5)
    y = labels_of(x)
    rates = [fooling_rate(model, x, y, e) for e in np.linspace(0.0, 0.12, 13)]
    assert rates == sorted(rates)
    assert rates[0] == 0.0 and rates[-1] == 1.0
    for e, r in zip(np.linspace(0.0, 0.12, 13), rates, strict=True):
        assert r == pytest.approx(predicted_rate(x, float(e)), abs=1e-12)
    adv = ifgsm(model, x, y, eps=0.03)
    assert float(fooled(model, x, adv).double().mean()) == pytest.approx(predicted_rate(x, 0.03))


def test_calibrate_eps_hits_target_deterministically() -> None:
    model = linear_model()
    x = middle_inputs(400, seed=6)
    y = labels_of(x)
    res = calibrate_eps(model, x, y)
    assert res["converged"] is True
    assert abs(res["rate"] - 0.85) <= 0.02
    assert res["rate"] == pytest.approx(predicted_rate(x, res["eps"]), abs=1e-12)
    assert 0.0 < res["eps"] < 0.3 and 1 <= res["iterations"] <= 12
    assert isinstance(res["eps"], float) and isinstance(res["iterations"], int)
    assert calibrate_eps(model, x, y) == res

    short = calibrate_eps(model, x, y, high=0.001)
    assert short["converged"] is False and short["eps"] == 0.001 and short["rate"] < 0.83


# --------------------------------------------------------------------------------------------------
# transfer rates


def test_transfer_rates_hand_built() -> None:
    src_fooled = torch.tensor([True, True, False, True, True])
    clean_s = torch.tensor([0, 1, 2, 3, 4])
    adv_s = torch.tensor([1, 1, 0, 2, 4])
    adv_t = np.array([1, 2, 0, 2, 4])
    labels = np.array([0, 1, 2, 0, 4])
    r = transfer_rates(src_fooled, clean_s, adv_s, adv_t, labels)
    np.testing.assert_array_equal(r["kept"], [0, 1, 3, 4])
    assert r["n_kept"] == 4 and r["source_rate"] == pytest.approx(0.8)
    np.testing.assert_array_equal(r["fooled"], [1, 0, 1, 0])
    np.testing.assert_array_equal(r["same_class"], [1, 0, 1, 1])
    assert r["rate"] == 0.5 and r["same_class_rate"] == 0.75
    np.testing.assert_array_equal(r["clean_correct"], [1, 1, 0, 1])
    np.testing.assert_array_equal(r["adv_correct"], [0, 1, 0, 1])
    assert r["accuracy_drop"] == pytest.approx(0.25)

    no_labels = transfer_rates(src_fooled, clean_s, adv_s, adv_t)
    assert "accuracy_drop" not in no_labels and no_labels["rate"] == 0.5

    empty = transfer_rates(np.zeros(5, bool), clean_s, adv_s, adv_t)
    assert empty["n_kept"] == 0 and np.isnan(empty["rate"]) and empty["fooled"].size == 0
    with pytest.raises(ValueError):
        transfer_rates(src_fooled, clean_s[:4], adv_s, adv_t)


# --------------------------------------------------------------------------------------------------
# the adversarial analysis' building blocks


def test_source_attacks_replayed_on_the_source_itself() -> None:
    """The source's own attacks fool it on every kept input, into its own adversarial class;
    a constant model is never fooled."""
    from kdscope.analyses.property_transfer.adversarial import model_rates, source_attacks

    model = linear_model()
    x = middle_inputs(200, seed=7)
    y = labels_of(x)
    attacks = source_attacks(model, x, y, 0.03)
    assert int(attacks.kept.sum()) == round(predicted_rate(x, 0.03) * 200)
    r = model_rates(model, x, attacks)
    assert r["fooled"].size == int(attacks.kept.sum())
    assert r["fooled"].mean() == 1.0 and r["same_class"].mean() == 1.0
    constant = linear_model(scale=0.0)
    with torch.no_grad():
        constant.bias.copy_(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert model_rates(constant, x, attacks)["fooled"].sum() == 0


def test_source_contrast_by_hand() -> None:
    """Two kept sets of the same 4 inputs: seed 0 contrasts 1/2 − 1/3, seed 1 1 − 2/3."""
    from kdscope.analyses.property_transfer.adversarial import source_contrast

    first_kept, second_kept = np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 1], bool)
    first = {0: np.array([1.0, 0.0]), 1: np.array([1.0, 1.0])}
    second = {0: np.array([0.0, 0.0, 1.0]), 1: np.array([0.0, 1.0, 1.0])}
    c = source_contrast(first, first_kept, second, second_kept)
    assert c is not None and c["per_seed"] == pytest.approx({"0": 1 / 6, "1": 1 / 3})
    assert c["mean"] == pytest.approx(0.25) and c["n_seeds"] == 2
    # never narrower than the t interval over the two per-seed values alone
    lo, hi = 0.25 - 12.706 * (1 / 6) / 2, 0.25 + 12.706 * (1 / 6) / 2  # t_1 · s / sqrt(2)
    assert c["ci95"][0] <= lo + 1e-3 and c["ci95"][1] >= hi - 1e-3
    assert source_contrast(first, first_kept, second, np.zeros(4, bool)) is None
