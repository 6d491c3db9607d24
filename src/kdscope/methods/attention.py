"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), in the RepDistiller form.

For a feature map F (B, C, H, W) the spatial attention map is the channel mean of F^p,
flattened and L2-normalised per example:

    a(F)_b = v_b / ||v_b||_2,   v_b = vec( (1/C) sum_c F_{b,c}^p )      (p = 2 by default)

For each pair (student layer l, teacher layer l) with maps of equal spatial size,

    AT_l = (1/(B H W)) sum_b ||a(F^S_l)_b - a(F^T_l)_b||_2^2      (the mean of the squared diffs)

and the loss is gamma * CE(z, y) + beta * sum_l AT_l. Channel counts may differ. When the spatial
sizes differ, the larger map is adaptive-average-pooled to the smaller size (per dimension) before
the attention map is formed, as RepDistiller does. Teacher features are constants. Features of
shape (B, C, L) (sequences) are handled the same way with 1-D pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, Method, bind_layers, check_weights, require_teacher
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """(B, prod(spatial)) L2-normalised channel mean of f^p (f is (B, C, *spatial))."""
    return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)


def match_spatial(fs: Tensor, ft: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool whichever map is larger, per spatial dimension, to the smaller size."""
    size = tuple(min(a, b) for a, b in zip(fs.shape[2:], ft.shape[2:], strict=True))
    pool = F.adaptive_avg_pool1d if fs.dim() == 3 else F.adaptive_avg_pool2d
    if tuple(fs.shape[2:]) != size:
        fs = pool(fs, size)
    if tuple(ft.shape[2:]) != size:
        ft = pool(ft, size)
    return fs, ft


def at_loss(fs: Tensor, ft: Tensor, p: float = 2.0) -> Tensor:
    """Mean over batch and positions of (a(f_s) - a(f_t))^2, after matching spatial sizes."""
    fs, ft = match_spatial(fs, ft)
    return (attention_map(fs, p) - attention_map(ft, p)).pow(2).mean()


@register_method("attention")
class Attention(Method):
    """gamma * CE (term ``"ce"``) + beta * sum_l AT_l (term ``"at"``).

    Parameters: ``layers`` (roles or module paths, default ("middle", "last_conv"), resolved on each
    model), ``teacher_layer_names`` (the teacher's layers paired by position, default ``layers``),
    ``gamma`` (1.0), ``beta`` (1000.0), ``p`` (2.0).
    """

    distill_weight = "beta"

    def __init__(
        self,
        layers: str | Sequence[str] = ("middle", "last_conv"),
        teacher_layer_names: str | Sequence[str] | None = None,
        gamma: float = 1.0,
        beta: float = 1000.0,
        p: float = 2.0,
    ) -> None:
        super().__init__()
        layers = [layers] if isinstance(layers, str) else list(layers)
        if teacher_layer_names is None:
            t_layers = list(layers)
        elif isinstance(teacher_layer_names, str):
            t_layers = [teacher_layer_names]
        else:
            t_layers = list(teacher_layer_names)
        if not layers or len(layers) != len(t_layers):
            raise KdscopeError(
                f"attention: needs one or more layers and as many teacher layers "
                f"(got {len(layers)} student and {len(t_layers)} teacher layers)"
            )
        check_weights("attention", gamma=gamma, beta=beta)
        if not p > 0:
            raise KdscopeError(f"attention: p must be positive, got {p}")
        self.layers = layers
        self.teacher_layer_names = t_layers
        self.gamma = float(gamma)
        self.beta = float(beta)
        self.p = float(p)
        self._student_paths: list[str] = []
        self._teacher_paths: list[str] = []

    def bind(self, ctx: BindContext) -> None:
        b = bind_layers(ctx, self.name, self.layers, self.teacher_layer_names)
        s_paths, t_paths, fs, ft = b.student_paths, b.teacher_paths, b.student, b.teacher
        for ls, lt, ps, pt in zip(
            self.layers, self.teacher_layer_names, s_paths, t_paths, strict=True
        ):
            a, b = tuple(fs[ps].shape[1:]), tuple(ft[pt].shape[1:])
            if len(a) not in (2, 3) or len(a) != len(b):
                raise KdscopeError(
                    f"attention: layer {ls!r} of the student has shape {a} and layer {lt!r} of the "
                    f"teacher has shape {b}; attention transfer needs feature maps (C, H, W) or "
                    "(C, L) of the same rank in both"
                )
        self._student_paths, self._teacher_paths = s_paths, t_paths

    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(self._student_paths))

    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(self._teacher_paths))

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        if not self._student_paths:
            raise RuntimeError("attention: bind() must be called before forward()")
        at = sum(
            at_loss(student.features[ps], teacher.features[pt].detach(), self.p)
            for ps, pt in zip(self._student_paths, self._teacher_paths, strict=True)
        )
        return {
            "ce": self.gamma * F.cross_entropy(student.logits, batch.label),
            "at": self.beta * at,
        }

    def extra_repr(self) -> str:
        return (
            f"layers={self.layers}, teacher_layer_names={self.teacher_layer_names}, "
            f"gamma={self.gamma}, beta={self.beta}, p={self.p}"
        )
