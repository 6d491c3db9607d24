"""``npz``: a dataset from one NumPy ``.npz`` file (read without unpickling).

Arrays: ``x`` (inputs), ``y`` (integer labels 0..K−1) and optionally ``foreground`` (object
masks); a test split as ``x_test``, ``y_test`` (``foreground_test``), or else the last
``test_fraction`` of a seeded shuffle of the examples. Inputs:

images (N, C, H, W), or channels-last (N, H, W, C) when the last axis has 1 or 3 entries and
the second has not, or (N, H, W) grayscale; uint8 (0..255, kept as uint8 and scaled per batch)
or floats in [0, 1]; ``foreground`` (N, H, W), non-zero = object.

Without ``foreground`` the dataset has no object annotation and the analyses that need one skip.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope import io
from kdscope.datasets.base import DataSplits, TensorDataset, check_float
from kdscope.datasets.registry import register_dataset
from kdscope.errors import KdscopeError


def _footprint(args: Mapping[str, Any]) -> tuple[int, int]:
    """(1, bytes of every array once uncompressed), read from the archive's index."""
    try:
        with zipfile.ZipFile(Path(args["path"]).expanduser()) as archive:
            return 1, sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile):
        return 0, 0  # the constructor reports the file


@register_dataset("npz", modality="image", footprint=_footprint)
def npz(path: str, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """The arrays of the ``.npz`` file at ``path`` (see the module docstring); without test
    arrays, ``test_fraction`` of the examples (shuffled with ``seed``) form the test split."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise KdscopeError(f"npz: no file {file}")
    arrays = io.load_npz(file)
    for key in ("x", "y"):
        if key not in arrays:
            raise KdscopeError(f"{file}: no array {key!r} (it has {sorted(arrays)})")
    train = _split(file, arrays, "")
    num_classes = int(train.labels.max()) + 1
    if "x_test" in arrays:
        test = _split(file, arrays, "_test")
        num_classes = max(num_classes, int(test.labels.max()) + 1)
    else:
        fraction = check_float("test_fraction", test_fraction, 0.0, 1.0)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        n_test = round(fraction * len(train))
        if not 0 < n_test < len(train):
            raise KdscopeError(f"npz: test_fraction {fraction} leaves no test or no training data")
        train, test = train.subset(order[:-n_test]), train.subset(order[-n_test:])
    return DataSplits(_with_classes(train, num_classes), _with_classes(test, num_classes))


def _split(file: Path, arrays: dict[str, np.ndarray], suffix: str) -> TensorDataset:
    """The examples of ``x{suffix}``, ``y{suffix}``, ``foreground{suffix}``."""
    x, y = arrays.get(f"x{suffix}"), arrays.get(f"y{suffix}")
    if x is None or y is None:
        raise KdscopeError(f"{file}: 'x{suffix}' and 'y{suffix}' go together")
    inputs, modality = _inputs(file, x, f"x{suffix}")
    if y.ndim != 1 or len(y) != len(inputs) or y.dtype.kind not in "iu" or (y < 0).any():
        raise KdscopeError(
            f"{file}: 'y{suffix}' must hold {len(inputs)} integer labels >= 0, got shape "
            f"{y.shape} of {y.dtype}"
        )
    spatial = tuple(inputs.shape[2:])
    fg = arrays.get(f"foreground{suffix}")
    if fg is not None and fg.shape != (len(inputs), *spatial):
        raise KdscopeError(
            f"{file}: 'foreground{suffix}' has shape {fg.shape}, the inputs need "
            f"{(len(inputs), *spatial)}"
        )
    mask = (
        torch.from_numpy(fg != 0)
        if fg is not None
        else torch.ones(len(inputs), *spatial, dtype=torch.bool)
    )
    return TensorDataset(
        inputs=inputs,
        labels=torch.from_numpy(y.astype(np.int64)),
        foreground=mask,
        num_classes=int(y.max()) + 1 if len(y) else 1,
        modality=modality,
        annotation=f"the 'foreground' arrays of {file.name}"
        if fg is not None
        else "no object masks",
        has_foreground=fg is not None,
    )


def _inputs(file: Path, x: np.ndarray, key: str) -> tuple[torch.Tensor, str]:
    """The images as a tensor (N, C, H, W), uint8 kept, and their modality."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise KdscopeError(
            f"{file}: '{key}' has shape {x.shape}; images must be (N, C, H, W) or (N, H, W, C) "
            "with 1 or 3 channels, or (N, H, W)"
        )
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)), "image"
    if (
        x.dtype.kind != "f"
        or (x.size and (np.nanmin(x) < 0 or np.nanmax(x) > 1))
        or np.isnan(x).any()
    ):
        raise KdscopeError(f"{file}: '{key}' must be uint8 or floats in [0, 1]")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), "image"


def _with_classes(data: TensorDataset, num_classes: int) -> TensorDataset:
    """``data`` with ``num_classes`` classes (the larger of the two splits' label ranges)."""
    data.num_classes = num_classes
    return data
