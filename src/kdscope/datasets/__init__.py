"""Datasets: a registry of generators/loaders returning :class:`DataSplits` of samples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdscope.datasets.base import Batch, DataSplits, Sample, TensorDataset
from kdscope.errors import KdscopeError
from kdscope.registry import Registry

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")
register_dataset = DATASETS.register


def build(name: str, **params: Any) -> DataSplits:
    """Build the registered dataset ``name``; bad parameters are a user error naming them."""
    ctor = DATASETS.get(name)
    try:
        return ctor(**params)
    except (TypeError, ValueError) as e:
        raise KdscopeError(f"dataset {name!r}: {e}") from None


from kdscope.datasets import hierarchy, modelnet, points, qa, sentiment, shapes  # noqa: E402,F401  (register the built-ins)

__all__ = [
    "DATASETS",
    "Batch",
    "DataSplits",
    "Sample",
    "TensorDataset",
    "build",
    "register_dataset",
]
