"""KD-sim: distillation towards class-level similarity targets (Tang et al. 2020).

Every example of class g gets the same target q = T[g], a row of a (K, K) table fixed in
``bind`` (buffer ``targets``), and L = (1 - lam) H(e_g, p) + lam tau^2 H(q, p^tau).

* ``variant="class_mean"`` (default): T[g] = M[g] = mean of rho(x) over the training examples x of
  class g, rho = softmax(v/tau) of the teacher in eval mode on un-augmented inputs (classes absent
  from the training set get the uniform row). With ``target_temperature="post"`` M is built from
  rho^1 and q = M[g]^(1/tau) renormalised.
* ``variant="weight_cosine"`` (paper-like): with w_k the row k of the teacher's last linear layer
  (role ``"logits"``), optionally centred (w_k <- w_k - mean_j w_j),

      C_{gk} = cos(w_g, w_k),    T[g] = softmax(C_g / beta).

  It is not tempered (``target_temperature`` has no effect); the student still uses p^tau.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, require_teacher
from kdscope.methods.controlled_targets import (
    SoftTargetMethod,
    require_bound,
    teacher_probabilities,
)
from kdscope.methods.registry import register_method
from kdscope.models.hooks import get_module, resolve_layer

VARIANTS = ("class_mean", "weight_cosine")


def class_mean_targets(rho: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(K, K) table whose row g is the mean of ``rho`` (N, K) over examples with label g; a class
    without examples gets the uniform row 1/K."""
    labels = labels.long().to(rho.device)
    sums = torch.zeros(num_classes, rho.shape[-1], dtype=rho.dtype, device=rho.device)
    sums.index_add_(0, labels, rho)
    counts = torch.bincount(labels, minlength=num_classes).to(rho.dtype).unsqueeze(-1)
    uniform = torch.full_like(sums, 1.0 / rho.shape[-1])
    return torch.where(counts > 0, sums / counts.clamp_min(1), uniform)


def cosine_matrix(templates: Tensor, centred: bool = False) -> Tensor:
    """(K, K) cosines between the rows of ``templates`` (K, d), centred on their mean if asked."""
    if centred:
        templates = templates - templates.mean(dim=0, keepdim=True)
    unit = F.normalize(templates, dim=-1)
    return unit @ unit.T


def cosine_targets(templates: Tensor, beta: float, centred: bool = False) -> Tensor:
    """(K, K) table softmax(cos(w_g, w_k)_k / beta) for templates w (K, d)."""
    return F.softmax(cosine_matrix(templates, centred) / beta, dim=-1)


def logit_templates(teacher: nn.Module, method: str = "kd_sim") -> Tensor:
    """The weight (K, d) of the teacher's last linear layer (role ``"logits"``)."""
    path = resolve_layer(teacher, "logits")
    layer = get_module(teacher, path)
    if not isinstance(layer, nn.Linear):
        raise KdscopeError(
            f"{method}: the teacher's logit layer {path!r} is a {type(layer).__name__}, not a "
            "Linear layer, so it has no class templates"
        )
    return layer.weight.detach()


@register_method("kd_sim")
class KDSim(SoftTargetMethod):
    """KD-sim: L(q) with a class-level target q = T[g] (buffer ``targets``, set by ``bind``).

    Parameters: ``variant`` "class_mean" (default) or "weight_cosine"; for weight_cosine ``beta``
    > 0 (default 0.1) and ``centred`` (default False); tau, lam, target_temperature (see
    :class:`SoftTargetMethod`).
    """

    def __init__(
        self,
        tau: float = 4.0,
        lam: float = 0.7,
        target_temperature: str = "pre",
        variant: str = "class_mean",
        beta: float = 0.1,
        centred: bool = False,
    ) -> None:
        super().__init__(tau, lam, target_temperature)
        if variant not in VARIANTS:
            raise KdscopeError(f"kd_sim: variant must be one of {VARIANTS}, got {variant!r}")
        if not beta > 0:
            raise KdscopeError(f"kd_sim: beta must be positive, got {beta}")
        self.variant = variant
        self.beta = float(beta)
        self.centred = bool(centred)
        self.register_buffer("targets", torch.empty(0, 0))

    def bind(self, ctx: BindContext) -> None:
        teacher = require_teacher(self.name, ctx.teacher)
        if self.variant == "weight_cosine":
            templates = logit_templates(teacher, self.name)
            if templates.shape[0] != ctx.num_classes:
                raise KdscopeError(
                    f"kd_sim: the teacher's logit layer has {templates.shape[0]} rows but the "
                    f"data have {ctx.num_classes} classes"
                )
            self.targets = cosine_targets(templates.float(), self.beta, self.centred)
        else:
            rho = teacher_probabilities(teacher, ctx.train.inputs_at(), self.rho_tau)
            self.targets = class_mean_targets(rho, ctx.train.labels, ctx.num_classes)

    def tempers_target(self) -> bool:
        return self.variant == "class_mean" and super().tempers_target()

    def build(self, rho: Tensor, labels: Tensor) -> Tensor:
        table = require_bound(self.name, self.targets)
        return table[labels.long().to(table.device)].to(rho)

    def extra_repr(self) -> str:
        extra = (
            f", beta={self.beta}, centred={self.centred}" if self.variant != "class_mean" else ""
        )
        return f"{super().extra_repr()}, variant={self.variant!r}{extra}"
