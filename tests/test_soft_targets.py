"""Controlled-target distillation (docs/methods.md, docs/three_levels.md): targets, values and
gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch, TensorDataset
from kdscope.errors import KdscopeError
from kdscope.methods import BindContext, Method, build_method
from kdscope.methods.controlled_targets import (
    SoftTargetMethod,
    SoftTargets,
    logit_gradient,
    soft_target_gradient,
    teacher_probabilities,
    temper,
)
from kdscope.methods.kd import soft_cross_entropy
from kdscope.methods.kd_pt import pt_targets
from kdscope.methods.kd_sim import class_mean_targets, cosine_matrix, cosine_targets
from kdscope.methods.kd_topk import top_k_count, top_k_mask, topk_targets
from kdscope.models import Outputs

# A hand-computed golden example (tau = 2, lam = 0.7).
Z = [2.0, 1.0, 0.0, -1.0]
V = [3.0, 1.5, 0.0, -0.5]
G = 0
TAU, LAM = 2.0, 0.7
NEW_METHODS = ("kd_pt", "kd_topk", "kd_sim", "ls_matched")


# ----------------------------------------------------------------------------- helpers


def num(x: Tensor | float) -> float:
    return x.detach().item() if isinstance(x, Tensor) else float(x)


def logit_batch(labels: list[int] | Tensor) -> Batch:
    label = torch.as_tensor(labels)
    n = label.shape[0]
    return Batch(
        input=torch.zeros(n, 1),
        label=label,
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        index=torch.arange(n),
    )


def golden_logits() -> tuple[Tensor, Tensor]:
    z = torch.tensor([Z], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([V], dtype=torch.float64)
    return z, v


def value_and_grad(method: Method, z: Tensor, v: Tensor | None, labels: list[int]):
    """Sum of the method's terms and its autograd gradient with respect to ``z``."""
    z = z.detach().clone().requires_grad_(True)
    terms = method(Outputs(z), None if v is None else Outputs(v), logit_batch(labels))
    loss = sum(terms.values())
    loss.backward()
    return num(loss), z.grad


def random_rho(b: int, k: int, seed: int, tau: float = 1.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.softmax(torch.randn(b, k, dtype=torch.float64, generator=gen) * 2 / tau, dim=-1)


class FixedLogits(nn.Module):
    """A teacher whose logits for input x (N, 1) are row x of a fixed table (N, K)."""

    roles = {"logits": "table"}

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(logits.float())

    def forward(self, x: Tensor) -> Tensor:
        return self.table(x[:, 0].long())


class LinearTeacher(nn.Module):
    """Logits = fc(x); its last linear layer holds the class templates (role ``"logits"``)."""

    roles = {"logits": "fc"}

    def __init__(self, templates: Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(templates.shape[1], templates.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(templates)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


def index_data(labels: list[int], k: int) -> TensorDataset:
    """A dataset whose inputs are the example indices (for :class:`FixedLogits`)."""
    n = len(labels)
    return TensorDataset(
        inputs=torch.arange(n, dtype=torch.float32).unsqueeze(1),
        labels=torch.tensor(labels),
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        num_classes=k,
    )


def bind(method: Method, teacher: nn.Module, data: TensorDataset) -> Method:
    method.bind(BindContext(nn.Linear(1, 1), teacher, data, data.batch(torch.arange(1))))
    return method


# ----------------------------------------------------------------------------- golden values


GOLDEN = [
    (
        "kd_pt",
        {},
        [0.534968, 0.155011, 0.155011, 0.155011],
        3.638695,
        [-0.218705, 0.240456, 0.043496, -0.065246],
    ),
    (
        "kd_topk",
        {"kappa": 0.5, "tail": "uniform"},
        [0.534968, 0.252701, 0.106165, 0.106165],
        3.433545,
        [-0.218705, 0.103690, 0.111879, 0.003137],
    ),
    (
        "kd_topk",
        {"kappa": 0.5, "tail": "zero_renorm"},
        [0.679179, 0.320821, 0.0, 0.0],
        2.785755,
        [-0.420600, 0.008321, 0.260510, 0.151768],
    ),
]


@pytest.mark.parametrize(("name", "params", "q", "value", "grad"), GOLDEN)
def test_golden_targets_values_gradients(
    name: str, params: dict, q: list[float], value: float, grad: list[float]
) -> None:
    z, v = golden_logits()
    method = build_method(name, tau=TAU, lam=LAM, **params)
    np.testing.assert_allclose(method.soft_target(v, torch.tensor([G]))[0].numpy(), q, atol=1e-6)
    loss, g = value_and_grad(method, z, v, [G])
    assert loss == pytest.approx(value, abs=1e-5)
    np.testing.assert_allclose(g[0].numpy(), grad, atol=1e-5)
    closed = logit_gradient(
        z.detach(), torch.tensor([q], dtype=torch.float64), torch.tensor([G]), TAU, 1 - LAM, LAM
    )
    np.testing.assert_allclose(closed[0].numpy(), grad, atol=1e-5)


def test_golden_label_smoothing_and_kd() -> None:
    z, v = golden_logits()
    ls = build_method("label_smoothing", eps=0.1)
    loss, g = value_and_grad(ls, z, None, [G])
    ls_grad = [-0.281086, 0.211883, 0.062144, 0.007059]
    assert loss == pytest.approx(0.590190, abs=1e-5)
    np.testing.assert_allclose(g[0].numpy(), ls_grad, atol=1e-5)
    np.testing.assert_allclose(
        soft_target_gradient(ls, z.detach(), v, torch.tensor([G]))[0].numpy(), ls_grad, atol=1e-5
    )
    kd = build_method("kd", tau=TAU, gamma=1 - LAM, alpha=LAM)
    np.testing.assert_allclose(
        soft_target_gradient(kd, z.detach(), v, torch.tensor([G]))[0].numpy(),
        [-0.218705, 0.103690, 0.093396, 0.021620],
        atol=1e-5,
    )


# ----------------------------------------------------------------------------- gradient formula


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_logit_gradient_matches_autograd_and_differences(tau: float, lam: float) -> None:
    gen = torch.Generator().manual_seed(int(10 * tau + 3 * lam))
    z0 = torch.randn(3, 5, dtype=torch.float64, generator=gen)
    q = torch.rand(3, 5, dtype=torch.float64, generator=gen)
    q = q / q.sum(dim=1, keepdim=True)
    labels = torch.tensor([2, 0, 4])

    def loss(z: Tensor) -> Tensor:  # per-example losses summed
        ce = F.cross_entropy(z, labels, reduction="sum")
        return (1 - lam) * ce + lam * 3 * soft_cross_entropy(z, q, tau)

    closed = logit_gradient(z0, q, labels, tau, 1 - lam, lam)
    z = z0.clone().requires_grad_(True)
    loss(z).backward()
    np.testing.assert_allclose(z.grad.numpy(), closed.numpy(), atol=1e-10)
    h = 1e-6
    fd = torch.zeros_like(z0)
    for b in range(3):
        for i in range(5):
            e = torch.zeros_like(z0)
            e[b, i] = h
            fd[b, i] = (num(loss(z0 + e)) - num(loss(z0 - e))) / (2 * h)
    np.testing.assert_allclose(fd.numpy(), closed.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- target properties


def test_every_target_is_a_distribution() -> None:
    rho = random_rho(6, 7, seed=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 6])
    targets = [pt_targets(rho, labels)]
    for k in range(1, 8):
        targets += [topk_targets(rho, k, "uniform"), topk_targets(rho, k, "zero_renorm")]
    targets += [class_mean_targets(rho, labels, 7), cosine_targets(torch.randn(7, 3), 0.1)]
    targets += [cosine_targets(torch.randn(7, 3), 0.3, centred=True), temper(rho, 4.0)]
    for q in targets:
        assert (q >= 0).all()
        np.testing.assert_allclose(q.sum(dim=1).numpy(), 1.0, atol=1e-6)


def test_kd_pt_keeps_gt_mass_with_uniform_tail() -> None:
    rho = random_rho(5, 6, seed=2)
    labels = torch.tensor([0, 5, 2, 2, 3])
    q = pt_targets(rho, labels)
    for b, g in enumerate(labels.tolist()):
        assert num(q[b, g]) == pytest.approx(num(rho[b, g]), abs=1e-12)
        tail = [num(q[b, i]) for i in range(6) if i != g]
        np.testing.assert_allclose(tail, (1 - num(rho[b, g])) / 5, atol=1e-12)


def test_topk_limits_and_top1_equals_pt() -> None:
    rho = random_rho(5, 6, seed=3)
    for tail in ("uniform", "zero_renorm"):
        np.testing.assert_allclose(topk_targets(rho, 6, tail).numpy(), rho.numpy(), atol=1e-12)
        method = build_method("kd_topk", kappa=1.0, tail=tail, tau=TAU)
        v = torch.randn(5, 6, dtype=torch.float64)
        expect = F.softmax(v / TAU, dim=-1)
        np.testing.assert_allclose(
            method.soft_target(v, torch.zeros(5, dtype=torch.long)).numpy(), expect.numpy()
        )
    g = rho.argmax(dim=1)
    np.testing.assert_allclose(
        topk_targets(rho, 1, "uniform").numpy(), pt_targets(rho, g).numpy(), atol=1e-12
    )


def test_topk_count_and_deterministic_ties() -> None:
    assert top_k_count(0.25, 100) == 25
    assert top_k_count(0.1, 30) == 3
    assert top_k_count(0.25, 10) == 3
    assert top_k_count(0.01, 10) == 1
    assert top_k_count(1.0, 7) == 7
    rho = torch.tensor([[0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.2, 0.4, 0.2, 0.2]])
    expect = [[False, True, True, False], [True, True, False, False], [True, True, False, False]]
    for _ in range(3):
        assert top_k_mask(rho, 2).tolist() == expect
    q = topk_targets(rho, 2, "uniform")
    np.testing.assert_allclose(q[0].numpy(), [0.2, 0.3, 0.3, 0.2], atol=1e-7)
    np.testing.assert_allclose(topk_targets(rho, 2, "zero_renorm")[2].numpy(), [1 / 3, 2 / 3, 0, 0])


def test_gt_not_forced_into_topk() -> None:
    rho = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    method = build_method("kd_topk", kappa=0.25, tail="zero_renorm", tau=1.0)
    q = method.soft_target(rho.log(), torch.tensor([0]))
    np.testing.assert_allclose(q[0].numpy(), [0, 1, 0, 0], atol=1e-7)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("kd_pt", {}),
        ("kd_topk", {"kappa": 0.5}),
        ("kd_topk", {"kappa": 0.5, "tail": "zero_renorm"}),
    ],
)
def test_post_temperature_option(name: str, params: dict) -> None:
    tau = 3.0
    v = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 1, 4, 2])
    rho1 = F.softmax(v, dim=-1)
    q1 = build_method(name, tau=1.0, **params).soft_target(v, labels)  # built from rho^1
    np.testing.assert_allclose(
        q1.numpy(), build_method(name, tau=1.0, **params).build(rho1, labels).numpy()
    )
    expect = q1 ** (1 / tau)
    expect = expect / expect.sum(dim=1, keepdim=True)
    post = build_method(name, tau=tau, target_temperature="post", **params)
    np.testing.assert_allclose(post.soft_target(v, labels).numpy(), expect.numpy(), atol=1e-12)
    pre = build_method(name, tau=tau, **params).soft_target(v, labels)
    # tempering commutes with renormalising the top k, so only zero_renorm gives the same target
    assert torch.allclose(pre, expect) == (params.get("tail") == "zero_renorm")


class SmoothedTarget(SoftTargetMethod):
    """L(q) with q = (1 - eps) e_g + eps u: label smoothing in the generic form."""

    def __init__(self, eps: float, **params: object) -> None:
        super().__init__(**params)
        self.eps = eps

    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        k = rho.shape[-1]
        return (1 - self.eps) * F.one_hot(labels, k).to(rho) + self.eps / k


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3])
def test_ls_equals_generic_loss_with_lam_1_tau_1(eps: float) -> None:
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    v = torch.zeros(4, 5, dtype=torch.float64)
    labels = [0, 3, 1, 1]
    ls_value, ls_grad = value_and_grad(build_method("label_smoothing", eps=eps), z, None, labels)
    generic = SmoothedTarget(eps, tau=1.0, lam=1.0)
    value, grad = value_and_grad(generic, z, v, labels)
    assert value == pytest.approx(ls_value, abs=1e-12)
    np.testing.assert_allclose(grad.numpy(), ls_grad.numpy(), atol=1e-12)
    ls = build_method("label_smoothing", eps=eps)
    y = torch.tensor(labels)
    np.testing.assert_allclose(ls.soft_target(v, y).numpy(), generic.soft_target(v, y).numpy())


# ----------------------------------------------------------------------------- bound tables


def probs_teacher(probs: list[list[float]], tau: float) -> FixedLogits:
    """A teacher with softmax(v / tau) = ``probs`` row by row."""
    return FixedLogits(tau * torch.tensor(probs, dtype=torch.float64).log())


PROBS = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]]
LABELS = [0, 1, 0]  # class 2 has no training example


def test_teacher_probabilities_batches_in_eval_mode() -> None:
    teacher = probs_teacher(PROBS, 2.0)
    teacher.train()
    rho = teacher_probabilities(teacher, index_data(LABELS, 3).inputs, 2.0, batch_size=2)
    np.testing.assert_allclose(rho.numpy(), PROBS, atol=1e-6)
    assert teacher.training


@pytest.mark.parametrize("temperature", ["pre", "post"])
def test_class_mean_targets_by_bind(temperature: str) -> None:
    tau = 2.0
    teacher = probs_teacher(PROBS, tau if temperature == "pre" else 1.0)
    method = build_method("kd_sim", tau=tau, target_temperature=temperature)
    bind(method, teacher, index_data(LABELS, 3))
    table = [[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [1 / 3, 1 / 3, 1 / 3]]
    np.testing.assert_allclose(method.targets.numpy(), table, atol=1e-6)
    q = method.soft_target(torch.randn(3, 3), torch.tensor([0, 0, 2]))
    row = np.array(table[0]) ** (1 / tau if temperature == "post" else 1.0)
    np.testing.assert_allclose(q[0].numpy(), row / row.sum(), atol=1e-6)
    np.testing.assert_allclose(q[1].numpy(), q[0].numpy())
    np.testing.assert_allclose(q[2].numpy(), 1 / 3, atol=1e-6)
    assert "targets" in method.state_dict()


@pytest.mark.parametrize("temperature", ["pre", "post"])
def test_ls_matched_by_bind(temperature: str) -> None:
    tau = 2.0
    teacher = probs_teacher(PROBS, tau if temperature == "pre" else 1.0)
    method = build_method("ls_matched", tau=tau, target_temperature=temperature)
    bind(method, teacher, index_data(LABELS, 3))
    assert num(method.rho_bar) == pytest.approx((0.7 + 0.6 + 0.5) / 3, abs=1e-6)
    q = method.soft_target(torch.randn(2, 3), torch.tensor([0, 2]))
    row = np.array([0.6, 0.2, 0.2]) ** (1 / tau if temperature == "post" else 1.0)
    np.testing.assert_allclose(q[0].numpy(), row / row.sum(), atol=1e-6)
    np.testing.assert_allclose(q[1].numpy(), (row / row.sum())[[1, 2, 0]], atol=1e-6)
    fresh = build_method("ls_matched", tau=tau, target_temperature=temperature)
    fresh.load_state_dict(method.state_dict())  # the buffer is checkpointed
    assert num(fresh.rho_bar) == num(method.rho_bar)


TEMPLATES = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])


@pytest.mark.parametrize(
    ("centred", "row", "q"),
    [
        (False, [1.0, 0.8, -1.0], [0.592194, 0.396960, 0.010846]),
        (True, [1.0, 0.613941, -0.911922], [0.673910, 0.311369, 0.014721]),
    ],
)
def test_weight_cosine_golden(centred: bool, row: list[float], q: list[float]) -> None:
    np.testing.assert_allclose(cosine_matrix(TEMPLATES, centred)[0].numpy(), row, atol=1e-6)
    np.testing.assert_allclose(cosine_targets(TEMPLATES, 0.5, centred)[0].numpy(), q, atol=1e-6)
    method = build_method(
        "kd_sim", variant="weight_cosine", beta=0.5, centred=centred, target_temperature="post"
    )
    bind(method, LinearTeacher(TEMPLATES), index_data(LABELS, 3))
    np.testing.assert_allclose(method.targets[0].numpy(), q, atol=1e-6)
    # not tempered, whatever target_temperature says
    got = method.soft_target(torch.randn(2, 3), torch.tensor([0, 0]))
    np.testing.assert_allclose(got.numpy(), [q, q], atol=1e-6)


def test_weight_cosine_needs_linear_logit_layer() -> None:
    method = build_method("kd_sim", variant="weight_cosine")
    with pytest.raises(KdscopeError, match="'table'"):
        bind(method, probs_teacher(PROBS, 1.0), index_data(LABELS, 3))
    with pytest.raises(KdscopeError, match="rows"):
        bind(method, LinearTeacher(TEMPLATES), index_data([0, 1, 3, 2], 4))


def test_parameter_and_use_errors() -> None:
    bad = [
        ("kd_pt", {"tau": 0}),
        ("kd_pt", {"lam": 1.5}),
        ("ls_matched", {"target_temperature": "mid"}),
        ("kd_topk", {"kappa": 0.0}),
        ("kd_topk", {"tail": "zero"}),
        ("kd_sim", {"variant": "cosine"}),
        ("kd_sim", {"beta": 0.0}),
        ("kd_pt", {"alpha": 0.5}),
    ]
    for name, params in bad:
        with pytest.raises(KdscopeError):
            build_method(name, **params)
    z = torch.zeros(2, 3)
    for name in ("kd_sim", "ls_matched"):
        with pytest.raises(KdscopeError, match="bound"):
            build_method(name)(Outputs(z), Outputs(z), logit_batch([0, 1]))
    with pytest.raises(KdscopeError, match="teacher"):
        build_method("kd_pt")(Outputs(z), None, logit_batch([0, 1]))
    with pytest.raises(KdscopeError):
        build_method("label_smoothing").soft_target(None, torch.tensor([0]))


# ----------------------------------------------------------------------------- SoftTargets protocol


def protocol_methods() -> list[Method]:
    gen = torch.Generator().manual_seed(6)
    teacher = LinearTeacher(torch.randn(5, 4, generator=gen))
    n = 20
    data = TensorDataset(
        inputs=torch.randn(n, 4, generator=gen),
        labels=torch.arange(n) % 5,
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        num_classes=5,
    )
    methods = [
        build_method("kd", tau=3.0),
        build_method("label_smoothing", eps=0.2),
        build_method("kd_pt", tau=2.0, lam=0.4, target_temperature="post"),
        build_method("kd_topk", kappa=0.4, tail="zero_renorm"),
        build_method("kd_topk", kappa=0.6),
        build_method("kd_sim", tau=1.5),
        build_method("kd_sim", variant="weight_cosine", beta=0.2, centred=True),
        build_method("ls_matched", lam=0.9),
    ]
    return [bind(m, teacher, data) for m in methods]


def test_soft_targets_protocol_gives_the_gradient() -> None:
    methods = protocol_methods()
    assert {m.name for m in methods} >= {"kd", "label_smoothing", *NEW_METHODS}
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    v = torch.randn(6, 5, dtype=torch.float64, generator=gen)
    labels = [0, 1, 2, 3, 4, 0]
    y = torch.tensor(labels)
    for m in methods:
        assert isinstance(m, SoftTargets), m.name
        q = m.soft_target(v, y)
        assert not q.requires_grad and q.shape == (6, 5)
        np.testing.assert_allclose(q.sum(dim=1).numpy(), 1.0, atol=1e-6)
        closed = logit_gradient(z, q, y, m.tau, m.ce_weight, m.soft_weight)
        _, grad = value_and_grad(m, z, None if not m.needs_teacher else v, labels)
        np.testing.assert_allclose(closed.numpy(), 6 * grad.numpy(), atol=1e-6, err_msg=m.name)
        np.testing.assert_allclose(soft_target_gradient(m, z, v, y).numpy(), closed.numpy())
    assert not isinstance(build_method("ce"), SoftTargets)


def test_terms_and_weights() -> None:
    z, v = golden_logits()
    method = build_method("kd_pt", tau=TAU, lam=LAM)
    assert (method.ce_weight, method.soft_weight) == pytest.approx((0.3, 0.7))
    terms = method(Outputs(z), Outputs(v), logit_batch([G]))
    assert set(terms) == {"ce", "soft"}
    assert num(terms["ce"]) == pytest.approx(0.3 * -math.log(0.643914), abs=1e-5)
    assert "kappa=0.25" in repr(build_method("kd_topk"))
