"""``voc``: Pascal VOC object crops from the files you have (nothing is downloaded), as the
knowledge-point papers used them: one crop per annotated object, with its instance mask.

``root`` is a ``VOC20xx`` folder: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``,
``SegmentationObject/<id>.png`` (palette indices: object k of the annotation is index k, 0 the
background, 255 the uncertain border) and ``ImageSets/Segmentation/train.txt`` / ``val.txt``
(the images with segmentations; ``val`` is the test split). The class of an object is its
``<name>`` among the 20 VOC classes. Annotations are read with the standard XML parser after
refusing any document type or entity declaration, so a file cannot expand or fetch anything.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class VocObject:
    """One annotated object: its image id, its index in the annotation (from 1), class, box
    and flags."""

    image: str
    index: int
    label: int
    box: Box
    difficult: bool
    truncated: bool


def _footprint(args: Mapping[str, Any]) -> tuple[int, int]:
    """(images listed in the two splits, bytes per crop): a lower bound (several objects per
    image make more crops)."""

    def listed(root: Path) -> int:
        sets = root / "ImageSets" / "Segmentation"
        return sum(len((sets / f).read_text().split()) for f in ("train.txt", "val.txt"))

    return footprint(args, listed)


@register_dataset("voc", modality="image", footprint=_footprint)
def voc(
    root: str,
    size: int | Sequence[int] = 64,
    skip_difficult: bool = True,
    skip_truncated: bool = False,
    max_per_class: int | None = None,
) -> DataSplits:
    """One crop per annotated object of the segmented images at ``root`` (see the module
    docstring), resized to ``size``, with its instance mask; objects marked ``difficult`` (and,
    with ``skip_truncated``, truncated) are left out; ``max_per_class``: at most N crops per
    class and split."""
    base = Path(root).expanduser()
    hw = image_size(size)
    parts = []
    for split in ("train", "val"):
        listed = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listed.is_file():
            raise KdscopeError(f"voc: no file {listed}")
        objects = [
            o
            for image in listed.read_text(encoding="utf-8").split()
            for o in read_annotation(base / "Annotations" / f"{image}.xml", image)
            if not (skip_difficult and o.difficult) and not (skip_truncated and o.truncated)
        ]
        parts.append(_crops(base, _limit(objects, max_per_class), hw, split))
    return DataSplits(*parts)


def read_annotation(path: Path, image: str) -> list[VocObject]:
    """The objects of one VOC annotation file, in order; a user error naming the file when it
    is missing, malformed, declares a document type or entity, or names an unknown class."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KdscopeError(f"voc: cannot read {path}: {e.strerror}") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise KdscopeError(f"{path}: declares a document type or entity; refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise KdscopeError(f"{path}: not well-formed XML ({e})") from None
    objects = []
    for k, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASSES:
            raise KdscopeError(f"{path}: object {k} is a {name!r}, not one of the 20 VOC classes")
        bb = obj.find("bndbox")
        try:
            x0, y0, x1, y1 = (float(bb.findtext(t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            raise KdscopeError(f"{path}: object {k} has no numeric bndbox") from None
        # VOC boxes are 1-based and inclusive: pixels x0..x1 → columns x0 − 1 .. x1 − 1
        box = (round(x0) - 1, round(y0) - 1, round(x1), round(y1))
        objects.append(
            VocObject(
                image, k, CLASSES.index(name), box, _flag(obj, "difficult"), _flag(obj, "truncated")
            )
        )
    return objects


def _flag(obj: ET.Element, tag: str) -> bool:
    """Whether the object's ``tag`` (difficult, truncated) is 1."""
    return (obj.findtext(tag) or "0").strip() == "1"


def _limit(objects: list[VocObject], count: int | None) -> list[VocObject]:
    """At most ``count`` objects per class, in order."""
    if count is None:
        return objects
    seen: dict[int, int] = {}
    out = []
    for o in objects:
        if seen.get(o.label, 0) < count:
            seen[o.label] = seen.get(o.label, 0) + 1
            out.append(o)
    return out


def _crops(
    base: Path, objects: list[VocObject], size: tuple[int, int], split: str
) -> TensorDataset:
    """The crops of ``objects`` and their instance masks."""
    if not objects:
        raise KdscopeError(f"voc: the {split} split of {base} has no object to crop")
    images, masks = [], []
    for o in objects:
        path = base / "JPEGImages" / f"{o.image}.jpg"
        images.append(read_image(path, size, 3, o.box))
        instances = read_label_map(base / "SegmentationObject" / f"{o.image}.png", path)
        masks.append(crop_mask(instances == o.index, o.box, size, path))
    return TensorDataset(
        inputs=torch.from_numpy(np.stack(images)),
        labels=torch.tensor([o.label for o in objects], dtype=torch.int64),
        foreground=torch.from_numpy(np.stack(masks)),
        num_classes=len(CLASSES),
        class_names=list(CLASSES),
        annotation="Pascal VOC instance masks (SegmentationObject), cropped to each object's box",
    )
