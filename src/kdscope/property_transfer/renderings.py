"""Out-of-distribution renderings of a test image for the consensus test (Ojha et al. 2023,
unseen domains): the model sees the same object drawn differently, and only T–S against T–Ind
agreement matters.

* ``edge``: Sobel gradient magnitude of the grey image (0.299 R + 0.587 G + 0.114 B), divided by
  its per-image maximum (an all-flat image stays 0), in all three channels;
* ``sketch``: dark thin lines on white, 1 − edge;
* ``silhouette``: the filled foreground mask, a black object on a white background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RENDERINGS = ("edge", "sketch", "silhouette")

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def grey(x: Tensor) -> Tensor:
    """(B, 1, H, W) luma of RGB images (B, 3, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def edges(x: Tensor) -> Tensor:
    """(B, 3, H, W) Sobel magnitude sqrt(gx² + gy²) of the grey image (replicate padding),
    scaled to a per-image maximum of 1."""
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1).to(x.dtype)
    g = F.conv2d(F.pad(grey(x), (1, 1, 1, 1), mode="replicate"), kernel)
    mag = g.pow(2).sum(1, keepdim=True).sqrt()
    peak = mag.amax(dim=(2, 3), keepdim=True)
    return (mag / torch.where(peak > 0, peak, torch.ones_like(peak))).expand(-1, 3, -1, -1)


def render(x: Tensor, foreground: Tensor, kind: str) -> Tensor:
    """The ``kind`` rendering of images ``x`` (B, 3, H, W) with masks ``foreground`` (B, H, W)."""
    if kind == "edge":
        return edges(x).contiguous()
    if kind == "sketch":
        return (1.0 - edges(x)).contiguous()
    if kind == "silhouette":
        return (1.0 - foreground.to(x.dtype)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"unknown rendering {kind!r} (known: {', '.join(RENDERINGS)})")
