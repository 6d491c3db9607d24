"""Linear theory of property transfer (docs/property_transfer.md).

A linear teacher z_t(x) = W_t x + b_t with K = 3 classes in m = 5 dimensions labels m + 1 = 6
affinely independent points x_i (the augmented vectors (x_i, 1) span R^(m+1)). A linear softmax
student z_s(x) = W_s x + b_s trained to convergence with the KL loss at τ = 1 matches the teacher's
probabilities on the six points, hence its logits up to a per-point constant:

    (W_s − W_t) x_i + (b_s − b_t) = c_i · 1,   i = 1 … m + 1.

Every row r of [W_s − W_t, b_s − b_t] therefore satisfies the same linear system
[x_i, 1] · row_r = c_i, whose solution is unique: all rows are equal, W_s − W_t = 1 aᵀ and
b_s − b_t = a_0 1. The centred weights (row mean over classes removed) coincide, and
argmax z_s = argmax z_t everywhere. Since the KL gradient with respect to the logits sums to zero
over classes, gradient-based training never changes the class-mean row 1ᵀW_s/K (nor the mean bias):
a = (1ᵀW_s⁽⁰⁾ − 1ᵀW_t)/K comes from the student's initialisation. The control, cross-entropy on the
teacher's hard labels of the same points, fits the labels but has no unique minimiser (the points
are separable, the weights grow without bound) and does not recover the teacher.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.methods.kd import soft_target_loss

M, K = 5, 3
DT = torch.float64


def _centred(w: Tensor) -> Tensor:
    """w − (row mean over classes): the part of a weight matrix (or bias) softmax can see."""
    return w - w.mean(0, keepdim=True)


def _setup(seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M + 1, M, generator=g, dtype=DT)
    w_t = torch.randn(K, M, generator=g, dtype=DT)
    b_t = torch.randn(K, generator=g, dtype=DT)
    w_0 = 0.5 * torch.randn(K, M, generator=g, dtype=DT)  # student initialisation
    b_0 = 0.5 * torch.randn(K, generator=g, dtype=DT)
    test = 2.0 * torch.randn(10_000, M, generator=g, dtype=DT)  # wider than the training points
    return {"x": x, "w_t": w_t, "b_t": b_t, "w_0": w_0, "b_0": b_0, "test": test}


def _train(s: dict[str, Tensor], loss_fn) -> nn.Linear:
    """Full-batch L-BFGS (strong Wolfe line search) from the fixed initialisation."""
    student = nn.Linear(M, K).to(DT)
    with torch.no_grad():
        student.weight.copy_(s["w_0"])
        student.bias.copy_(s["b_0"])
    opt = torch.optim.LBFGS(
        student.parameters(),
        lr=1.0,
        max_iter=500,
        history_size=20,
        tolerance_grad=1e-13,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn(student(s["x"]))
        loss.backward()
        return loss

    for _ in range(4):
        opt.step(closure)
    return student


def _teacher_logits(s: dict[str, Tensor], x: Tensor) -> Tensor:
    return x @ s["w_t"].T + s["b_t"]


def _kl_student(s: dict[str, Tensor]) -> nn.Linear:
    q = F.softmax(_teacher_logits(s, s["x"]), dim=1)
    return _train(s, lambda z: soft_target_loss(z, q, tau=1.0))


def _max_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


def test_points_are_affinely_independent() -> None:
    s = _setup()
    aug = torch.cat([s["x"], torch.ones(M + 1, 1, dtype=DT)], dim=1)  # (m + 1) × (m + 1)
    assert torch.linalg.matrix_rank(aug) == M + 1
    assert torch.linalg.svdvals(aug).min() > 0.05  # well conditioned, not just barely of full rank


def test_kl_student_recovers_the_teachers_centred_weights_and_argmax() -> None:
    s = _setup()
    student = _kl_student(s)
    w_s, b_s = student.weight.detach(), student.bias.detach()
    assert _max_err(_centred(w_s), _centred(s["w_t"])) < 1e-3
    assert _max_err(_centred(b_s), _centred(s["b_t"])) < 1e-3
    with torch.no_grad():
        agree = (student(s["test"]).argmax(1) == _teacher_logits(s, s["test"]).argmax(1)).double()
    assert float(agree.mean()) >= 0.999
    # only the centred part is pinned: the raw weights keep the initialisation's class mean
    assert _max_err(w_s, s["w_t"]) > 0.05
    torch.testing.assert_close(w_s.mean(0), s["w_0"].mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(b_s.mean(), s["b_0"].mean(), rtol=0, atol=1e-9)


def test_kl_student_logits_differ_from_the_teachers_by_a_per_point_constant() -> None:
    """Softmax extension: (W_s − W_t) x_i + (b_s − b_t) = c_i · 1 on the training points, with
    c_i = aᵀ x_i + a_0 fixed by the initialisation's class means (not zero in general)."""
    s = _setup()
    student = _kl_student(s)
    with torch.no_grad():
        diff = student(s["x"]) - _teacher_logits(s, s["x"])
    spread = diff.max(1).values - diff.min(1).values
    assert float(spread.max()) < 1e-6
    c = diff.mean(1)
    a = s["w_0"].mean(0) - s["w_t"].mean(0)
    a0 = s["b_0"].mean() - s["b_t"].mean()
    torch.testing.assert_close(c, s["x"] @ a + a0, rtol=0, atol=1e-8)
    assert float(c.abs().max()) > 0.05  # the constants are genuinely there
    torch.testing.assert_close(
        F.softmax(diff + _teacher_logits(s, s["x"]), 1),
        F.softmax(_teacher_logits(s, s["x"]), 1),
        rtol=0,
        atol=1e-7,
    )


def test_hard_label_control_does_not_recover_the_teacher() -> None:
    """Cross-entropy on the teacher's argmax labels of the same six points: the student fits the
    labels, yet its centred weights are far from the teacher's (the soft outputs carry the
    information that pins the boundary)."""
    s = _setup()
    y = _teacher_logits(s, s["x"]).argmax(1)
    assert len(torch.unique(y)) >= 2  # a real labelling, not a single class
    student = _train(s, lambda z: F.cross_entropy(z, y))
    with torch.no_grad():
        assert torch.equal(student(s["x"]).argmax(1), y)
    w_s, b_s = student.weight.detach(), student.bias.detach()
    err = max(
        _max_err(_centred(w_s), _centred(s["w_t"])), _max_err(_centred(b_s), _centred(s["b_t"]))
    )
    assert err > 0.05
    # the KL student on the same data is three orders of magnitude closer
    kl = _kl_student(s)
    kl_err = _max_err(_centred(kl.weight.detach()), _centred(s["w_t"]))
    assert kl_err < 1e-3 < err / 50


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_recovery_holds_for_other_draws(seed: int) -> None:
    """Other well-conditioned draws. The tolerance presumes the points are not close to affinely
    dependent: with σ_min([x_i, 1]) ≈ 0.01 (seed 2) the KL loss reaches ~1e-7 while the centred
    weights are still ~0.5 off, the direction of near-dependence being almost unconstrained."""
    s = _setup(seed)
    aug = torch.cat([s["x"], torch.ones(M + 1, 1, dtype=DT)], dim=1)
    assert torch.linalg.svdvals(aug).min() > 0.05  # precondition, checked rather than assumed
    student = _kl_student(s)
    assert _max_err(_centred(student.weight.detach()), _centred(s["w_t"])) < 1e-3
    assert _max_err(_centred(student.bias.detach()), _centred(s["b_t"])) < 1e-3
