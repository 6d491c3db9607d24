"""LS-matched: label smoothing whose ground-truth mass equals the teacher's on average
(docs/methods.md).

With rho = rho^tau = softmax(v/tau) of the teacher in eval mode on the un-augmented training
inputs x_1..x_N (labels g_1..g_N), the scalar

    rho_bar = (1/N) sum_n rho_{g_n}(x_n)

is computed once in ``bind``, and every example gets the same-shaped target

    q_g = rho_bar,    q_i = (1 - rho_bar)/(K - 1)  for i != g
    L   = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau).

With ``target_temperature="post"`` rho_bar comes from rho^1 and q is tempered, q^(1/tau)
renormalised. It differs from KD-pt only in replacing the per-example rho_g by its mean, so
KD-pt - LS-matched isolates the instance-specific (level c) re-weighting.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdscope.methods.base import BindContext, require_teacher
from kdscope.methods.controlled_targets import (
    SoftTargetMethod,
    gt_mass_target,
    require_bound,
    teacher_probabilities,
)
from kdscope.methods.registry import register_method


def mean_gt_probability(rho: Tensor, labels: Tensor) -> Tensor:
    """Scalar mean over examples of rho_n[g_n] for rho (N, K) and labels (N,)."""
    return rho.gather(-1, labels.long().unsqueeze(-1)).mean()


@register_method("ls_matched")
class LSMatched(SoftTargetMethod):
    """LS-matched: L(q) with q_g = rho_bar, q_i = (1 - rho_bar)/(K - 1), rho_bar the training-set
    mean of the teacher's ground-truth probability (buffer ``rho_bar``, set by ``bind``).
    Parameters: tau, lam, target_temperature (see :class:`SoftTargetMethod`)."""

    roles = frozenset({"label_smoothing_matched", "label_smoothing"})

    def __init__(self, tau: float = 4.0, lam: float = 0.7, target_temperature: str = "pre") -> None:
        super().__init__(tau, lam, target_temperature)
        self.register_buffer("rho_bar", torch.tensor(float("nan")))  # set by bind

    def bind(self, ctx: BindContext) -> None:
        teacher = require_teacher(self.name, ctx.teacher)
        rho = teacher_probabilities(teacher, ctx.train.inputs_at(), self.rho_tau)
        self.rho_bar = mean_gt_probability(rho, ctx.train.labels.to(rho.device))

    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        rho_bar = require_bound(self.name, self.rho_bar).to(rho)
        return gt_mass_target(rho_bar.expand(labels.shape[0]), labels.long(), rho.shape[-1])
