"""The generic soft-target loss of docs/methods.md, 'Controlled targets', and its closed-form
gradient.

Notation: K classes, label g, one-hot e_g, student logits z, p = softmax(z), p^tau = softmax(z/tau),
teacher logits v, rho^tau = softmax(v/tau), H(a, b) = -sum_i a_i log b_i, B the batch size.

Every controlled-target method distils towards a target q (rows sum to 1, a constant):

    L(q) = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau)                  (batch mean)

with the per-example logit gradient (the tau^2 meets a 1/tau from the chain rule)

    dL/dz_i = (1 - lam)(p_i - 1[i = g]) + lam tau (p^tau_i - q_i).

Targets are built from the teacher distribution at the student's temperature, rho = rho^tau
(``target_temperature="pre"``, the default), or from rho^1 and then tempered,
q <- q^(1/tau) / sum_j q_j^(1/tau) (``"post"``).

:class:`SoftTargets` is the interface analyses use to get any such method's target and weights
(KD, label smoothing and every :class:`SoftTargetMethod` satisfy it), e.g. to compute gradient
rescaling factors with :func:`logit_gradient` without knowing the method.
"""

from __future__ import annotations

import abc
import itertools
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import Method, probe, require_teacher
from kdscope.methods.kd import check_logits, soft_cross_entropy, tempered_softmax
from kdscope.models.hooks import Outputs

TARGET_TEMPERATURES = ("pre", "post")


def logit_gradient(
    z: Tensor, q: Tensor, labels: Tensor, tau: float, ce_weight: float, soft_weight: float
) -> Tensor:
    """Per-example gradient of ce_weight H(e_g, p) + soft_weight tau^2 H(q, p^tau) w.r.t. z.

    ``z``, ``q``: (B, K); ``labels``: (B,). Returns (B, K)
    ce_weight (softmax(z) - e_g) + soft_weight tau (softmax(z/tau) - q), not divided by B.
    """
    onehot = F.one_hot(labels.long(), z.shape[-1]).to(z.dtype)
    hard = F.softmax(z, dim=-1) - onehot
    soft = tempered_softmax(z, tau) - q.to(z.dtype)
    return ce_weight * hard + soft_weight * tau * soft


def temper(q: Tensor, tau: float) -> Tensor:
    """q^(1/tau) renormalised over the last dimension (zeros stay zero)."""
    powered = q.clamp_min(0).pow(1.0 / tau)
    return powered / powered.sum(dim=-1, keepdim=True)


@runtime_checkable
class SoftTargets(Protocol):
    """A loss ce_weight H(e_g, p) + soft_weight tau^2 H(q, p^tau) with a computable target q."""

    @property
    def tau(self) -> float: ...

    @property
    def ce_weight(self) -> float: ...

    @property
    def soft_weight(self) -> float: ...

    def soft_target(self, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """q (B, K), rows summing to 1, detached, for teacher logits (B, K) and labels (B,)."""
        ...


def soft_target_gradient(
    method: SoftTargets, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor
) -> Tensor:
    """Per-example logit gradient (B, K) of any :class:`SoftTargets` method's loss."""
    q = method.soft_target(teacher_logits, labels)
    return logit_gradient(
        student_logits, q, labels, method.tau, method.ce_weight, method.soft_weight
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has neither)."""
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def teacher_probabilities(
    teacher: nn.Module, inputs: Tensor, tau: float, batch_size: int = 500
) -> Tensor:
    """(N, K) softmax(v/tau) of the teacher in eval mode on ``inputs`` (no augmentation)."""
    device = model_device(teacher)
    rows = [
        tempered_softmax(probe(teacher, inputs[i : i + batch_size].to(device), []).logits, tau)
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return torch.cat(rows).detach()


def gt_mass_target(gt_mass: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """q_g = m, q_i = (1 - m)/(K - 1) for i != g: mass ``gt_mass`` (B,) on the label, uniform tail."""
    tail = (1 - gt_mass) / max(num_classes - 1, 1)
    q = tail.unsqueeze(-1).expand(-1, num_classes).clone()
    return q.scatter(-1, labels.long().unsqueeze(-1), gt_mass.unsqueeze(-1))


class SoftTargetMethod(Method, abc.ABC):
    """L(q) = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau), q built by :meth:`build`.

    Terms ``"ce"`` = (1 - lam) CE and ``"soft"`` = lam tau^2 mean_b H(q_b, p^tau_b) (the
    cross-entropy form, so their sum is L). Parameters: ``tau`` > 0 (default 4),
    ``lam`` in [0, 1] (default 0.7), ``target_temperature`` "pre" (q from rho^tau) or "post"
    (q from rho^1, then tempered).
    """

    def __init__(self, tau: float = 4.0, lam: float = 0.7, target_temperature: str = "pre") -> None:
        super().__init__()
        if not tau > 0:
            raise KdscopeError(f"{self.name}: the temperature tau must be positive, got {tau}")
        if not 0.0 <= lam <= 1.0:
            raise KdscopeError(f"{self.name}: lam must be in [0, 1], got {lam}")
        if target_temperature not in TARGET_TEMPERATURES:
            raise KdscopeError(
                f"{self.name}: target_temperature must be one of {TARGET_TEMPERATURES}, "
                f"got {target_temperature!r}"
            )
        self.tau = float(tau)
        self.lam = float(lam)
        self.target_temperature = target_temperature

    @property
    def ce_weight(self) -> float:
        return 1.0 - self.lam

    @property
    def soft_weight(self) -> float:
        return self.lam

    @property
    def rho_tau(self) -> float:
        """The temperature of the teacher distribution targets are built from (tau or 1)."""
        return self.tau if self.target_temperature == "pre" else 1.0

    def tempers_target(self) -> bool:
        """Whether the built target is tempered afterwards ("post")."""
        return self.target_temperature == "post"

    @abc.abstractmethod
    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        """The target q (B, K) from the teacher distribution ``rho`` (B, K) and labels (B,)."""

    @torch.no_grad()
    def soft_target(self, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        rho = tempered_softmax(teacher_logits.detach(), self.rho_tau)
        q = self.build(rho, labels.to(rho.device))
        return (temper(q, self.tau) if self.tempers_target() else q).detach()

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        check_logits(self.name, student.logits, teacher.logits)
        q = self.soft_target(teacher.logits, batch.label)
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.label),
            "soft": self.soft_weight * soft_cross_entropy(student.logits, q, self.tau),
        }

    def extra_repr(self) -> str:
        return f"tau={self.tau}, lam={self.lam}, target_temperature={self.target_temperature!r}"


def require_bound(method: str, table: Tensor) -> Tensor:
    """``table`` (a buffer filled by ``bind``), or a user error when bind has not run (the buffer
    is still empty or NaN)."""
    if table.numel() == 0 or bool(table.isnan().all()):
        raise KdscopeError(f"method {method!r} must be bound to the training set before use")
    return table


__all__ = [
    "SoftTargetMethod",
    "SoftTargets",
    "gt_mass_target",
    "logit_gradient",
    "model_device",
    "require_bound",
    "soft_target_gradient",
    "teacher_probabilities",
    "temper",
]
