"""The sample contract every kdscope dataset follows, and an in-memory tensor dataset.

Every dataset yields samples of one shape: ``input`` (a float tensor in [0, 1] for images),
``label`` (an int), ``foreground`` (a bool tensor with the input's spatial shape: True where the
evidence for the label lies) and ``tags`` (named per-example numbers: domain, group, difficulty,
...). A dataset may also carry per-class information (``class_info``: a superclass map, class
centres) that analyses such as the class-geometry one compare against. Datasets are held in
memory as stacked tensors so that batching is slicing, which on a CPU is far faster than a
per-sample ``DataLoader``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class Sample:
    """One example: model input, class label, foreground annotation and optional tags."""

    input: Tensor
    label: int
    foreground: Tensor
    tags: dict[str, float] = field(default_factory=dict)


@dataclass
class Batch:
    """A mini-batch: stacked inputs, labels, foreground masks, dataset indices and tags."""

    input: Tensor
    label: Tensor
    foreground: Tensor
    index: Tensor
    tags: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device) -> Batch:
        """The batch with every tensor on ``device`` (itself when they are there)."""
        if self.label.device == device:
            return self
        return Batch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.input, self.label, self.foreground, self.index)
            ),
            {k: v.to(device, non_blocking=True) for k, v in self.tags.items()},
        )


@dataclass
class TensorDataset:
    """A dataset held as stacked tensors.

    ``inputs`` is (N, ...) float, or uint8 for images read from files (0..255, scaled to [0, 1]
    per batch, so that large image sets fit in memory: read them with :meth:`inputs_at`, or
    through :meth:`batch`), ``labels`` (N,) int64, ``foreground`` (N, *spatial) bool and
    each tag (N,) int64 or float. ``tag_labels`` names the values of an integer tag for reports
    (tag -> value -> name, e.g. ``{"domain": {0: "plain", 1: "coloured"}}``); a tag or value it
    leaves out is shown by its number. ``modality`` tells analyses how to perturb the input ("image",
    "vector", "points", "text"). ``class_info`` holds per-class tensors with ``num_classes`` rows
    (e.g. ``"superclass"``: (K,) int64, ``"centre"``: (K, d) float). Text datasets hold token ids
    (N, L) int64 and their ``vocab`` (id → token; see :mod:`kdscope.datasets.text`).
    ``has_foreground`` is False when the dataset has no object annotation (images read without
    masks: ``foreground`` is then all True and the analyses that need the object skip).
    ``annotation`` says in one sentence where the foreground flags come from (the report
    prints it: e.g. a lexicon's words for sentence-level sentiment files). ``task`` is
    ``"classification"`` (labels name classes) or ``"span"`` (extractive QA: labels are answer
    spans, :func:`kdscope.datasets.text.span_class`, and the tag ``context_start`` marks where
    each row's context begins).
    """

    inputs: Tensor
    labels: Tensor
    foreground: Tensor
    num_classes: int
    modality: str = "image"
    tags: dict[str, Tensor] = field(default_factory=dict)
    tag_labels: dict[str, dict[int, str]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    class_info: dict[str, Tensor] = field(default_factory=dict)
    vocab: tuple[str, ...] = ()
    annotation: str = ""
    task: Literal["classification", "span"] = "classification"
    has_foreground: bool = True

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        for name, t in [
            ("inputs", self.inputs),
            ("foreground", self.foreground),
            *self.tags.items(),
        ]:
            if t.shape[0] != n:
                raise ValueError(f"dataset field {name!r} has {t.shape[0]} rows, labels have {n}")
        for name in self.tag_labels:
            if name not in self.tags:
                raise ValueError(f"tag_labels names the values of {name!r}, which is not a tag")
        for name, t in self.class_info.items():
            if t.shape[0] != self.num_classes:
                raise ValueError(
                    f"class information {name!r} has {t.shape[0]} rows for {self.num_classes} classes"
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int | None:
        """The channel count of image inputs (N, C, H, W); None for other inputs."""
        return (
            int(self.inputs.shape[1])
            if self.modality == "image" and self.inputs.dim() == 4
            else None
        )

    def inputs_at(self, index: Tensor | slice | None = None) -> Tensor:
        """The inputs at ``index`` (all of them by default) as a model reads them: uint8 images
        scaled to float32 in [0, 1] (x / 255), any other inputs unchanged."""
        rows = self.inputs if index is None else self.inputs[index]
        return rows.float().div_(255) if rows.dtype == torch.uint8 else rows

    def tag_label(self, tag: str, value: int) -> str:
        """The name of ``value`` of ``tag`` (from ``tag_labels``), else ``"{tag} {value}"``."""
        return self.tag_labels.get(tag, {}).get(int(value), f"{tag} {value}")

    def __getitem__(self, i: int) -> Sample:
        return Sample(
            input=self.inputs_at(slice(i, i + 1))[0],
            label=int(self.labels[i]),
            foreground=self.foreground[i],
            tags={k: v[i].item() for k, v in self.tags.items()},
        )

    def batch(self, index: Tensor) -> Batch:
        """The examples at ``index`` (a 1-D int64 tensor) as a :class:`Batch`."""
        return Batch(
            input=self.inputs_at(index),
            label=self.labels[index],
            foreground=self.foreground[index],
            index=index,
            tags={k: v[index] for k, v in self.tags.items()},
        )

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
    ) -> Iterator[Batch]:
        """Iterate over mini-batches; shuffled when a ``generator`` is given, in order otherwise."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size])

    def subset(self, index: Tensor) -> TensorDataset:
        """A new dataset holding the examples at ``index``."""
        return TensorDataset(
            inputs=self.inputs[index],
            labels=self.labels[index],
            foreground=self.foreground[index],
            num_classes=self.num_classes,
            modality=self.modality,
            tags={k: v[index] for k, v in self.tags.items()},
            tag_labels={k: dict(v) for k, v in self.tag_labels.items()},
            class_names=list(self.class_names),
            class_info=dict(self.class_info),
            vocab=self.vocab,
            annotation=self.annotation,
            task=self.task,
            has_foreground=self.has_foreground,
        )


@dataclass
class DataSplits:
    """Train and test splits of one dataset."""

    train: TensorDataset
    test: TensorDataset

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def example_bytes(inputs: int, itemsize: int, foreground: int) -> int:
    """Bytes one example's tensors take at least: ``inputs`` input elements of ``itemsize`` bytes,
    ``foreground`` bool flags and an int64 label (for a dataset's footprint)."""
    return inputs * itemsize + foreground + 8


N = TypeVar("N", int, float)


def _check_bounds(name: str, value: N, low: N, high: N | None) -> N:
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; else a ValueError naming the parameter (the dataset
    registry's ``build`` adds the dataset's name)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return _check_bounds(name, int(value), low, high)


def check_float(name: str, value: Any, low: float, high: float | None = None) -> float:
    """``value`` as a finite float in [low, high]; else a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return _check_bounds(name, float(value), low, high)
