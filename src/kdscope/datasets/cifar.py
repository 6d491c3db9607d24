"""``cifar``: CIFAR-10 or CIFAR-100 from the python batches you have (nothing is downloaded).

``root`` holds ``cifar-10-batches-py/`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``), as distributed.
Those files are Python pickles: they are read by an unpickler that admits only plain
containers, bytes, text, numbers and numpy arrays, so a file that would run code is refused
instead. Images are 32 × 32 RGB, held as uint8; CIFAR has no object masks (the analyses that need
them skip with a note).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, example_bytes
from kdscope.datasets.registry import register_dataset
from kdscope.errors import KdscopeError

#: what a CIFAR batch may contain: numpy's array reconstruction (numpy 1 and 2), nothing else
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}
_LAYOUTS = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    100: ("cifar-100-python", ["train"], ["test"]),
}


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, scalars and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401  (pickle's contract)
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it asks for {module}.{name}, which a CIFAR batch never holds"
        )


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with text keys; a user error naming the file when it is
    missing, not a CIFAR batch, or asks for anything but plain data."""
    try:
        with path.open("rb") as f:
            raw = _PlainUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise KdscopeError(f"cifar: no file {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise KdscopeError(f"{path}: not a CIFAR python batch ({e})") from None
    if not isinstance(raw, dict):
        raise KdscopeError(f"{path}: not a CIFAR python batch (no mapping inside)")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _footprint(args: Mapping[str, Any]) -> tuple[int, int]:
    """(images, bytes per image) of the whole dataset (before ``max_per_class``)."""
    return 60_000, example_bytes(3 * 32 * 32, 1, 32 * 32)


@register_dataset("cifar", modality="image", footprint=_footprint)
def cifar(root: str, label: str = "fine", max_per_class: int | None = None) -> DataSplits:
    """CIFAR-10 or CIFAR-100 (whichever folder ``root`` holds); ``label``: CIFAR-100's
    ``fine`` (100 classes) or ``coarse`` (20 superclasses) labels; ``max_per_class``: keep the
    first N training images of each class (for quick studies; the test split stays whole)."""
    base = Path(root).expanduser()
    found = [k for k, (folder, _, _) in _LAYOUTS.items() if (base / folder).is_dir()]
    if not found:
        raise KdscopeError(
            f"cifar: {base} holds neither cifar-10-batches-py/ nor cifar-100-python/"
        )
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    kind = found[0]
    folder, train_files, test_files = _LAYOUTS[kind]
    key = "labels" if kind == 10 else f"{label}_labels"
    names = _class_names(base / folder, kind, label)
    train = _split([base / folder / f for f in train_files], key, names)
    test = _split([base / folder / f for f in test_files], key, names)
    if max_per_class is not None:
        if max_per_class < 1:
            raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
        train = train.subset(_first_per_class(train.labels, max_per_class))
    return DataSplits(train, test)


def _class_names(folder: Path, kind: int, label: str) -> list[str]:
    """The class names from the meta file."""
    meta = read_batch(folder / ("batches.meta" if kind == 10 else "meta"))
    names = meta.get("label_names" if kind == 10 else f"{label}_label_names")
    if not isinstance(names, list):
        raise KdscopeError(f"{folder}: its meta file names no classes")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _split(files: list[Path], key: str, names: list[str]) -> TensorDataset:
    """The images and labels of ``files``, in order."""
    images, labels = [], []
    for path in files:
        batch = read_batch(path)
        data, ys = batch.get("data"), batch.get(key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
        ):
            raise KdscopeError(f"{path}: 'data' is not a uint8 array of N × 3072 pixels")
        if (
            not isinstance(ys, list)
            or len(ys) != len(data)
            or not all(0 <= int(y) < len(names) for y in ys)
        ):
            raise KdscopeError(
                f"{path}: '{key}' does not hold one label in 0..{len(names) - 1} per image"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(int(y) for y in ys)
    n = len(labels)
    return TensorDataset(
        inputs=torch.from_numpy(np.concatenate(images)),
        labels=torch.tensor(labels, dtype=torch.int64),
        foreground=torch.ones(n, 32, 32, dtype=torch.bool),
        num_classes=len(names),
        class_names=names,
        annotation="no object masks: the foreground is the whole image",
        has_foreground=False,
    )


def _first_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the first ``count`` examples of every class, in dataset order."""
    keep = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        keep[(labels == c).nonzero().flatten()[:count]] = True
    return keep.nonzero().flatten()
