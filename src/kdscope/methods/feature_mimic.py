"""Feature mimicking, the knowledge-point papers' distillation (Cheng et al. 2020; Zhang et al.
2022).

Student and teacher share one architecture; L is the diagnosed layer (default the ``last_conv``
role, the pre-ReLU output of the last conv + BN). Two phases:

1. ``"mimic"``:      L_1 = w * (1/n) sum_k (f_L^S(x)_k - f_L^T(x)_k)^2, the mean over all n
   elements of the batch's layer-L outputs (teacher constant, no normalisation). Only the
   parameters below L receive gradient.
2. ``"classifier"``: every student parameter that f_L^S depends on is frozen (and the modules that
   feed L are put in eval mode, so their BatchNorm statistics stop moving and dropout is off);
   the parameters above L are trained with L_2 = CE(z, y).

Distilling the logits (layer ``"logits"``/``fc3``) leaves nothing above L, so it has only phase 1.
The epoch split gives the mimic phase round(mimic_fraction * epochs) epochs, at least one epoch per
phase when there are two or more epochs. The dependence of f_L on parameters and modules is found by
autograd on one example forward pass in ``bind`` (an eval-mode pass, so no statistics move).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import (
    BindContext,
    Method,
    Phase,
    bind_layers,
    check_weights,
    require_teacher,
)
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs, capture

MIMIC = "mimic"
CLASSIFIER = "classifier"


def upstream_of_layer(model: nn.Module, path: str, x: Tensor) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters and paths of the modules the output at ``path`` depends on.

    One eval-mode forward pass on ``x`` (the model's train/eval mode is restored): a parameter
    counts when autograd reaches it from the layer's output; a module counts when its output (a
    tensor) reaches the layer's output, or when all its own parameters do.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    outputs: dict[str, Tensor] = {}
    hooks = []

    def keep(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            if isinstance(out, Tensor) and out.requires_grad:
                outputs[name] = out

        return hook

    was_training = model.training
    model.eval()
    try:
        for name, module in model.named_modules():
            if name:
                hooks.append(module.register_forward_hook(keep(name)))
        with torch.enable_grad(), capture(model, [path]) as store:
            model(x.detach().clone().requires_grad_(x.is_floating_point()))  # ids: no grad
        feature = store[path]
        if not feature.requires_grad:
            return [], []
        names = list(params) + list(outputs)
        tensors = list(params.values()) + list(outputs.values())
        grads = torch.autograd.grad(feature.sum(), tensors, allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    reached = {n for n, g in zip(names, grads, strict=True) if g is not None}
    frozen = [n for n in params if n in reached]
    modules = []
    for name, module in model.named_modules():
        own = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
        own_trainable = [n for n in own if n in params]
        if name in reached or (own_trainable and all(n in reached for n in own_trainable)):
            modules.append(name)
    return frozen, modules


@register_method("feature_mimic")
class FeatureMimic(Method):
    """Phase ``"mimic"``: weight * MSE(f_L^S, f_L^T) (term ``"mimic"``); phase ``"classifier"``:
    CE with everything below L frozen (term ``"ce"``).

    Parameters: ``layer`` (role or module path, default ``"last_conv"``), ``weight`` (1.0),
    ``mimic_fraction`` (0.6, the share of epochs in the mimic phase). The layer must have the same
    output shape in student and teacher.
    """

    distill_weight = "weight"

    def __init__(
        self, layer: str = "last_conv", weight: float = 1.0, mimic_fraction: float = 0.6
    ) -> None:
        super().__init__()
        if not 0.0 < mimic_fraction <= 1.0:
            raise KdscopeError(
                f"feature_mimic: mimic_fraction must be in (0, 1], got {mimic_fraction}"
            )
        check_weights("feature_mimic", weight=weight)
        self.layer = layer
        self.weight = float(weight)
        self.mimic_fraction = float(mimic_fraction)
        self.phase = MIMIC
        self._student_path = ""
        self._teacher_path = ""
        self._frozen: list[str] = []
        self._frozen_modules: list[str] = []
        self._mimic_only: bool | None = None

    def bind(self, ctx: BindContext) -> None:
        b = bind_layers(ctx, self.name, [self.layer], [self.layer])
        (self._student_path,), (self._teacher_path,) = b.student_paths, b.teacher_paths
        fs, ft = b.student[self._student_path], b.teacher[self._teacher_path]
        x = ctx.example.input
        _check_shapes(self.layer, fs, ft)
        self._frozen, self._frozen_modules = upstream_of_layer(ctx.student, self._student_path, x)
        frozen = set(self._frozen)
        trainable = [n for n, p in ctx.student.named_parameters() if p.requires_grad]
        self._mimic_only = all(n in frozen for n in trainable)

    def student_layers(self) -> list[str]:
        return [self._student_path] if self._student_path else []

    def teacher_layers(self) -> list[str]:
        return [self._teacher_path] if self._teacher_path else []

    def phases(self, epochs: int) -> list[Phase]:
        mimic_only = self._mimic_only
        if mimic_only is None:  # not bound yet: judge by the name
            mimic_only = self.layer == "logits"
        if mimic_only or epochs < 2:
            return [Phase(MIMIC, epochs)]
        mimic = min(max(round(self.mimic_fraction * epochs), 1), epochs - 1)
        return [Phase(MIMIC, mimic), Phase(CLASSIFIER, epochs - mimic)]

    def enter_phase(self, phase: str, student: nn.Module) -> None:
        if phase not in (MIMIC, CLASSIFIER):
            raise KdscopeError(
                f"feature_mimic has phases {MIMIC!r} and {CLASSIFIER!r}, not {phase!r}"
            )
        self.phase = phase
        frozen = set(self._frozen)
        for name, p in student.named_parameters():
            if name in frozen:
                p.requires_grad_(phase == MIMIC)
                if phase == CLASSIFIER:
                    p.grad = None
        if phase == CLASSIFIER:
            modules = dict(student.named_modules())
            for name in self._frozen_modules:
                modules[name].eval()

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.phase == CLASSIFIER:
            return {"ce": F.cross_entropy(student.logits, batch.label)}
        teacher = require_teacher(self.name, teacher)
        fs = student.features[self._student_path]
        ft = teacher.features[self._teacher_path].detach()
        _check_shapes(self.layer, fs, ft)
        return {"mimic": self.weight * F.mse_loss(fs, ft)}

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, weight={self.weight}, mimic_fraction={self.mimic_fraction}"


def _check_shapes(layer: str, fs: Tensor, ft: Tensor) -> None:
    if fs.shape[1:] != ft.shape[1:]:
        raise KdscopeError(
            f"feature_mimic: layer {layer!r} has shape {tuple(fs.shape[1:])} in the student but "
            f"{tuple(ft.shape[1:])} in the teacher; feature mimicking needs identical shapes"
        )
