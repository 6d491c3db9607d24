"""Reading images and masks from files (Pillow), for the datasets read from disk.

Images are decoded, converted to RGB or grayscale, resized (bilinear) and kept as uint8
(C, H, W) arrays; masks are resized with nearest-neighbour sampling and read as "object where
non-zero". Every failure is one :class:`~kdscope.errors.KdscopeError` line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdscope.datasets.base import example_bytes
from kdscope.errors import KdscopeError

#: the image file suffixes read (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def image_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (height, width): one number for a square, or two; a ValueError otherwise."""
    values = [size] if isinstance(size, int) else list(size)
    if len(values) not in (1, 2) or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"size must be a positive integer or [height, width], got {size!r}")
    return (values[0], values[-1])


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open(path: Path) -> Image.Image:
    """The decoded image at ``path``; a user error naming it when it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).split("\n")[0]
        raise KdscopeError(f"{path}: cannot be read as an image ({reason})") from None


#: a crop box in pixels: (left, top, right, bottom), right and bottom exclusive
Box = tuple[int, int, int, int]


def read_image(
    path: Path, size: tuple[int, int], channels: int, box: Box | None = None
) -> np.ndarray:
    """The image at ``path`` (cropped to ``box`` first, when given) as uint8 (channels, height,
    width): RGB for 3 channels, grayscale (luminance) for 1, resized bilinearly to ``size``."""
    img = _open(path).convert("RGB" if channels == 3 else "L")
    if box is not None:
        img = img.crop(clip_box(box, img.size, path))
    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array.reshape(size[0], size[1], channels).transpose(2, 0, 1).copy()


def read_label_map(path: Path, of: Path) -> np.ndarray:
    """The 2-D array of values stored at ``path`` (a mask or a palette image: its indices),
    for the image ``of``; a user error when it is missing, cannot be read, or is not of the
    image's size."""
    if not path.is_file():
        raise KdscopeError(f"{of}: no mask at {path}")
    img = _open(path)
    same_size(img.size, of, path)
    return np.asarray(img if img.mode in ("P", "L", "I", "1") else img.convert("L"))


def crop_mask(mask: np.ndarray, box: Box, size: tuple[int, int], path: Path) -> np.ndarray:
    """The bool ``mask`` (height, width) cropped to ``box`` and resized (nearest-neighbour) to
    ``size``."""
    left, top, right, bottom = clip_box(box, (mask.shape[1], mask.shape[0]), path)
    img = Image.fromarray(mask[top:bottom, left:right].astype(np.uint8) * 255)
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 0


def clip_box(box: Box, image_size: tuple[int, int], path: Path) -> Box:
    """``box`` clipped to an image of ``image_size`` (width, height); a user error naming
    ``path`` when nothing of it is left."""
    width, height = image_size
    left, top = max(0, box[0]), max(0, box[1])
    right, bottom = min(width, box[2]), min(height, box[3])
    if right <= left or bottom <= top:
        raise KdscopeError(f"{path}: the box {box} lies outside the {width}×{height} image")
    return left, top, right, bottom


def read_mask(path: Path, size: tuple[int, int], of: Path) -> np.ndarray:
    """The object mask at ``path`` (of the image ``of``) as bool (height, width): True where
    it is non-zero, resized with nearest-neighbour sampling; a user error when the file is
    missing, cannot be read, or is not of the image's size."""
    if not path.is_file():
        raise KdscopeError(f"{of}: no mask at {path} (every image needs one when masks exist)")
    img = _open(path)
    same_size(img.size, of, path)
    img = img.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(img) > 0


def same_size(mask_size: tuple[int, int], image: Path, mask: Path) -> None:
    """A user error unless the mask (``mask_size``: width, height) has the image's size."""
    try:
        with Image.open(image) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError) as e:
        raise KdscopeError(f"{image}: cannot be read as an image ({e})") from None
    if mask_size != (width, height):
        raise KdscopeError(
            f"{mask}: the mask is {mask_size[0]}×{mask_size[1]}, its image {image.name} is "
            f"{width}×{height}"
        )


def footprint(
    args: Mapping[str, Any], count: Callable[[Path], int], channels: int = 3
) -> tuple[int, int]:
    """A dataset read from files: (``count(root)`` images, the bytes of one at ``size`` with
    its mask), from the constructor's arguments ``args``; (0, 0) when they cannot be read (the
    constructor then reports the problem)."""
    try:
        height, width = image_size(args["size"])
        n = count(Path(args["root"]).expanduser())
    except (OSError, ValueError):
        return 0, 0
    return n, example_bytes(channels * height * width, 1, height * width)


def count_files(folder: Path) -> int:
    """How many image files lie anywhere under ``folder`` (a cheap scan, nothing decoded)."""
    return sum(
        1
        for _, _, names in os.walk(folder)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    )
