"""``image_folder``: images in the ImageFolder layout, with optional object masks.

::

    ROOT/train/<class>/<name>.png|jpg|jpeg|bmp
    ROOT/test/<class>/<name>...
    ROOT/masks/train/<class>/<name>.png      (optional; non-zero = object)
    ROOT/masks/test/<class>/<name>.png

Classes are the folder names of ``train/``, sorted; ``test/`` may hold a subset of them. Images
are resized to ``size`` (bilinear; masks nearest-neighbour) and held as uint8, converted to
[0, 1] per batch. With a ``masks/`` tree every image needs its mask (same class folder, same
name stem, ``.png``); without one the dataset has no foreground and the analyses that need the
object skip with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset
from kdscope.datasets.images import (
    count_files,
    footprint,
    image_files,
    image_size,
    read_image,
    read_mask,
)
from kdscope.datasets.registry import register_dataset
from kdscope.errors import KdscopeError


def _footprint(args: Mapping[str, Any]) -> tuple[int, int]:
    """(images, bytes per image) from a scan of the folder (nothing decoded)."""

    def images(root: Path) -> int:
        return sum(count_files(root / s) for s in ("train", "test") if (root / s).is_dir())

    return footprint(args, images, args["channels"])


@register_dataset("image_folder", modality="image", footprint=_footprint)
def image_folder(
    root: str,
    size: int | Sequence[int] = 32,
    channels: int = 3,
    masks: bool | None = None,
) -> DataSplits:
    """Images from ``root`` (the ImageFolder layout, see the module docstring), resized to
    ``size`` (one side, or [height, width]) with ``channels`` 3 (RGB) or 1 (grayscale).
    ``masks``: read the ``masks/`` tree (None: when it exists)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    hw = image_size(size)
    base = Path(root).expanduser()
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise KdscopeError(
                f"image_folder: no folder {base / split} (the layout: ROOT/train/<class>/...)"
            )
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise KdscopeError(
            f"image_folder: {base / 'train'} holds {len(classes)} class folder(s); it needs 2 or more"
        )
    use_masks = (base / "masks").is_dir() if masks is None else masks
    if use_masks and not (base / "masks").is_dir():
        raise KdscopeError(
            f"image_folder: masks asked for, but there is no folder {base / 'masks'}"
        )
    splits = [
        _read_split(base, split, classes, hw, channels, use_masks) for split in ("train", "test")
    ]
    return DataSplits(*splits)


def _read_split(
    base: Path, split: str, classes: list[str], size: tuple[int, int], channels: int, masks: bool
) -> TensorDataset:
    """One split: every image of every class folder, in class then name order."""
    folders = sorted(p.name for p in (base / split).iterdir() if p.is_dir())
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise KdscopeError(
            f"image_folder: {base / split} has classes {unknown} that train/ has not"
        )
    images, labels, fg = [], [], []
    for label, name in enumerate(classes):
        folder = base / split / name
        for path in image_files(folder) if folder.is_dir() else []:
            images.append(read_image(path, size, channels))
            labels.append(label)
            if masks:
                fg.append(read_mask(base / "masks" / split / name / f"{path.stem}.png", size, path))
    if not images:
        raise KdscopeError(f"image_folder: {base / split} holds no image (.png, .jpg, .jpeg, .bmp)")
    n = len(images)
    foreground = torch.from_numpy(np.stack(fg)) if masks else torch.ones(n, *size, dtype=torch.bool)
    return TensorDataset(
        inputs=torch.from_numpy(np.stack(images)),
        labels=torch.tensor(labels, dtype=torch.int64),
        foreground=foreground,
        num_classes=len(classes),
        class_names=list(classes),
        annotation=(
            f"object masks read from {base / 'masks'}"
            if masks
            else "no object masks: the foreground is the whole image"
        ),
        has_foreground=masks,
    )
