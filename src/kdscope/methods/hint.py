"""FitNets hints with a learned regressor (Romero et al. 2015, RepDistiller form).

With student feature f_s and teacher feature f_t at the hint layers (the ``middle`` role by
default, taken as the models return them, i.e. post-activation), a trainable regressor r maps the
student's feature to the teacher's shape and

    L = gamma * CE(z, y) + beta * (1/n) sum_k (r(f_s)_k - f_t_k)^2

the MSE being a mean over all n elements of the batch (teacher constant). The regressor is
trained with the student (single-stage training, as in RepDistiller). For (C, H, W) maps:

* H_s = 2 H_t:  Conv2d(C_s, C_t, 3, stride 2, padding 1);
* 2 H_s = H_t:  ConvTranspose2d(C_s, C_t, 4, stride 2, padding 1);
* otherwise:    Conv2d(C_s, C_t, kernel (1 + H_s - H_t, 1 + W_s - W_t)) (1x1 for equal sizes;
  needs H_s >= H_t and W_s >= W_t);

then BatchNorm2d(C_t) and ReLU. For vector features (D,): Linear(D_s, D_t), BatchNorm1d(D_t), ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, Method, bind_layers, check_weights, require_teacher
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


def build_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """The FitNets/RepDistiller regressor from a per-example student shape to the teacher's.

    Shapes exclude the batch dimension: (C, H, W) for maps, (D,) for vectors. Raises
    :class:`KdscopeError` when no rule maps one to the other.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) == 1 and len(t) == 1:
        return nn.Sequential(nn.Linear(s[0], t[0]), nn.BatchNorm1d(t[0]), nn.ReLU())
    if len(s) == 3 and len(t) == 3:
        (cs, hs, ws), (ct, ht, wt) = s, t
        if hs == 2 * ht and ws == 2 * wt:
            conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
        elif 2 * hs == ht and 2 * ws == wt:
            conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
        elif hs >= ht and ws >= wt:
            conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
        else:
            raise KdscopeError(
                f"hint: no regressor maps the student feature {s} to the teacher feature {t} "
                "(the student map must be at least as large as the teacher's, or half its size)"
            )
        return nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU())
    raise KdscopeError(
        f"hint: the student feature {s} and teacher feature {t} must both be vectors (D,) or "
        "both maps (C, H, W)"
    )


@register_method("hint")
class Hint(Method):
    """gamma * CE (term ``"ce"``) + beta * MSE(r(f_s), f_t) (term ``"hint"``).

    Parameters: ``layer`` (role or module path for both models, default ``"middle"``),
    ``student_layer`` / ``teacher_layer`` (overrides, default ``layer``), ``gamma`` (1.0),
    ``beta`` (2.0).
    """

    distill_weight = "beta"

    def __init__(
        self,
        layer: str = "middle",
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        gamma: float = 1.0,
        beta: float = 2.0,
    ) -> None:
        super().__init__()
        check_weights("hint", gamma=gamma, beta=beta)
        self.layer = layer
        self.student_layer = student_layer or layer
        self.teacher_layer = teacher_layer or layer
        self.gamma = float(gamma)
        self.beta = float(beta)
        self._student_path = ""
        self._teacher_path = ""
        self.regressor: nn.Module | None = None

    def bind(self, ctx: BindContext) -> None:
        b = bind_layers(ctx, self.name, [self.student_layer], [self.teacher_layer])
        (self._student_path,), (self._teacher_path,) = b.student_paths, b.teacher_paths
        fs, ft = b.student[self._student_path], b.teacher[self._teacher_path]
        regressor = build_regressor(tuple(fs.shape[1:]), tuple(ft.shape[1:]))
        with torch.no_grad():
            out = regressor.eval()(fs.float().cpu())
        regressor.train()
        if out.shape[1:] != ft.shape[1:]:
            raise KdscopeError(
                f"hint: the regressor maps the student's {self.student_layer!r} feature "
                f"{tuple(fs.shape[1:])} to {tuple(out.shape[1:])}, not to the teacher's "
                f"{self.teacher_layer!r} shape {tuple(ft.shape[1:])}"
            )
        device = next(ctx.student.parameters()).device
        self.regressor = regressor.to(device)

    def student_layers(self) -> list[str]:
        return [self._student_path] if self._student_path else []

    def teacher_layers(self) -> list[str]:
        return [self._teacher_path] if self._teacher_path else []

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        if self.regressor is None:
            raise RuntimeError("hint: bind() must be called before forward()")
        fs = student.features[self._student_path]
        ft = teacher.features[self._teacher_path].detach()
        return {
            "ce": self.gamma * F.cross_entropy(student.logits, batch.label),
            "hint": self.beta * F.mse_loss(self.regressor(fs), ft),
        }

    def extra_repr(self) -> str:
        return (
            f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}, "
            f"gamma={self.gamma}, beta={self.beta}"
        )
