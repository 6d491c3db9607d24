"""The soft-label, no-teacher control of the property-transfer paper (Ojha et al. 2023).

The KL student's loss with the teacher's tempered probabilities replaced by generic soft labels:

    q_b = softmax((e_{y_b} + n_b) / s),        n_b ~ N(0, sigma2 I),   s = 0.15, sigma2 = 0.2
    L   = gamma * (1/B) sum_b H(e_{y_b}, p_b) + alpha * tau^2 * (1/B) sum_b KL(q_b || p^tau_b)

with the KL student's tau, gamma and alpha. The noise is drawn once per training example from a
generator seeded by ``noise_seed`` (a fixed table, like a teacher's fixed outputs); with
``resample: true`` it is drawn afresh at every step from torch's global generator, which the
trainer seeds per epoch, so a resumed run still draws the same noise. With n = 0 the label keeps
mass e^{1/s} / (e^{1/s} + K - 1) (0.988676 for K = 10). If a student distilled from a teacher
shows a property that this student does not, the property came from the teacher, not from soft
targets as such.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, Method, check_weights
from kdscope.methods.controlled_targets import require_bound
from kdscope.methods.kd import soft_target_loss
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


def soft_labels(labels: Tensor, noise: Tensor, sharpness: float) -> Tensor:
    """q = softmax((onehot(y) + n) / s) row-wise; ``noise`` (B, K) gives K."""
    onehot = F.one_hot(labels.long(), noise.shape[-1]).to(noise.dtype)
    return F.softmax((onehot + noise) / sharpness, dim=-1)


@register_method("soft_label")
class SoftLabel(Method):
    """gamma * CE(z, y) + alpha * tau^2 * KL(q || softmax(z/tau)), q = softmax((e_y + n)/s).

    Terms ``"ce"`` and ``"kd"`` (named as the KL student's, so the two compare term by term).
    Parameters: ``tau`` (4), ``gamma`` (0.1), ``alpha`` (0.9) as in ``kd``; ``sharpness`` s
    (0.15); ``noise_var`` sigma2 (0.2, the variance of each noise component); ``noise_seed`` (0);
    ``resample`` (false: one noise vector per training example for the whole run).
    """

    distill_weight = "alpha"
    role = "control"

    needs_teacher = False

    def __init__(
        self,
        tau: float = 4.0,
        gamma: float = 0.1,
        alpha: float = 0.9,
        sharpness: float = 0.15,
        noise_var: float = 0.2,
        noise_seed: int = 0,
        resample: bool = False,
    ) -> None:
        super().__init__()
        for key, value in (("tau", tau), ("sharpness", sharpness)):
            if not value > 0:
                raise KdscopeError(f"soft_label: {key} must be positive, got {value}")
        check_weights("soft_label", gamma=gamma, alpha=alpha)
        if not noise_var >= 0:
            raise KdscopeError(f"soft_label: noise_var must be >= 0, got {noise_var}")
        self.tau, self.gamma, self.alpha = float(tau), float(gamma), float(alpha)
        self.sharpness, self.noise_var = float(sharpness), float(noise_var)
        self.noise_seed, self.resample = int(noise_seed), bool(resample)
        self.register_buffer("noise", torch.empty(0))

    def bind(self, ctx: BindContext) -> None:
        """Draw the fixed noise table (N, K) for the N training examples."""
        gen = torch.Generator().manual_seed(self.noise_seed)
        shape = (len(ctx.train), ctx.num_classes)
        self.noise = math.sqrt(self.noise_var) * torch.randn(shape, generator=gen)

    def targets(self, batch: Batch) -> Tensor:
        """The soft labels q (B, K) of a batch (its ``index`` rows of the noise table)."""
        table = require_bound(self.name, self.noise)
        if self.resample:
            noise = math.sqrt(self.noise_var) * torch.randn(len(batch), table.shape[1])
        else:
            noise = table[batch.index.to(table.device)]
        return soft_labels(batch.label.to(noise.device), noise, self.sharpness)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        q = self.targets(batch).to(student.logits.device)
        return {
            "ce": self.gamma * F.cross_entropy(student.logits, batch.label),
            "kd": self.alpha * soft_target_loss(student.logits, q, self.tau),
        }

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, gamma={self.gamma}, alpha={self.alpha}, sharpness={self.sharpness}, "
            f"noise_var={self.noise_var}, noise_seed={self.noise_seed}, resample={self.resample}"
        )
