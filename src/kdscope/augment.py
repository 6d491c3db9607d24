"""On-the-fly training augmentations, vectorised over the batch and driven by a generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2 (edge padding),
    i.e. the usual pad-and-random-crop."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (torch.arange(h).view(1, h) + dy.view(b, 1)).view(b, 1, h, 1)
    cols = (torch.arange(w).view(1, w) + dx.view(b, 1)).view(b, 1, 1, w)
    batch = torch.arange(b).view(b, 1, 1, 1)
    chans = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


def augment(
    x: Tensor, ops: Sequence[str], generator: torch.Generator, max_shift: int = 2
) -> Tensor:
    """Apply the named augmentations in order (``"flip"``, ``"shift"``)."""
    for op in ops:
        if op == "flip":
            x = random_flip(x, generator)
        elif op == "shift":
            x = random_shift(x, max_shift, generator)
        else:
            raise ValueError(f"unknown augmentation {op!r}")
    return x
