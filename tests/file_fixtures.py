"""Tiny files in the formats of the datasets read from disk (CUB-200-2011, Pascal VOC), with
known content, for the dataset tests and the registry's contract tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: CUB: (image id, class id, is_train, box x y w h); images are 20 × 16, the bird a box of
#: its class's colour, its segmentation the box at 255 (and a faint halo at 100, below half)
CUB_IMAGES = [
    (1, 1, 1, (2, 3, 8, 6)),
    (2, 1, 0, (4, 2, 10, 10)),
    (3, 2, 1, (0, 0, 12, 8)),
    (4, 2, 0, (6, 6, 8, 8)),
    (5, 3, 1, (1, 1, 4, 4)),
]
CUB_COLOURS = {1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


def write_cub(root: Path) -> Path:
    """A CUB-200-2011 tree of five images in three classes."""
    (root / "images").mkdir(parents=True)
    (root / "segmentations").mkdir()
    lines = {"images": [], "labels": [], "split": [], "boxes": []}
    for image_id, cls, train, (x, y, w, h) in CUB_IMAGES:
        rel = f"{cls:03d}.Class_{cls}/bird_{image_id}.jpg"
        pixels = np.zeros((16, 20, 3), dtype=np.uint8)
        pixels[y : y + h, x : x + w] = CUB_COLOURS[cls]
        seg = np.zeros((16, 20), dtype=np.uint8)
        seg[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = 100
        seg[y : y + h, x : x + w] = 255
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "segmentations" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / rel, quality=100, subsampling=0)
        Image.fromarray(seg).save((root / "segmentations" / rel).with_suffix(".png"))
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {cls}")
        lines["split"].append(f"{image_id} {train}")
        # the annotated box is one pixel wider than the bird on each side: the crop holds the halo
        x0, y0 = max(0, x - 1), max(0, y - 1)
        lines["boxes"].append(f"{image_id} {x0}.0 {y0}.0 {x + w + 1 - x0}.0 {y + h + 1 - y0}.0")
    (root / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (root / "bounding_boxes.txt").write_text("\n".join(lines["boxes"]) + "\n")
    (root / "classes.txt").write_text("1 001.Class_1\n2 002.Class_2\n3 003.Class_3\n")
    return root


#: VOC: per image, its split and objects (class, 1-based inclusive box, difficult)
VOC_IMAGES = {
    "2007_000001": ("train", [("cat", (2, 2, 6, 8), 0), ("dog", (9, 3, 14, 10), 0)]),
    "2007_000002": ("train", [("bird", (1, 1, 4, 4), 1), ("cat", (5, 5, 12, 12), 0)]),
    "2007_000003": ("val", [("dog", (3, 3, 10, 9), 0)]),
}


def voc_xml(objects: list[tuple[str, tuple[int, int, int, int], int]]) -> str:
    """An annotation file holding ``objects``."""
    body = "".join(
        f"<object><name>{name}</name><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>"
        "</object>"
        for name, (x0, y0, x1, y1), d in objects
    )
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


def write_voc(root: Path) -> Path:
    """A VOC tree of three segmented images; instance k of an image fills its box with
    palette index k (255 on the box's last column, the border)."""
    for folder in ("Annotations", "JPEGImages", "SegmentationObject", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    sets: dict[str, list[str]] = {"train": [], "val": []}
    for image, (split, objects) in VOC_IMAGES.items():
        sets[split].append(image)
        pixels = np.full((14, 16, 3), 30, dtype=np.uint8)
        instances = np.zeros((14, 16), dtype=np.uint8)
        for k, (_name, (x0, y0, x1, y1), _d) in enumerate(objects, 1):
            pixels[y0 - 1 : y1, x0 - 1 : x1] = 40 * k + 100
            instances[y0 - 1 : y1, x0 - 1 : x1] = k
            instances[y0 - 1 : y1, x1 - 1] = 255
        Image.fromarray(pixels).save(
            root / "JPEGImages" / f"{image}.jpg", quality=100, subsampling=0
        )
        palette = Image.fromarray(instances, mode="P")
        palette.putpalette([v for i in range(256) for v in (i, i, i)])
        palette.save(root / "SegmentationObject" / f"{image}.png")
        (root / "Annotations" / f"{image}.xml").write_text(voc_xml(objects))
    for split, images in sets.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(images) + "\n")
    return root
