"""The distillation-method contract.

A method is an ``nn.Module`` computing named loss terms from the student's and teacher's outputs
on a batch: ``forward(student, teacher, batch) -> {"ce": ..., "kd": ...}``. The terms are already
weighted; the trainer minimises their sum and logs each of them. Methods that need intermediate
features name the layers (by role or module path) and receive their outputs in
``Outputs.features``, captured by hooks; trainable parts (a regressor, embedding heads) and state
(a memory bank) are submodules/buffers of the method, so they are optimised and checkpointed with
the student.

Life cycle, driven by the trainer:

1. ``bind(ctx)`` once, before training: resolve layer names against the models, build trainable
   parts from the feature shapes, precompute anything that needs the training set.
2. ``phases(epochs)`` splits the epoch budget into named phases (one ``"train"`` phase by default);
   ``enter_phase(name, student)`` is called at the start of every epoch after ``student.train()``
   (so it must be idempotent), e.g. to freeze layers.
3. ``forward`` every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from kdscope import device
from kdscope.datasets.base import Batch, TensorDataset
from kdscope.errors import KdscopeError
from kdscope.models.hooks import Outputs, forward_with_features, resolve_layer

T = TypeVar("T")


ANALYSIS_ROLES: dict[str, str] = {
    "logit_kd": "Hinton's KD, the soft target softmax(v/tau) of the teacher's full logits: the "
    "method the papers' claims are about (teacher_check: the distillation settings and the "
    "noisy-tail reference; rescaling: the counterfactual target; three_levels: KD)",
    "label_smoothing": "label smoothing, the universe-knowledge control without a teacher's "
    "class relations (difficulty: the reference group; three_levels: LS, after "
    "label_smoothing_matched)",
    "label_smoothing_matched": "label smoothing whose label mass matches the teacher's mean "
    "confidence (LS-matched), preferred to plain label smoothing where both are present "
    "(difficulty, three_levels)",
    "true_class_target": "the teacher's probability of the true class only, a uniform tail "
    "(three_levels: KD-pt)",
    "topk_target": "the teacher's top-k probabilities only (teacher_check: the noisy-tail check; "
    "three_levels: KD-topk)",
}
"""The vocabulary of :attr:`Method.roles`: what an analysis may look for in a study's students,
with the analyses that look for it (via :func:`kdscope.analyses.study_views.students_with_role`).
Where several students play a role the analyses take the first in study order."""


@dataclass
class BindContext:
    """What a method may look at before training starts."""

    student: nn.Module
    teacher: nn.Module | None
    train: TensorDataset
    example: Batch

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int


class Method(nn.Module):
    """Base class of distillation losses; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    #: the constructor argument that scales the distillation term (``alpha``, ``beta``, ...), for
    #: weight searches and weight-lowering controls; None when no single argument does
    distill_weight: ClassVar[str | None] = None
    #: what the method is in a study: ``"distillation"`` (learns from the teacher), ``"baseline"``
    #: (labels only) or ``"control"`` (a no-teacher control that mimics the form of a teacher's
    #: signal, e.g. the soft-label control of the property-transfer analyses)
    role: ClassVar[str] = "distillation"
    #: the parts the method can play in the analyses, each a key of :data:`ANALYSIS_ROLES`;
    #: analyses pick students by these (never by method name), so a user's method declaring a
    #: role is picked up exactly like the built-in one. Inherited by subclasses.
    roles: ClassVar[frozenset[str]] = frozenset()

    def bind(self, ctx: BindContext) -> None:  # noqa: B027  (optional hook)
        """Resolve layers and build trainable parts; the default needs nothing."""

    def student_layers(self) -> list[str]:
        """Module paths of the student whose outputs ``forward`` reads (after ``bind``)."""
        return []

    def teacher_layers(self) -> list[str]:
        """Module paths of the teacher whose outputs ``forward`` reads (after ``bind``)."""
        return []

    def phases(self, epochs: int) -> list[Phase]:
        return [Phase("train", epochs)]

    def enter_phase(self, phase: str, student: nn.Module) -> None:  # noqa: B027
        """Called at the start of every epoch of ``phase``; the default does nothing."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError


@torch.no_grad()
def probe(model: nn.Module, x: Tensor, paths: list[str]) -> Outputs:
    """Eval-mode forward pass on ``x`` (moved to the model's device; the outputs stay there)
    capturing ``paths``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        return forward_with_features(model, x.to(device.model_device(model)), paths)
    finally:
        model.train(was_training)


def check_weights(method: str, **weights: float) -> None:
    """A user error naming the first loss weight in ``weights`` that is negative (or NaN): a
    negative weight maximises its term, and training diverges."""
    for key, value in weights.items():
        if not value >= 0:
            raise KdscopeError(f"{method}: {key} must be >= 0, got {value}")


def require_teacher(method: str, teacher: T | None) -> T:
    """``teacher`` (a model or its outputs), or a user error saying the method needs one."""
    if teacher is None:
        raise KdscopeError(f"method {method!r} needs a teacher, but none was given")
    return teacher


@dataclass(frozen=True)
class BoundLayers:
    """Resolved module paths of paired student/teacher layers and their outputs on the example."""

    student_paths: list[str]
    teacher_paths: list[str]
    student: dict[str, Tensor]
    teacher: dict[str, Tensor]


def bind_layers(
    ctx: BindContext, method: str, student_layers: Sequence[str], teacher_layers: Sequence[str]
) -> BoundLayers:
    """Resolve layers (roles or paths) on the student and the teacher and probe their outputs on
    ``ctx.example`` in eval mode: what a feature-based method needs to size its parts."""
    teacher = require_teacher(method, ctx.teacher)
    s_paths = [resolve_layer(ctx.student, layer) for layer in student_layers]
    t_paths = [resolve_layer(teacher, layer) for layer in teacher_layers]
    x = ctx.example.input
    return BoundLayers(
        s_paths,
        t_paths,
        probe(ctx.student, x, s_paths).features,
        probe(teacher, x, t_paths).features,
    )
