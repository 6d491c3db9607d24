"""KD-topk: distillation towards the teacher's k largest probabilities (Tang et al. 2020).

With rho = rho^tau = softmax(v/tau) (or rho^1, tempered afterwards, for
``target_temperature="post"``), k = ceil(kappa K) clipped to [1, K], and T the k classes of
largest rho (ties broken toward the lower class index):

* ``tail="uniform"``:     q_i = rho_i for i in T, else (1 - sum_{j in T} rho_j)/(K - k);
* ``tail="zero_renorm"``: q_i = rho_i / sum_{j in T} rho_j for i in T, else 0.

L = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau). The ground truth is not forced into T. With
k = K, KD-topk = KD; with k = 1 and g = argmax rho (uniform tail), KD-top1 = KD-pt.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdscope.errors import KdscopeError
from kdscope.methods.controlled_targets import SoftTargetMethod
from kdscope.methods.registry import register_method

TAILS = ("uniform", "zero_renorm")


def top_k_count(kappa: float, num_classes: int) -> int:
    """k = ceil(kappa K) clipped to [1, K] (kappa K rounded to 9 digits first: ceil(0.1 * 30) = 3)."""
    return min(max(math.ceil(round(kappa * num_classes, 9)), 1), num_classes)


def top_k_mask(rho: Tensor, k: int) -> Tensor:
    """Bool (B, K) marking each row's k largest entries; ties go to the lower class index."""
    order = torch.sort(-rho, dim=-1, stable=True).indices[..., :k]
    return torch.zeros_like(rho, dtype=torch.bool).scatter(-1, order, True)


def topk_targets(rho: Tensor, k: int, tail: str = "uniform") -> Tensor:
    """The KD-topk target (B, K) from rho (B, K): rho kept on the top k, the tail rule elsewhere."""
    if tail not in TAILS:
        raise KdscopeError(f"kd_topk: tail must be one of {TAILS}, got {tail!r}")
    num_classes = rho.shape[-1]
    mask = top_k_mask(rho, k)
    kept = torch.where(mask, rho, torch.zeros_like(rho))
    top_mass = kept.sum(dim=-1, keepdim=True)
    if tail == "zero_renorm":
        return kept / top_mass
    if k == num_classes:
        return rho.clone()
    rest = ((1 - top_mass) / (num_classes - k)).clamp_min(0)
    return torch.where(mask, rho, rest.expand_as(rho))


@register_method("kd_topk")
class KDTopK(SoftTargetMethod):
    """KD-topk: L(q) with the teacher's top k = ceil(kappa K) probabilities kept.

    Parameters: ``kappa`` in (0, 1] (default 0.25), ``tail`` "uniform" (default) or
    "zero_renorm", and tau, lam, target_temperature (see :class:`SoftTargetMethod`).
    """

    roles = frozenset({"topk_target"})

    def __init__(
        self,
        tau: float = 4.0,
        lam: float = 0.7,
        target_temperature: str = "pre",
        kappa: float = 0.25,
        tail: str = "uniform",
    ) -> None:
        super().__init__(tau, lam, target_temperature)
        if not 0.0 < kappa <= 1.0:
            raise KdscopeError(f"kd_topk: kappa must be in (0, 1], got {kappa}")
        if tail not in TAILS:
            raise KdscopeError(f"kd_topk: tail must be one of {TAILS}, got {tail!r}")
        self.kappa = float(kappa)
        self.tail = tail

    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        return topk_targets(rho, top_k_count(self.kappa, rho.shape[-1]), self.tail)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kappa={self.kappa}, tail={self.tail!r}"
