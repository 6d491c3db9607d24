"""Hinton knowledge distillation, and the soft-target losses other logit methods reuse.

Notation: student logits z, teacher logits v, temperature tau, p^tau = softmax(z/tau),
rho^tau = softmax(v/tau), H(a, b) = -sum_i a_i log b_i, B the batch size.

Hinton KD (Hinton et al. 2015, RepDistiller form):

    L = gamma * (1/B) sum_b H(e_{y_b}, p_b) + alpha * tau^2 * (1/B) sum_b KL(rho^tau_b || p^tau_b)

Soft-target helpers, for any target distribution q (rows sum to 1), treated as a constant:

* :func:`soft_target_loss` (KL form) = tau^2 (1/B) sum_b KL(q_b || p^tau_b)
  = tau^2 (1/B) sum_b [H(q_b, p^tau_b) - H(q_b)];
* :func:`soft_cross_entropy` (cross-entropy form) = tau^2 (1/B) sum_b H(q_b, p^tau_b).

They differ by the constant tau^2 * mean_b H(q_b), so both have the gradient

    d/dz_{b,i} = tau (p^tau_{b,i} - q_{b,i}) / B

(the tau^2 meets a 1/tau from the chain rule). The three-levels loss
L(q) = (1 - lambda) H(e_g, p) + lambda tau^2 H(q, p^tau) is ``KD(gamma=1-lambda, alpha=lambda)``
plus lambda tau^2 H(q); its logit gradient is (1 - lambda)(p - e_g) + lambda tau (p^tau - q).
The KD variants of docs/three_levels.md (KD-pt, KD-sim, KD-topk) only change q and reuse these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import Method, check_weights, require_teacher
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


def tempered_softmax(logits: Tensor, tau: float) -> Tensor:
    """softmax(logits / tau) over the last dimension."""
    return F.softmax(logits / tau, dim=-1)


def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor, tau: float = 1.0) -> Tensor:
    """tau^2 * mean_b H(q_b, softmax(z_b / tau)); the target ``q`` is detached (a constant)."""
    q = target_probs.detach()
    log_p = F.log_softmax(student_logits / tau, dim=-1)
    return tau**2 * -(q * log_p).sum(dim=-1).mean()


def entropy(probs: Tensor) -> Tensor:
    """Per-row entropy H(q) = -sum_i q_i log q_i, with 0 log 0 = 0."""
    return -torch.xlogy(probs, probs).sum(dim=-1)


def soft_target_loss(student_logits: Tensor, target_probs: Tensor, tau: float = 1.0) -> Tensor:
    """tau^2 * mean_b KL(q_b || softmax(z_b / tau)), summed over classes; ``q`` is a constant.

    Equals :func:`soft_cross_entropy` minus tau^2 * mean_b H(q_b): the same gradient, and 0 when
    the student's tempered distribution equals the target.
    """
    q = target_probs.detach()
    log_p = F.log_softmax(student_logits / tau, dim=-1)
    kl = (torch.xlogy(q, q) - q * log_p).sum(dim=-1)
    return tau**2 * kl.mean()


def check_logits(method: str, student_logits: Tensor, teacher_logits: Tensor) -> None:
    """A user error unless student and teacher logits have the same shape (batch, classes)."""
    if student_logits.shape != teacher_logits.shape:
        raise KdscopeError(
            f"method {method!r}: the student's logits have shape {tuple(student_logits.shape)} but "
            f"the teacher's have shape {tuple(teacher_logits.shape)}; they must predict the same "
            "classes"
        )


@register_method("kd")
class KD(Method):
    """Hinton KD: gamma * CE(z, y) + alpha * tau^2 * KL(softmax(v/tau) || softmax(z/tau)).

    Terms ``"ce"`` (gamma * CE) and ``"kd"`` (alpha * tau^2 * batch-mean KL summed over classes).
    Defaults (RepDistiller's KD script): tau = 4, gamma = 0.1, alpha = 0.9. The teacher's logits
    are constants (no gradient reaches the teacher). Satisfies
    :class:`kdscope.methods.controlled_targets.SoftTargets` with q = softmax(v/tau), ce_weight = gamma,
    soft_weight = alpha.
    """

    distill_weight = "alpha"
    roles = frozenset({"logit_kd"})

    def __init__(self, tau: float = 4.0, gamma: float = 0.1, alpha: float = 0.9) -> None:
        super().__init__()
        if not tau > 0:
            raise KdscopeError(f"kd: the temperature tau must be positive, got {tau}")
        check_weights("kd", gamma=gamma, alpha=alpha)
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.alpha = float(alpha)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        check_logits(self.name, student.logits, teacher.logits)
        target = tempered_softmax(teacher.logits.detach(), self.tau)
        return {
            "ce": self.gamma * F.cross_entropy(student.logits, batch.label),
            "kd": self.alpha * soft_target_loss(student.logits, target, self.tau),
        }

    @property
    def ce_weight(self) -> float:
        """Weight of H(e_g, p) (``SoftTargets`` interface): gamma."""
        return self.gamma

    @property
    def soft_weight(self) -> float:
        """Weight of tau^2 H(q, p^tau) (``SoftTargets`` interface): alpha; KL and H forms share
        the gradient."""
        return self.alpha

    def soft_target(self, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """The target q = softmax(v / tau), detached (``SoftTargets`` interface)."""
        return tempered_softmax(teacher_logits.detach(), self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, gamma={self.gamma}, alpha={self.alpha}"


__all__ = [
    "KD",
    "check_logits",
    "entropy",
    "require_teacher",
    "soft_cross_entropy",
    "soft_target_loss",
    "tempered_softmax",
]
