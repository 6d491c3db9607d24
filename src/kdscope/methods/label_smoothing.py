"""Label smoothing: cross-entropy against a mixture of the one-hot label and the uniform law.

With K classes, label y, student logits z and p = softmax(z):

    q^LS = (1 - eps) e_y + eps u,        u_i = 1/K
    L    = (1/B) sum_b H(q^LS_b, p_b) = -(1/B) sum_b sum_i q^LS_{b,i} log p_{b,i}
    dL/dz_{b,i} = (p_{b,i} - q^LS_{b,i}) / B

It is the "universe" level of teacher knowledge in Tang et al. 2020 (docs/three_levels.md): the
soft-target loss L(q) with lambda = 1, tau = 1 and q = q^LS. No teacher is used; for the
``SoftTargets`` interface (tau = 1, ce_weight = 0, soft_weight = 1, q = q^LS) the teacher logits
only give K.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import Method
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


@register_method("label_smoothing")
class LabelSmoothing(Method):
    """L = -(1/B) sum_b sum_i [(1 - eps) 1[i = y_b] + eps/K] log softmax(z_b)_i (term ``"ls"``).

    Parameters: ``eps`` in [0, 1] (default 0.1): the mass spread uniformly over all K classes.
    """

    needs_teacher = False
    roles = frozenset({"label_smoothing"})
    tau: float = 1.0  # the SoftTargets temperature: LS acts on p = p^1

    def __init__(self, eps: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= eps <= 1.0:
            raise KdscopeError(f"label_smoothing: eps must be in [0, 1], got {eps}")
        self.eps = float(eps)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        return {"ls": F.cross_entropy(student.logits, batch.label, label_smoothing=self.eps)}

    @property
    def ce_weight(self) -> float:
        return 0.0

    @property
    def soft_weight(self) -> float:
        return 1.0

    def soft_target(self, teacher_logits: Tensor | None, labels: Tensor) -> Tensor:
        """q^LS = (1 - eps) e_y + eps/K; ``teacher_logits`` (B, K) only gives K."""
        if teacher_logits is None:
            raise KdscopeError(
                "label_smoothing: soft_target needs logits of shape (batch, classes) to know K"
            )
        k = teacher_logits.shape[-1]
        onehot = F.one_hot(labels.long().to(teacher_logits.device), k).to(teacher_logits.dtype)
        return ((1 - self.eps) * onehot + self.eps / k).detach()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
