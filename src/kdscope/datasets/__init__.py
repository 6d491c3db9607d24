"""Datasets: a registry of generators/loaders returning :class:`DataSplits` of samples.

Each built-in lives in its own file and registers itself with ``@register_dataset``
(:mod:`kdscope.datasets.registry`, which also holds the traits a dataset declares and the memory
check); this package imports them all.
"""

from kdscope.datasets import (  # noqa: F401  (register the built-ins)
    cifar,
    cub200,
    hierarchy,
    image_folder,
    modelnet,
    npz,
    points,
    qa,
    sentiment,
    shapes,
    voc,
)
from kdscope.datasets.base import Batch, DataSplits, Sample, TensorDataset
from kdscope.datasets.registry import (
    DATASETS,
    DatasetTraits,
    available_memory,
    build,
    check_memory,
    register_dataset,
    traits,
)

__all__ = [
    "DATASETS",
    "Batch",
    "DataSplits",
    "DatasetTraits",
    "Sample",
    "TensorDataset",
    "available_memory",
    "build",
    "check_memory",
    "register_dataset",
    "traits",
]
