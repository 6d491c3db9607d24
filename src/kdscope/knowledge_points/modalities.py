"""The unit map of each input modality, registered by modality.

A knowledge-point analysis needs, for the inputs of a modality, the units that share one σ
(:class:`~kdscope.knowledge_points.units.UnitMap`) and, for the report's assumptions table, a
description of that choice. Adding a modality is registering one builder with its
description::

    @register_unit_map("audio", unit="one frame, σ shared over its samples", excluded="none",
                       scale="the sample std of the diagnosed inputs", source="my choice")
    def audio_units(model: nn.Module, inputs: Tensor, grid: int | None) -> UnitMap: ...

:func:`kdscope.knowledge_points.diagnosis.input_units` and the knowledge-points analysis then
use it for every dataset of that modality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from kdscope.datasets.text import EXCLUDED_IDS
from kdscope.knowledge_points.estimator import perturbed_tensor
from kdscope.knowledge_points.units import UnitMap, image_grid, point_units, token_units
from kdscope.registry import Registry

UnitBuilder = Callable[[nn.Module, Tensor, "int | None"], UnitMap]


@dataclass(frozen=True)
class ModalityUnits:
    """A modality's unit-map builder ``build(model, inputs, grid)`` (``grid``: the image grid
    option, which other modalities may ignore) and the assumptions-table description of its
    choice: the ``unit`` (may hold ``{grid}``, filled with the grid's side), the ``excluded``
    units, the noise ``scale`` and the ``source`` of the choice."""

    build: UnitBuilder
    unit: str
    excluded: str
    scale: str
    source: str


UNIT_MAPS: Registry[ModalityUnits] = Registry("unit map")
"""The unit maps by modality (the ``modality`` of :class:`kdscope.datasets.TensorDataset`)."""

KDSCOPE_CHOICE = "kdscope's choice (docs/knowledge_points.md)"


def register_unit_map(
    modality: str, *, unit: str, excluded: str, scale: str, source: str
) -> Callable[[UnitBuilder], UnitBuilder]:
    """Decorator registering ``build(model, inputs, grid) -> UnitMap`` as the unit map of
    ``modality``, described by ``unit``, ``excluded``, ``scale`` and ``source`` (see
    :class:`ModalityUnits`); a modality may be registered only once."""

    def add(build: UnitBuilder) -> UnitBuilder:
        UNIT_MAPS.register(modality)(ModalityUnits(build, unit, excluded, scale, source))
        return build

    return add


@register_unit_map(
    "image",
    unit="a cell of the {grid} grid, σ shared over its pixels and channels",
    excluded="none",
    scale="1 after the model's normaliser; else the pixel std of the diagnosed inputs",
    source="the papers",
)
def image_units(model: nn.Module, inputs: Tensor, grid: int | None = None) -> UnitMap:
    """The grid unit map of an image model's perturbed tensor (default: 2×2-pixel cells)."""
    shape = tuple(perturbed_tensor(model, inputs[:1]).shape[1:])
    return image_grid(shape, grid or shape[-1] // 2)


@register_unit_map(
    "points",
    unit="one point, σ shared over x, y, z",
    excluded="padding points (none in fixed-size clouds)",
    scale="the coordinate std of the diagnosed inputs (not of the training set)",
    source=KDSCOPE_CHOICE,
)
def cloud_units(model: nn.Module, inputs: Tensor, grid: int | None = None) -> UnitMap:
    """One unit per point of (N, P, 3) clouds (σ shared over x, y, z)."""
    return point_units(inputs.shape[1])


@register_unit_map(
    "text",
    unit="one token, σ shared over its embedding dimensions; noise added to the output of the "
    "model's embedding",
    excluded="padding and <sep>",
    scale="the RMS of the diagnosed inputs' real-token embeddings at each checkpoint (not the "
    "whole embedding table: rows of words absent from the inputs never enter it)",
    source=KDSCOPE_CHOICE,
)
def text_units(model: nn.Module, inputs: Tensor, grid: int | None = None) -> UnitMap:
    """One unit per token of (N, L) ids, σ shared over the embedding dimensions of the model's
    ``embed`` output; padding and ``<sep>`` excluded."""
    dim = perturbed_tensor(model, inputs[:1]).shape[-1]
    return token_units(inputs, dim, EXCLUDED_IDS)


__all__ = ["UNIT_MAPS", "ModalityUnits", "image_units", "register_unit_map"]
