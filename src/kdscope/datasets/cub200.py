"""``cub200``: CUB-200-2011 from the files you have (nothing is downloaded), as the
knowledge-point papers used it: each bird cropped to its bounding box, with its segmentation as
the object mask.

``root`` holds the dataset as distributed: ``images.txt`` (``id path``), ``classes.txt``
(``class name``), ``image_class_labels.txt`` (``id class``, from 1), ``train_test_split.txt``
(``id is_train``), ``bounding_boxes.txt`` (``id x y width height``), ``images/<path>`` and the
segmentations ``segmentations/<path with .png>`` (a separate download of the same site; soft
masks, object where the value is at least half the mask's maximum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset
from kdscope.datasets.images import (
    Box,
    crop_mask,
    footprint,
    image_size,
    read_image,
    read_label_map,
)
from kdscope.datasets.registry import register_dataset
from kdscope.errors import KdscopeError

FILES = (
    "images.txt",
    "classes.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
)


def _table(path: Path, columns: int) -> dict[int, list[str]]:
    """A whitespace-separated table keyed by its first column (an integer id); a user error
    naming the file and line when a row is malformed."""
    if not path.is_file():
        raise KdscopeError(f"cub200: no file {path}")
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns or not parts[0].isdigit():
            raise KdscopeError(f"{path}, line {number}: expected {columns} columns, got {line!r}")
        rows[int(parts[0])] = parts[1:]
    return rows


def _footprint(args: Mapping[str, Any]) -> tuple[int, int]:
    """(images listed in images.txt, bytes per image)."""
    return footprint(args, lambda root: (root / "images.txt").read_text().count("\n"))


@register_dataset("cub200", modality="image", footprint=_footprint)
def cub200(
    root: str,
    size: int | Sequence[int] = 64,
    classes: int | None = None,
    max_per_class: int | None = None,
) -> DataSplits:
    """The object crops of CUB-200-2011 at ``root``, resized to ``size``, with their masks;
    ``classes``: keep the first N classes; ``max_per_class``: at most N images per class and
    split (for quick studies)."""
    base = Path(root).expanduser()
    hw = image_size(size)
    paths = _table(base / FILES[0], 2)
    names = _table(base / FILES[1], 2)
    labels = _table(base / FILES[2], 2)
    is_train = _table(base / FILES[3], 2)
    boxes = _table(base / FILES[4], 5)
    kept = sorted(names)[:classes] if classes is not None else sorted(names)
    index = {c: i for i, c in enumerate(kept)}
    split: dict[bool, list[int]] = {True: [], False: []}
    for image_id in sorted(paths):
        for table, what in ((labels, FILES[2]), (is_train, FILES[3]), (boxes, FILES[4])):
            if image_id not in table:
                raise KdscopeError(f"cub200: image {image_id} has no row in {base / what}")
        if int(labels[image_id][0]) in index:
            split[is_train[image_id][0] == "1"].append(image_id)
    class_names = [names[c][0] for c in kept]
    parts = []
    for train in (True, False):
        ids = _limit(split[train], labels, max_per_class)
        parts.append(_read(base, ids, paths, labels, boxes, index, hw, class_names))
    return DataSplits(*parts)


def _limit(ids: list[int], labels: dict[int, list[str]], count: int | None) -> list[int]:
    """At most ``count`` ids per class, in id order."""
    if count is None:
        return ids
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        c = labels[i][0]
        if seen.get(c, 0) < count:
            seen[c] = seen.get(c, 0) + 1
            out.append(i)
    return out


def _box(row: list[str], path: Path) -> Box:
    """A ``x y width height`` row as a (left, top, right, bottom) pixel box."""
    try:
        x, y, w, h = (float(v) for v in row)
    except ValueError:
        raise KdscopeError(f"{path}: bounding box {' '.join(row)!r} is not four numbers") from None
    return round(x), round(y), round(x + w), round(y + h)


def _read(
    base: Path,
    ids: list[int],
    paths: dict[int, list[str]],
    labels: dict[int, list[str]],
    boxes: dict[int, list[str]],
    index: dict[int, int],
    size: tuple[int, int],
    class_names: list[str],
) -> TensorDataset:
    """The crops, masks and labels of ``ids``."""
    if not ids:
        raise KdscopeError(f"cub200: {base} lists no image for a split of the classes kept")
    images, masks = [], []
    for i in ids:
        path = base / "images" / paths[i][0]
        box = _box(boxes[i], base / FILES[4])
        images.append(read_image(path, size, 3, box))
        seg = read_label_map(base / "segmentations" / Path(paths[i][0]).with_suffix(".png"), path)
        peak = float(seg.max()) if seg.size else 0.0
        masks.append(crop_mask(seg >= max(peak / 2, 1e-9), box, size, path))
    return TensorDataset(
        inputs=torch.from_numpy(np.stack(images)),
        labels=torch.tensor([index[int(labels[i][0])] for i in ids], dtype=torch.int64),
        foreground=torch.from_numpy(np.stack(masks)),
        num_classes=len(class_names),
        class_names=list(class_names),
        annotation="CUB-200-2011 segmentations (at least half their maximum), cropped to the bounding box",
    )
