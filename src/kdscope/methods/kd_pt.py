"""KD-pt: distillation towards the teacher's ground-truth probability only (Tang et al. 2020).

With rho = rho^tau = softmax(v/tau) (or rho^1, tempered afterwards, for
``target_temperature="post"``), K classes and label g:

    q_g = rho_g,    q_i = (1 - rho_g)/(K - 1)  for i != g
    L   = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau)

It keeps KD's per-example ground-truth mass (level c) and the universe level (a) but drops the
class relations (the tail is uniform). Its gradient rescaling factor w_g equals KD's.
"""

from __future__ import annotations

from torch import Tensor

from kdscope.methods.controlled_targets import SoftTargetMethod, gt_mass_target
from kdscope.methods.registry import register_method


def pt_targets(rho: Tensor, labels: Tensor) -> Tensor:
    """q (B, K) with q_g = rho_g and the rest of the mass spread uniformly over the K - 1 others."""
    labels = labels.long()
    gt = rho.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return gt_mass_target(gt, labels, rho.shape[-1])


@register_method("kd_pt")
class KDPt(SoftTargetMethod):
    """KD-pt: L(q) with q_g = rho_g, q_i = (1 - rho_g)/(K - 1). Parameters: tau, lam,
    target_temperature (see :class:`SoftTargetMethod`)."""

    roles = frozenset({"true_class_target"})

    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        return pt_targets(rho, labels)
