"""Distillation losses: values and gradients against independent hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch, TensorDataset
from kdscope.errors import KdscopeError
from kdscope.methods import METHODS, BindContext, Method, build_method
from kdscope.methods.attention import at_loss
from kdscope.methods.crd import (
    candidate_scores,
    class_table,
    momentum_update,
    nce_loss,
    sample_other_class,
)
from kdscope.methods.hint import build_regressor
from kdscope.methods.kd import entropy, soft_cross_entropy, soft_target_loss, tempered_softmax
from kdscope.methods.soft_label import soft_labels
from kdscope.models import Outputs, build_model, forward_with_features

# A hand-computed golden example.
Z = [2.0, 1.0, 0.0, -1.0]
V = [3.0, 1.5, 0.0, -0.5]
G = 0


# ----------------------------------------------------------------------------- helpers


def num(x: Tensor | float) -> float:
    """A Python float from a tensor (detached) or a number."""
    return x.detach().item() if isinstance(x, Tensor) else float(x)


def np_softmax(z: np.ndarray, tau: float = 1.0) -> np.ndarray:
    e = np.exp((z - z.max(axis=-1, keepdims=True)) / tau)
    return e / e.sum(axis=-1, keepdims=True)


def logit_batch(labels: list[int]) -> Batch:
    n = len(labels)
    return Batch(
        input=torch.zeros(n, 1),
        label=torch.tensor(labels),
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        index=torch.arange(n),
    )


def golden_logits() -> tuple[Tensor, Tensor]:
    z = torch.tensor([Z], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([V], dtype=torch.float64, requires_grad=True)
    return z, v


def image_data(n: int = 40, k: int = 10, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        inputs=torch.rand(n, 3, size, size, generator=g),
        labels=torch.arange(n) % k,
        foreground=torch.rand(n, size, size, generator=g) > 0.5,
        num_classes=k,
    )


def bound(
    method: Method, student: nn.Module, teacher: nn.Module | None, data: TensorDataset
) -> Method:
    method.bind(BindContext(student, teacher, data, data.batch(torch.arange(8))))
    return method


def outputs(method: Method, student: nn.Module, teacher: nn.Module | None, batch: Batch):
    s = forward_with_features(student, batch.input, method.student_layers())
    if teacher is None:
        return s, None
    teacher.eval()
    with torch.no_grad():
        t = forward_with_features(teacher, batch.input, method.teacher_layers())
    return s, t


def models(student_width: int = 4, teacher: str = "cnn_small", teacher_width: int = 4):
    torch.manual_seed(0)
    return build_model("cnn_small", 10, width=student_width), build_model(
        teacher, 10, width=teacher_width
    )


# ----------------------------------------------------------------------------- golden values


def test_golden_distributions() -> None:
    z, v = np.array(Z), np.array(V)
    np.testing.assert_allclose(np_softmax(z), [0.643914, 0.236883, 0.087144, 0.032059], atol=1e-6)
    np.testing.assert_allclose(
        tempered_softmax(torch.tensor(Z), 2.0).numpy(),
        [0.455054, 0.276004, 0.167405, 0.101536],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np_softmax(v, 2.0), [0.534968, 0.252701, 0.119367, 0.092964], atol=1e-6
    )


def test_ce_golden() -> None:
    z, _ = golden_logits()
    terms = build_method("ce")(Outputs(z), None, logit_batch([G]))
    loss = sum(terms.values())
    loss.backward()
    assert num(loss) == pytest.approx(0.440190, abs=1e-5)
    np.testing.assert_allclose(
        z.grad[0].numpy(), [-0.356086, 0.236883, 0.087144, 0.032059], atol=1e-5
    )


def test_label_smoothing_golden() -> None:
    z, _ = golden_logits()
    method = build_method("label_smoothing", eps=0.1)
    assert not method.needs_teacher
    terms = method(Outputs(z), None, logit_batch([G]))
    loss = sum(terms.values())
    loss.backward()
    assert num(loss) == pytest.approx(0.590190, abs=1e-5)
    np.testing.assert_allclose(
        z.grad[0].numpy(), [-0.281086, 0.211883, 0.062144, 0.007059], atol=1e-5
    )
    # LS-eps is L(q) with lambda = 1, tau = 1, q = (1 - eps) e_g + eps u.
    q = torch.full((1, 4), 0.1 / 4, dtype=torch.float64)
    q[0, G] += 0.9
    assert num(soft_cross_entropy(z.detach(), q, 1.0)) == pytest.approx(num(loss), abs=1e-12)


def test_label_smoothing_rejects_bad_eps() -> None:
    with pytest.raises(KdscopeError):
        build_method("label_smoothing", eps=1.5)


def test_kd_golden_three_levels_form() -> None:
    """L(q) = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau) at tau = 2, lam = 0.7 (CE form)."""
    lam, tau = 0.7, 2.0
    z, v = golden_logits()
    method = build_method("kd", tau=tau, gamma=1 - lam, alpha=lam)
    terms = method(Outputs(z), Outputs(v), logit_batch([G]))
    assert set(terms) == {"ce", "kd"}
    rho = tempered_softmax(v.detach(), tau)
    # The KL form differs from the cross-entropy form by lam tau^2 H(q).
    value = sum(terms.values()) + lam * tau**2 * entropy(rho).sum()
    assert num(value) == pytest.approx(3.415062, abs=1e-5)
    sum(terms.values()).backward()
    np.testing.assert_allclose(
        z.grad[0].numpy(), [-0.218705, 0.103690, 0.093396, 0.021620], atol=1e-5
    )
    assert v.grad is None  # the teacher is a constant
    # The cross-entropy helper gives the golden value directly.
    ce_form = (1 - lam) * F.cross_entropy(z, torch.tensor([G])) + lam * soft_cross_entropy(
        z, rho, tau
    )
    assert num(ce_form) == pytest.approx(3.415062, abs=1e-5)


def test_kl_form_identity() -> None:
    """At tau = 1, lam = 1: L(q) - H(q) = KL(q || p) = 0.053705 for q = rho^2 of the golden example."""
    z, v = golden_logits()
    q = tempered_softmax(v.detach(), 2.0)
    assert num(soft_target_loss(z, q, 1.0)) == pytest.approx(0.053705, abs=1e-6)
    diff = soft_cross_entropy(z, q, 1.0) - entropy(q).sum()
    assert num(diff) == pytest.approx(0.053705, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_soft_target_gradient_formula(tau: float, lam: float) -> None:
    """dL/dz = (1 - lam)(p - e_g) + lam tau (p^tau - q), checked by central differences too."""
    gen = torch.Generator().manual_seed(int(10 * tau + lam * 3))
    z0 = torch.randn(1, 5, dtype=torch.float64, generator=gen)
    q = torch.rand(1, 5, dtype=torch.float64, generator=gen)
    q = q / q.sum()
    g = torch.tensor([2])

    def loss(z: Tensor) -> Tensor:
        return (1 - lam) * F.cross_entropy(z, g) + lam * soft_cross_entropy(z, q, tau)

    z = z0.clone().requires_grad_(True)
    loss(z).backward()
    p, pt = np_softmax(z0.numpy()[0]), np_softmax(z0.numpy()[0], tau)
    closed = (1 - lam) * (p - np.eye(5)[2]) + lam * tau * (pt - q.numpy()[0])
    np.testing.assert_allclose(z.grad[0].numpy(), closed, atol=1e-10)
    h = 1e-6
    fd = [
        (
            num(loss(z0 + h * torch.eye(5, dtype=torch.float64)[i]))
            - num(loss(z0 - h * torch.eye(5, dtype=torch.float64)[i]))
        )
        / (2 * h)
        for i in range(5)
    ]
    np.testing.assert_allclose(fd, closed, atol=1e-6)
    # The KL form has the same gradient.
    z2 = z0.clone().requires_grad_(True)
    ((1 - lam) * F.cross_entropy(z2, g) + lam * soft_target_loss(z2, q, tau)).backward()
    np.testing.assert_allclose(z2.grad.numpy(), z.grad.numpy(), atol=1e-12)


# ----------------------------------------------------------------------------- KD


def test_kd_value_and_gradient_by_hand() -> None:
    tau, gamma, alpha = 3.0, 0.2, 0.8
    rng = np.random.default_rng(1)
    zs = rng.normal(size=(3, 4)) * 2
    vs = rng.normal(size=(3, 4)) * 2
    y = [0, 2, 3]
    z = torch.tensor(zs, requires_grad=True)
    v = torch.tensor(vs, requires_grad=True)
    method = build_method("kd", tau=tau, gamma=gamma, alpha=alpha)
    terms = method(Outputs(z), Outputs(v), logit_batch(y))

    # Hand computation with explicit softmax and logs.
    ce = kl = 0.0
    for b in range(3):
        p = [math.exp(x) for x in zs[b]]
        p = [x / sum(p) for x in p]
        pt = [math.exp(x / tau) for x in zs[b]]
        pt = [x / sum(pt) for x in pt]
        rt = [math.exp(x / tau) for x in vs[b]]
        rt = [x / sum(rt) for x in rt]
        ce += -math.log(p[y[b]]) / 3
        kl += sum(r * (math.log(r) - math.log(s)) for r, s in zip(rt, pt, strict=True)) / 3
    assert num(terms["ce"]) == pytest.approx(gamma * ce, abs=1e-12)
    assert num(terms["kd"]) == pytest.approx(alpha * tau**2 * kl, abs=1e-12)

    sum(terms.values()).backward()
    onehot = np.eye(4)[y]
    closed = (
        gamma * (np_softmax(zs) - onehot)
        + alpha * tau * (np_softmax(zs, tau) - np_softmax(vs, tau))
    ) / 3
    np.testing.assert_allclose(z.grad.numpy(), closed, atol=1e-12)
    assert v.grad is None


def test_kd_defaults_and_teacher_required() -> None:
    method = build_method("kd")
    assert (method.tau, method.gamma, method.alpha) == (4.0, 0.1, 0.9)
    with pytest.raises(KdscopeError):
        method(Outputs(torch.zeros(1, 3)), None, logit_batch([0]))
    with pytest.raises(KdscopeError):
        build_method("kd", temperature=2)
    with pytest.raises(KdscopeError, match="teacher's have shape"):
        method(Outputs(torch.zeros(2, 3)), Outputs(torch.zeros(2, 4)), logit_batch([0, 1]))


# ----------------------------------------------------------------------------- feature mimicking


def test_feature_mimic_value_by_hand() -> None:
    student, teacher = models()
    data = image_data()
    method = bound(build_method("feature_mimic", weight=0.5), student, teacher, data)
    assert method.student_layers() == ["conv"] and method.teacher_layers() == ["conv"]
    batch = data.batch(torch.arange(8))
    s, t = outputs(method, student, teacher, batch)
    terms = method(s, t, batch)
    assert set(terms) == {"mimic"}
    fs, ft = s.features["conv"].detach().numpy(), t.features["conv"].numpy()
    assert num(terms["mimic"]) == pytest.approx(0.5 * ((fs - ft) ** 2).mean(), rel=1e-5)
    # pre-ReLU output of the layer: it has negative entries
    assert (fs < 0).any()


def test_feature_mimic_phases() -> None:
    method = build_method("feature_mimic")
    assert [(p.name, p.epochs) for p in method.phases(10)] == [("mimic", 6), ("classifier", 4)]
    assert [(p.name, p.epochs) for p in method.phases(2)] == [("mimic", 1), ("classifier", 1)]
    assert [(p.name, p.epochs) for p in method.phases(1)] == [("mimic", 1)]
    high = build_method("feature_mimic", mimic_fraction=0.99)
    assert [(p.name, p.epochs) for p in high.phases(10)] == [("mimic", 9), ("classifier", 1)]
    # distilling the logits has no classifier phase
    student, teacher = models()
    for layer in ("logits", "fc3"):
        logit = bound(build_method("feature_mimic", layer=layer), student, teacher, image_data())
        assert [(p.name, p.epochs) for p in logit.phases(10)] == [("mimic", 10)]


def test_feature_mimic_classifier_phase_freezes_below_layer() -> None:
    student, teacher = models()
    data = image_data()
    method = bound(build_method("feature_mimic"), student, teacher, data)
    below = ("normalize", "stem", "stage1", "stage2", "conv")
    above = ("fc1", "fc2", "fc3")

    student.train()
    method.enter_phase("classifier", student)
    for name, p in student.named_parameters():
        assert p.requires_grad == name.startswith(above), name
    for name, m in student.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert name.startswith(below) and not m.training, name
    assert all(getattr(student, n).training for n in above)

    bn = student.conv[1]
    stats = bn.running_mean.clone()
    batch = data.batch(torch.arange(8))
    s, t = outputs(method, student, teacher, batch)
    terms = method(s, t, batch)
    assert set(terms) == {"ce"}
    sum(terms.values()).backward()
    assert torch.equal(bn.running_mean, stats)  # statistics below L stop moving
    assert student.conv[0].weight.grad is None and student.stem[0].weight.grad is None
    assert student.fc1.weight.grad is not None and student.fc1.weight.grad.abs().sum() > 0

    # idempotent, and going back to the mimic phase unfreezes
    method.enter_phase("classifier", student)
    assert not student.conv[0].weight.requires_grad
    student.train()
    method.enter_phase("mimic", student)
    assert all(p.requires_grad for p in student.parameters())


def test_feature_mimic_vector_layer_freezes_up_to_it() -> None:
    student, teacher = models()
    method = bound(build_method("feature_mimic", layer="fc1"), student, teacher, image_data())
    student.train()
    method.enter_phase("classifier", student)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable == {"fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}


def test_feature_mimic_shape_mismatch() -> None:
    student, teacher = models(student_width=4, teacher_width=8)
    with pytest.raises(KdscopeError, match=r"last_conv.*\(8, 4, 4\).*\(16, 4, 4\)"):
        bound(build_method("feature_mimic"), student, teacher, image_data())


# ----------------------------------------------------------------------------- hint


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "kind"),
    [
        ((8, 8, 8), (16, 8, 8), nn.Conv2d),  # equal: 1x1
        ((8, 16, 16), (16, 8, 8), nn.Conv2d),  # double: 3x3 stride 2
        ((8, 4, 4), (16, 8, 8), nn.ConvTranspose2d),  # half: 4x4 transposed stride 2
        ((8, 10, 9), (16, 8, 8), nn.Conv2d),  # other: kernel (3, 2)
        ((12,), (20,), nn.Linear),  # vectors
    ],
)
def test_hint_regressor_shapes(s_shape: tuple, t_shape: tuple, kind: type) -> None:
    reg = build_regressor(s_shape, t_shape)
    assert isinstance(reg[0], kind)
    assert isinstance(reg[1], nn.BatchNorm1d if len(s_shape) == 1 else nn.BatchNorm2d)
    assert isinstance(reg[2], nn.ReLU)
    assert reg(torch.randn(3, *s_shape)).shape == (3, *t_shape)
    if s_shape == (8, 8, 8):
        assert reg[0].kernel_size == (1, 1)
    if s_shape == (8, 16, 16):
        assert (reg[0].kernel_size, reg[0].stride, reg[0].padding) == ((3, 3), (2, 2), (1, 1))
    if s_shape == (8, 10, 9):
        assert reg[0].kernel_size == (3, 2)


def test_hint_regressor_unsupported() -> None:
    with pytest.raises(KdscopeError):
        build_regressor((8, 4, 4), (16, 6, 6))
    with pytest.raises(KdscopeError):
        build_regressor((8, 4, 4), (16,))


def test_hint_value_by_hand() -> None:
    student, teacher = models(teacher="resnet_small")
    data = image_data()
    method = bound(build_method("hint", gamma=0.7, beta=3.0), student, teacher, data)
    assert method.student_layers() == ["stage2"] and method.teacher_layers() == ["stage2"]
    assert isinstance(method.regressor[0], nn.ConvTranspose2d)  # student 4x4, teacher 8x8
    batch = data.batch(torch.arange(8))
    s, t = outputs(method, student, teacher, batch)
    terms = method(s, t, batch)
    with torch.no_grad():
        r = method.regressor(s.features["stage2"]).numpy()
    ft = t.features["stage2"].numpy()
    z = s.logits.detach().numpy().astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    ce = -logp[np.arange(8), batch.label.numpy()].mean()
    assert num(terms["ce"]) == pytest.approx(0.7 * ce, rel=1e-5)
    assert num(terms["hint"]) == pytest.approx(3.0 * ((r - ft) ** 2).mean(), rel=1e-5)
    sum(terms.values()).backward()
    assert method.regressor[0].weight.grad is not None
    assert student.stage2[1].weight.grad.abs().sum() > 0


def test_hint_separate_layers() -> None:
    student, teacher = models(teacher="resnet_small")
    method = bound(
        build_method("hint", student_layer="stage1", teacher_layer="stage3"),
        student,
        teacher,
        image_data(),
    )
    assert method.student_layers() == ["stage1"] and method.teacher_layers() == ["stage3"]


# ----------------------------------------------------------------------------- CRD


def test_crd_nce_golden() -> None:
    """d = 2, tau = 1, Z = 1, n_data = 4, N = 1: P_0 = e, P_1 = 1, N P_n = 0.25, l = 1.697421."""
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    scores = candidate_scores(memory, torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.0]]), 1.0)
    log_p = scores - math.log(1.0)
    assert num(nce_loss(log_p, n_data=4)) == pytest.approx(1.697421, abs=1e-6)


def crd_setup(n_negatives: int = 5, loss: str = "nce"):
    student, teacher = models()
    data = image_data(n=30, k=3)
    method = build_method("crd", n_negatives=n_negatives, feat_dim=6, tau=0.5, beta=0.9, loss=loss)
    bound(method, student, teacher, data)
    return method, student, teacher, data


def hand_nce(e: np.ndarray, memory: np.ndarray, idx: np.ndarray, tau: float, z: float) -> float:
    n_data, n_neg = memory.shape[0], idx.shape[1] - 1
    pn = 1.0 / n_data
    total = 0.0
    for b in range(e.shape[0]):
        p = np.exp(memory[idx[b]] @ e[b] / tau) / z
        total += -math.log(p[0] / (p[0] + n_neg * pn))
        total += -sum(math.log(n_neg * pn / (pj + n_neg * pn)) for pj in p[1:])
    return total / e.shape[0]


def test_crd_loss_by_hand() -> None:
    method, student, teacher, data = crd_setup()
    gen = torch.Generator().manual_seed(3)
    mem_s = F.normalize(torch.randn(30, 6, generator=gen), dim=1)
    mem_t = F.normalize(torch.randn(30, 6, generator=gen), dim=1)
    method.memory_s.copy_(mem_s)
    method.memory_t.copy_(mem_t)
    method.z_s.fill_(2.5)
    method.z_t.fill_(4.0)
    batch = data.batch(torch.tensor([3, 7, 11, 20]))
    s, t = outputs(method, student, teacher, batch)

    torch.manual_seed(123)
    idx = method.candidates(batch.index)
    torch.manual_seed(123)
    terms = method(s, t, batch)

    assert idx.shape == (4, 6) and torch.equal(idx[:, 0], batch.index)
    with torch.no_grad():
        e_s = method.embed_s(s.features["fc2_act"]).double().numpy()
        e_t = method.embed_t(t.features["fc2_act"]).double().numpy()
    assert np.allclose(np.linalg.norm(e_s, axis=1), 1.0)
    hand = hand_nce(e_s, mem_t.double().numpy(), idx.numpy(), 0.5, 2.5)
    hand += hand_nce(e_t, mem_s.double().numpy(), idx.numpy(), 0.5, 4.0)
    assert num(terms["crd"]) == pytest.approx(0.9 * hand, rel=1e-5)
    assert num(terms["ce"]) == pytest.approx(num(F.cross_entropy(s.logits, batch.label)), rel=1e-6)

    # the memories of the batch moved: m <- normalise(0.5 m + 0.5 e); the rest did not
    expect_s = F.normalize(0.5 * mem_s[batch.index] + 0.5 * torch.tensor(e_s).float(), dim=1)
    assert torch.allclose(method.memory_s[batch.index], expect_s, atol=1e-6)
    expect_t = F.normalize(0.5 * mem_t[batch.index] + 0.5 * torch.tensor(e_t).float(), dim=1)
    assert torch.allclose(method.memory_t[batch.index], expect_t, atol=1e-6)
    others = torch.ones(30, dtype=torch.bool)
    others[batch.index] = False
    assert torch.equal(method.memory_s[others], mem_s[others])

    sum(terms.values()).backward()
    assert method.embed_s.linear.weight.grad is not None
    assert method.embed_t.linear.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_crd_softmax_option_by_hand() -> None:
    method, student, teacher, data = crd_setup(loss="softmax")
    batch = data.batch(torch.arange(5))
    s, t = outputs(method, student, teacher, batch)
    mem_s, mem_t = method.memory_s.clone(), method.memory_t.clone()
    torch.manual_seed(5)
    idx = method.candidates(batch.index)
    torch.manual_seed(5)
    terms = method(s, t, batch)
    with torch.no_grad():
        e_s, e_t = method.embed_s(s.features["fc2_act"]), method.embed_t(t.features["fc2_act"])
    hand = 0.0
    for e, mem in ((e_s, mem_t), (e_t, mem_s)):
        scores = (mem[idx] @ e.unsqueeze(2)).squeeze(2).double().numpy() / 0.5
        hand += np.mean([-(sc[0] - np.log(np.exp(sc).sum())) for sc in scores])
    assert num(terms["crd"]) == pytest.approx(0.9 * hand, rel=1e-5)


def test_crd_negatives_are_other_class_and_uniform() -> None:
    labels = torch.tensor([0] * 10 + [1] * 30 + [2] * 5 + [3] * 55)
    order, count, start = class_table(labels, 5)  # class 4 is empty
    torch.manual_seed(0)
    anchors = torch.tensor([0, 1, 2, 3] * 50)
    neg = sample_other_class(order, count, start, anchors, 500)
    assert neg.shape == (200, 500)
    assert not (labels[neg] == anchors.unsqueeze(1)).any()
    # each other-class example is equally likely: counts per anchor class over many draws
    for c in range(4):
        draws = neg[anchors == c].flatten()
        pool = (labels != c).nonzero().flatten()
        freq = torch.bincount(draws, minlength=100)[pool].double()
        expected = draws.numel() / pool.numel()
        assert freq.min() > 0
        assert (freq - expected).abs().max() < 6 * math.sqrt(expected)
        assert freq.sum() == draws.numel()


def test_crd_negatives_reproducible_with_global_seed() -> None:
    labels = torch.arange(50) % 5
    table = class_table(labels)
    torch.manual_seed(7)
    a = sample_other_class(*table, labels[:8], 64)
    torch.manual_seed(7)
    b = sample_other_class(*table, labels[:8], 64)
    assert torch.equal(a, b)


def test_crd_memory_update_rule() -> None:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    e = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    momentum_update(memory, torch.tensor([0, 2]), e, 0.5)
    np.testing.assert_allclose(memory[0].numpy(), [0.5**0.5, 0.5**0.5], atol=1e-6)
    np.testing.assert_allclose(memory[1].numpy(), [0.0, 1.0])
    row = np.array([0.8, 0.4]) / np.linalg.norm([0.8, 0.4])
    np.testing.assert_allclose(memory[2].numpy(), row, atol=1e-6)
    assert torch.allclose(memory.norm(dim=1), torch.ones(3))


def test_crd_memory_init_and_state() -> None:
    method, *_ = crd_setup()
    a = 1 / math.sqrt(6 / 3)
    assert method.memory_s.shape == (30, 6) and method.memory_t.shape == (30, 6)
    assert method.memory_s.abs().max() <= a
    state = method.state_dict()
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(state)
    assert not {"class_order", "class_count", "class_start", "train_labels"} & set(state)
    assert num(method.z_s) == -1 and num(method.z_t) == -1


def test_crd_z_fixed_after_first_batch() -> None:
    method, student, teacher, data = crd_setup(n_negatives=50)
    batch = data.batch(torch.arange(6))
    s, t = outputs(method, student, teacher, batch)
    memory_t = method.memory_t.clone()
    torch.manual_seed(1)
    idx = method.candidates(batch.index)
    torch.manual_seed(1)
    method(s, t, batch)
    with torch.no_grad():
        e_s = method.embed_s(s.features["fc2_act"])
        expect = torch.exp(candidate_scores(memory_t, idx, e_s, 0.5)).mean() * 30
    assert num(method.z_s) == pytest.approx(num(expect), rel=1e-5)
    z_s, z_t = num(method.z_s), num(method.z_t)
    assert z_s > 0 and z_t > 0
    batch2 = data.batch(torch.arange(10, 20))
    s, t = outputs(method, student, teacher, batch2)
    method(s, t, batch2)
    assert (num(method.z_s), num(method.z_t)) == (z_s, z_t)


def test_crd_rejects_foreign_indices() -> None:
    method, student, teacher, data = crd_setup()
    batch = data.batch(torch.arange(4))
    batch.index = torch.tensor([0, 1, 2, 99])
    s, t = outputs(method, student, teacher, batch)
    with pytest.raises(KdscopeError):
        method(s, t, batch)


# ----------------------------------------------------------------------------- attention


def hand_at(fs: np.ndarray, ft: np.ndarray) -> float:
    def att(f: np.ndarray) -> np.ndarray:
        v = (f**2).mean(axis=1).reshape(f.shape[0], -1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return num(((att(fs) - att(ft)) ** 2).mean())


def test_attention_loss_by_hand() -> None:
    rng = np.random.default_rng(2)
    fs, ft = rng.normal(size=(2, 3, 2, 3)), rng.normal(size=(2, 5, 2, 3))
    assert num(at_loss(torch.tensor(fs), torch.tensor(ft))) == pytest.approx(
        hand_at(fs, ft), rel=1e-10
    )
    assert num(at_loss(torch.tensor(fs), torch.tensor(fs))) == 0.0
    # different spatial sizes: the larger map is average-pooled to the smaller one
    big = rng.normal(size=(2, 3, 4, 6))
    pooled = big.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5))
    assert num(at_loss(torch.tensor(big), torch.tensor(ft))) == pytest.approx(
        hand_at(pooled, ft), rel=1e-10
    )


def test_attention_method_by_hand_and_zero_for_equal_features() -> None:
    student, teacher = models(teacher="resnet_small")
    data = image_data()
    method = bound(build_method("attention", gamma=0.5, beta=10.0), student, teacher, data)
    assert method.student_layers() == ["stage2", "conv"]
    batch = data.batch(torch.arange(8))
    s, t = outputs(method, student, teacher, batch)
    terms = method(s, t, batch)
    hand = 0.0
    for path in ("stage2", "conv"):
        fs = s.features[path].detach().double()
        ft = t.features[path].double()
        fs, ft = (F.adaptive_avg_pool2d(f, (4, 4)) for f in (fs, ft))
        hand += hand_at(fs.numpy(), ft.numpy())
    assert num(terms["at"]) == pytest.approx(10.0 * hand, rel=1e-4)
    assert num(terms["ce"]) == pytest.approx(0.5 * num(F.cross_entropy(s.logits, batch.label)))

    same = Outputs(s.logits, {k: v.detach() for k, v in s.features.items()})
    assert num(method(s, same, batch)["at"]) == 0.0


def test_attention_needs_maps() -> None:
    torch.manual_seed(0)
    student = build_model("mlp", 10, input_size=16, hidden=8)
    teacher = build_model("mlp", 10, input_size=16, hidden=8)
    with pytest.raises(KdscopeError, match="middle"):
        bound(build_method("attention", layers=["middle"]), student, teacher, image_data())


# ----------------------------------------------------------------------------- every method


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_the_student(name: str) -> None:
    data = image_data()
    student, teacher = models()
    method = build_method(name)
    used_teacher = teacher if method.needs_teacher else None
    bound(method, student, used_teacher, data)
    phases = method.phases(4)
    assert sum(p.epochs for p in phases) == 4
    student.train()
    method.enter_phase(phases[0].name, student)
    batch = data.batch(torch.arange(8, 16))
    s, t = outputs(method, student, used_teacher, batch)
    terms = method(s, t, batch)
    assert terms
    for key, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    sum(terms.values()).backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())


# ----------------------------------------------------------------------- soft-label control


def test_soft_label_golden_mass_without_noise() -> None:
    labels = torch.tensor([3, 0])
    q = soft_labels(labels, torch.zeros(2, 10), 0.15)
    assert torch.allclose(q.sum(-1), torch.ones(2))
    gt = math.exp(1 / 0.15) / (math.exp(1 / 0.15) + 9)
    assert gt == pytest.approx(0.988676, abs=1e-6)
    assert num(q[0, 3]) == pytest.approx(gt, abs=1e-6) and num(q[1, 0]) == pytest.approx(gt, 1e-6)


def test_soft_label_loss_by_hand_with_a_fixed_noise_table() -> None:
    data = image_data(n=40, k=10)
    method = build_method("soft_label", tau=2.0, gamma=0.3, alpha=0.7, noise_seed=5)
    bound(method, nn.Linear(1, 10), None, data)
    table = method.noise.clone()
    assert table.shape == (40, 10)
    assert table.var().item() == pytest.approx(0.2, rel=0.15)  # variance 0.2 per component
    again = bound(build_method("soft_label", noise_seed=5), nn.Linear(1, 10), None, data)
    assert torch.equal(again.noise, table)  # one fixed table per seed

    batch = data.batch(torch.tensor([7, 2, 31]))
    z = torch.randn(3, 10, dtype=torch.float64)
    terms = method(Outputs(z, {}), None, batch)
    noise = table[[7, 2, 31]].double().numpy()
    q = np_softmax((np.eye(10)[batch.label.numpy()] + noise) / 0.15)
    p_tau = np_softmax(z.numpy(), 2.0)
    kl = (q * (np.log(q) - np.log(p_tau))).sum(-1).mean()
    ce = -np.log(np_softmax(z.numpy())[np.arange(3), batch.label.numpy()]).mean()
    assert num(terms["kd"]) == pytest.approx(0.7 * 4.0 * kl, rel=1e-6)
    assert num(terms["ce"]) == pytest.approx(0.3 * ce, rel=1e-6)
    # the same example keeps its target in any batch
    assert torch.allclose(method.targets(data.batch(torch.tensor([2]))), method.targets(batch)[1:2])


def test_soft_label_resample_follows_the_global_generator_and_needs_bind() -> None:
    data = image_data()
    with pytest.raises(KdscopeError, match="bound"):
        build_method("soft_label").targets(data.batch(torch.arange(4)))
    method = bound(build_method("soft_label", resample=True), nn.Linear(1, 10), None, data)
    batch = data.batch(torch.arange(4))
    torch.manual_seed(1)
    a = method.targets(batch)
    torch.manual_seed(1)
    assert torch.equal(method.targets(batch), a)  # a resumed epoch redraws the same noise
    assert not torch.allclose(method.targets(batch), a)
