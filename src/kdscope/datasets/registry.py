"""The registry of datasets: generators/loaders returning :class:`DataSplits` of samples.

Each dataset also declares its :class:`DatasetTraits` (the kind of input it holds and the memory
its tensors need), so that a study can be checked against it before the dataset is built.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kdscope.datasets.base import DataSplits
from kdscope.errors import KdscopeError
from kdscope.registry import Registry

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")

#: the constructor's arguments (defaults applied) -> (examples, bytes per example) of the tensors
Footprint = Callable[[Mapping[str, Any]], tuple[int, int]]
F = TypeVar("F", bound=Callable[..., DataSplits])


@dataclass(frozen=True)
class DatasetTraits:
    """What is known of a registered dataset before it is built: ``modality`` of its inputs
    ("image", "points", "vector" or "text"; None: not declared) and its ``footprint`` (None:
    unknown, e.g. for a dataset read from files)."""

    modality: str | None = None
    footprint: Footprint | None = None


_TRAITS: dict[str, DatasetTraits] = {}


def traits(name: str) -> DatasetTraits:
    """The traits of dataset ``name`` (none declared for a dataset registered without them)."""
    return _TRAITS.get(name, DatasetTraits())


def register_dataset(
    name: str, *, modality: str | None = None, footprint: Footprint | None = None
) -> Callable[[F], F]:
    """Decorator registering a dataset constructor under ``name``, with its traits."""

    def add(fn: F) -> F:
        DATASETS.register(name)(fn)
        _TRAITS[name] = DatasetTraits(modality, footprint)
        return fn

    return add


def available_memory() -> int | None:
    """Bytes of memory available now: ``MemAvailable`` of /proc/meminfo, else the physical
    memory (``os.sysconf``); None when neither is known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _size(n: float) -> str:
    """``n`` bytes in binary units: ``'1.5 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def check_memory(name: str, params: Mapping[str, Any]) -> None:
    """A user error when the tensors of dataset ``name`` built with ``params`` (estimated from
    its footprint, a lower bound) would not fit in the memory available now. Datasets without a
    footprint, and parameters the estimate cannot use (the constructor reports those), pass."""
    footprint = traits(name).footprint
    have = available_memory()
    if footprint is None or have is None:
        return
    try:
        args = inspect.signature(DATASETS.get(name)).bind(**params)
        args.apply_defaults()
        examples, per_example = footprint(args.arguments)
    except TypeError:
        return
    need = examples * per_example
    if need > have:
        raise KdscopeError(
            f"dataset {name!r}: {examples:,} examples of {_size(per_example)} each need at "
            f"least {_size(need)} of memory, more than the {_size(have)} available"
        )


def build(name: str, **params: Any) -> DataSplits:
    """Build the registered dataset ``name``; bad parameters, or too little memory for them, are
    a user error naming them."""
    ctor = DATASETS.get(name)
    check_memory(name, params)
    try:
        return ctor(**params)
    except (TypeError, ValueError) as e:
        raise KdscopeError(f"dataset {name!r}: {e}") from None
