"""Localisation: Grad-CAM maps and the win rate of Ojha et al. 2023, localisation.

Grad-CAM for class c at a layer with activations A^k (captum's ``LayerGradCam``):

    w_k = mean over positions of ∂y^c/∂A^k   (y^c: the pre-softmax logit),
    CAM = ReLU(Σ_k w_k A^k),

upsampled bilinearly to the input size so that networks with different feature resolutions are
comparable. The win rate of a distilled student S against an independent student Ind is

    WR(S) = 100 · mean_x win(x),   win = 1 if cos(CAM_T, CAM_S) > cos(CAM_T, CAM_Ind),
                                          ½ on a tie, 0 otherwise,

on flattened maps. With several seeds of each, :func:`win_grid` gives the win indicators
x[i, j, n] of every (S seed i, Ind seed j) pair on every input n, the crossed grid that
:func:`kdscope.stats.summarise_crossed` infers from with seeds as the unit. An input where any
compared map is all zero (cosine undefined) is dropped from the whole grid, so every pair is
scored on the same inputs, and counted. The kdscope extension compares with the datasets'
foreground masks: the share of a map's energy inside the mask, E = Σ_mask CAM / Σ CAM.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope import device
from kdscope.models.hooks import get_module


def gradcam_maps(
    model: nn.Module, layer: str, x: Tensor, target: Tensor, batch_size: int = 128
) -> Tensor:
    """(N, H, W) Grad-CAM maps of ``model`` at the module path ``layer`` for the classes
    ``target``, ReLU applied, bilinearly upsampled to the input's spatial size. Eval mode; the
    model's mode is restored and no gradient is left in its parameters. Computed on the model's
    device in chunks of ``batch_size`` (inputs and classes moved there), returned on the CPU."""
    dev = device.model_device(model)
    was = model.training
    model.eval()
    from captum.attr import LayerGradCam  # captum takes ~0.6 s to import: only when used

    cam = LayerGradCam(model, get_module(model, layer))
    maps = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(dev)
            yb = target[start : start + batch_size].to(dev)
            a = cam.attribute(xb, target=yb, relu_attributions=True)
            a = F.interpolate(a.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            maps.append(a[:, 0].cpu())
    finally:
        model.train(was)
        model.zero_grad(set_to_none=True)
    return torch.cat(maps)


def map_cosine(a: Tensor, b: Tensor) -> np.ndarray:
    """Per-input cosine of flattened maps; NaN where either map is all zero."""
    a2, b2 = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    na, nb = a2.norm(dim=1), b2.norm(dim=1)
    cos = (a2 * b2).sum(1) / (na * nb).clamp_min(1e-300)
    cos[(na == 0) | (nb == 0)] = float("nan")
    return cos.numpy()


def win_grid(closer: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, int]:
    """Win indicators x[i, j, n] of ``closer`` (k1 × N: one row of per-input similarities to the
    teacher per seed; a single row may be 1-D) over ``other`` (k2 × N): 1 where
    closer[i, n] > other[j, n], ½ on a tie, 0 otherwise. Only the inputs defined (finite) in
    every row of both are kept, so each pair is scored on the same inputs; returns the
    (k1, k2, N_kept) grid and the number of inputs dropped."""
    a, b = np.atleast_2d(closer), np.atleast_2d(other)
    ok = np.isfinite(a).all(0) & np.isfinite(b).all(0)
    a, b = a[:, None, ok], b[None, :, ok]
    wins = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
    return wins, int((~ok).sum())


def foreground_energy(maps: Tensor, foreground: Tensor) -> np.ndarray:
    """Share of each map's mass inside its foreground mask (NaN for an all-zero map)."""
    m = maps.double()
    total = m.sum(dim=(1, 2))
    inside = (m * foreground.double()).sum(dim=(1, 2))
    out = inside / total.clamp_min(1e-300)
    out[total == 0] = float("nan")
    return out.numpy()
