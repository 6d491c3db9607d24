"""Invariance tests (Ojha et al. 2023, invariances): agreement of a model's predictions on the
two members of transformed input pairs.

    agree(f) = 100 · (1/n) Σ_x 1[argmax f(x1) = argmax f(x2)]

Pairs per transform and strength:

* ``colour``: (x, jitter(x)); strength ``"train"`` = the teacher's training jitter (factors
  ~ U[0.6, 1.4], hue ~ U[−0.2, 0.2]), a number s = fixed magnitude (factors 1 ± s, hue ± s/2,
  random signs and order);
* ``crop``: two random crops of area fraction s, resized back;
* ``shift``: two random H × H crops of an image resized by 32/28 and centre-cropped to H + d,
  with d given at side 28 and scaled to the image (:func:`shift_pixels`).

Every pair is drawn from a generator seeded by (seed, transform, strength), so every model sees
the same transformed inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from kdscope.augment import crop_pair, fixed_colour_jitter, random_colour_jitter, shift_pair
from kdscope.property_transfer.adversarial import predict_labels
from kdscope.seeding import derive_seed

Strength = float | str

# The sweep of each transform (Ojha et al. 2023, shift scaled to the image side) and the strength
# of its headline comparison (colour: the teacher's training jitter; crop: the smallest area,
# where the paper's gaps are largest; shift: the largest offset window).
STRENGTHS: dict[str, tuple[Strength, ...]] = {
    "colour": ("train", 0.3, 0.4, 0.5, 0.6),
    "crop": (0.3, 0.4, 0.5, 0.6),
    "shift": (1, 2, 3, 4),
}
HEADLINE: dict[str, Strength] = {"colour": "train", "crop": 0.3, "shift": 4}


def transformed_pair(
    x: Tensor, transform: str, strength: Strength, seed: int
) -> tuple[Tensor, Tensor]:
    """The (x1, x2) pair of every input of ``x`` (B, C, H, W) in [0, 1] for one transform and
    strength, drawn from a generator seeded by (seed, transform, strength)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "invariance", transform, str(strength)))
    if transform == "colour":
        if strength == "train":
            return x, random_colour_jitter(x, gen)
        return x, fixed_colour_jitter(x, float(strength), gen)
    if strength == "train":
        raise ValueError(f"transform {transform!r} has no training strength; give a number")
    if transform == "crop":
        return crop_pair(x, float(strength), gen)
    if transform == "shift":
        return shift_pair(x, shift_pixels(int(strength), x.shape[-2]), gen)
    raise ValueError(f"unknown transform {transform!r} (known: {', '.join(STRENGTHS)})")


def shift_pixels(d: int, side: int) -> int:
    """Ojha et al.'s offset window ``d`` (pixels at side 28) at image side ``side``: the same
    fraction of the image, round(d · side / 28), at least 1 and at most what the 32/28 resize
    leaves (round(side · 32/28) − side)."""
    return max(1, min(round(d * side / 28), round(side * 32 / 28) - side))


def agreement(model: nn.Module, x1: Tensor, x2: Tensor) -> np.ndarray:
    """1.0 per input where the model's predicted class is the same on x1 and x2, else 0.0
    (predicted on the model's device, :func:`predict_labels`)."""
    same = predict_labels(model, x1) == predict_labels(model, x2)
    return same.numpy().astype(np.float64)
