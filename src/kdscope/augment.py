"""Image augmentations and the paired transforms of the invariance tests, in pixel space.

Inputs are float tensors (B, C, H, W) in [0, 1] (the colour ops need C = 3). Every function is
vectorised over the batch and takes its randomness from the given ``torch.Generator`` only, so a
seed fixes the output.

* Training augmentations, applied on the fly by :func:`augment`: ``"flip"`` (mirror with
  probability 1/2), ``"shift"`` (integer translation with edge padding), ``"colour"`` (the
  equivalent of ColorJitter(0.4, 0.4, 0.4, 0.2), :func:`random_colour_jitter`) and ``"crop"``
  (random-resized crop, area 8–100 %, aspect 3/4–4/3, :func:`random_resized_crop`).
* Evaluation transforms of the property-transfer invariance tests (Ojha et al. 2023):
  :func:`fixed_colour_jitter` (fixed strength s, random direction), :func:`crop_pair` (two crops of
  area fraction s, resized back) and :func:`shift_pair` (two shifted crops of a resized,
  centre-cropped image).

Colour ops (no torchvision): brightness x·f, contrast m + f(x − m) with m the image's mean grey
level, saturation gr + f(x − gr) with gr the grey image, hue rotation by h of a turn in HSV;
grey = 0.299 R + 0.587 G + 0.114 B; each op clips to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

GREY_WEIGHTS = (0.299, 0.587, 0.114)
COLOUR_OPS = ("brightness", "contrast", "saturation", "hue")
"""Op indices used by ``order`` in :func:`colour_jitter`: 0 brightness, 1 contrast, 2 saturation,
3 hue."""

#: Shift protocol of Ojha et al. 2023 at the paper's MNIST scale: resize H = 28 to 32 before
#: cropping.
SHIFT_RESIZE = 32 / 28


# --------------------------------------------------------------------------- flip and shift


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def _crop_at(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """Per-image integer crops: out[b] = x[b, :, top_b : top_b + height, left_b : left_b + width]."""
    b, c = x.shape[:2]
    dev = x.device
    rows = (torch.arange(height, device=dev).view(1, height) + top.to(dev).view(b, 1)).view(
        b, 1, height, 1
    )
    cols = (torch.arange(width, device=dev).view(1, width) + left.to(dev).view(b, 1)).view(
        b, 1, 1, width
    )
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chans = torch.arange(c, device=dev).view(1, c, 1, 1)
    return x[batch, chans, rows, cols]


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2 (edge padding),
    i.e. the usual pad-and-random-crop."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    return _crop_at(padded, dy, dx, h, w)


# --------------------------------------------------------------------------- colour ops


def _check_rgb(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"colour ops need (B, 3, H, W) images, got shape {tuple(x.shape)}")


def _per_image(v: Tensor, x: Tensor) -> Tensor:
    """A (B,) parameter as (B, 1, 1, 1), on x's device and dtype."""
    if v.shape != (x.shape[0],):
        raise ValueError(f"expected one parameter per image, shape ({x.shape[0]},), got {v.shape}")
    return v.to(x).view(-1, 1, 1, 1)


def grey(x: Tensor) -> Tensor:
    """(B, 1, H, W) grey level gr = 0.299 R + 0.587 G + 0.114 B of (B, 3, H, W) images."""
    _check_rgb(x)
    return (x * x.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def adjust_brightness(x: Tensor, f: Tensor) -> Tensor:
    """clip(x·f) with one factor f_b per image (f = 1 is the identity)."""
    _check_rgb(x)
    return (x * _per_image(f, x)).clamp(0, 1)


def adjust_contrast(x: Tensor, f: Tensor) -> Tensor:
    """clip(m + f(x − m)), m = the image's mean grey level over all pixels (f = 1: identity,
    f = 0: a uniform grey image of level m)."""
    m = grey(x).mean((1, 2, 3), keepdim=True)
    return (m + _per_image(f, x) * (x - m)).clamp(0, 1)


def adjust_saturation(x: Tensor, f: Tensor) -> Tensor:
    """clip(gr + f(x − gr)), gr = the per-pixel grey image (f = 1: identity, f = 0: grey)."""
    gr = grey(x)
    return (gr + _per_image(f, x) * (x - gr)).clamp(0, 1)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (h, s, v) channels, h in turns in [0, 1].

    v = max(R, G, B), c = v − min(R, G, B), s = c / v (0 where v = 0), and with the channel
    holding the maximum: h = ((G − B)/c mod 6)/6 for R, ((B − R)/c + 2)/6 for G,
    ((R − G)/c + 4)/6 for B; h = 0 where c = 0 (grey pixels).
    """
    _check_rgb(x)
    r, g, b = x.unbind(1)
    v = x.amax(1)
    c = v - x.amin(1)
    s = c / torch.where(v > 0, v, torch.ones_like(v))
    cs = torch.where(c > 0, c, torch.ones_like(c))
    h_r = torch.remainder((g - b) / cs, 6)
    h_g = (b - r) / cs + 2
    h_b = (r - g) / cs + 4
    h = torch.where(r == v, h_r, torch.where(g == v, h_g, h_b))
    h = torch.where(c > 0, h / 6, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n ∈ {R: 5, G: 3, B: 1} is
    v − v·s·clip(min(k, 4 − k), 0, 1) with k = (n + 6h) mod 6 (h in turns, any real value)."""
    h, s, v = hsv.unsqueeze(2).unbind(1)  # each (B, 1, H, W)
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h, 6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def adjust_hue(x: Tensor, h: Tensor) -> Tensor:
    """Rotate the hue by h of a turn: HSV hue → (hue + h) mod 1, saturation and value kept,
    then back to RGB and clip (h = 0 or any whole number of turns is the identity; h = 1/3 maps
    red to green)."""
    hue, s, v = rgb_to_hsv(x).unbind(1)
    hue = torch.remainder(hue + _per_image(h, x)[:, 0], 1)
    return hsv_to_rgb(torch.stack([hue, s, v], 1)).clamp(0, 1)


_OPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)


def _check_order(order: Tensor, n: int) -> None:
    want = torch.arange(4, device=order.device).expand(n, 4)
    if order.shape != (n, 4) or not torch.equal(order.sort(1).values, want):
        raise ValueError(f"order must be ({n}, 4) with each row a permutation of 0..3")


def colour_jitter(x: Tensor, factors: Tensor, hue: Tensor, order: Tensor) -> Tensor:
    """Apply brightness, contrast and saturation with ``factors`` (B, 3) and hue rotation ``hue``
    (B,) to each image in its own order: step k applies op ``order[b, k]`` (indices as in
    :data:`COLOUR_OPS`) to image b, each op clipping to [0, 1]. ``order`` is (B, 4), each row a
    permutation of 0..3. Vectorised per step: each op runs once on the images whose k-th op it is.
    """
    _check_rgb(x)
    n = x.shape[0]
    if factors.shape != (n, 3):
        raise ValueError(f"factors must be ({n}, 3), got {tuple(factors.shape)}")
    order = order.to(x.device)
    _check_order(order, n)
    params = torch.cat([factors.to(x), _per_image(hue, x).view(n, 1)], 1)  # (B, 4), column = op
    for k in range(4):
        step = order[:, k]
        out = x.clone()
        for j, op in enumerate(_OPS):
            sel = step == j
            out[sel] = op(x[sel], params[sel, j])
        x = out
    return x


class JitterParams(NamedTuple):
    """Per-image colour-jitter parameters: ``factors`` (B, 3) for brightness, contrast and
    saturation, ``hue`` (B,) in turns, ``order`` (B, 4) a permutation of the ops per image."""

    factors: Tensor
    hue: Tensor
    order: Tensor


def _random_order(n: int, generator: torch.Generator) -> Tensor:
    """(n, 4) uniformly random permutations of 0..3 (argsort of uniform keys)."""
    return torch.rand(n, 4, generator=generator, device=generator.device).argsort(1)


def random_jitter_params(
    n: int, generator: torch.Generator, strength: float = 0.4, hue: float = 0.2
) -> JitterParams:
    """Training jitter: f ~ U[1 − strength, 1 + strength] for each of brightness, contrast and
    saturation, h ~ U[−hue, hue], a uniformly random op order per image (torchvision's
    ColorJitter(strength, strength, strength, hue) for strength ≤ 1, hue ≤ 0.5)."""
    if not (0 <= strength <= 1 and 0 <= hue <= 0.5):
        raise ValueError(f"need 0 <= strength <= 1 and 0 <= hue <= 0.5, got {strength}, {hue}")
    u = torch.rand(n, 4, generator=generator, device=generator.device) * 2 - 1  # U[-1, 1]
    return JitterParams(1 + strength * u[:, :3], hue * u[:, 3], _random_order(n, generator))


def fixed_jitter_params(n: int, s: float, generator: torch.Generator) -> JitterParams:
    """Fixed-strength jitter (Ojha et al. 2023, sweep): f = 1 ± s for each of brightness, contrast
    and saturation and h = ±s/2, each sign random (1/2 each) per op and image; random op order."""
    if not 0 <= s <= 1:
        raise ValueError(f"fixed jitter strength must be in [0, 1], got {s}")
    sign = torch.randint(0, 2, (n, 4), generator=generator, device=generator.device) * 2 - 1
    sign = sign.float()
    return JitterParams(1 + s * sign[:, :3], s / 2 * sign[:, 3], _random_order(n, generator))


def random_colour_jitter(
    x: Tensor, generator: torch.Generator, strength: float = 0.4, hue: float = 0.2
) -> Tensor:
    """Training colour jitter: :func:`colour_jitter` with :func:`random_jitter_params`."""
    return colour_jitter(x, *random_jitter_params(x.shape[0], generator, strength, hue))


def fixed_colour_jitter(x: Tensor, s: float, generator: torch.Generator) -> Tensor:
    """Evaluation jitter at fixed strength s: :func:`colour_jitter` with
    :func:`fixed_jitter_params` (s = 0 is the identity)."""
    return colour_jitter(x, *fixed_jitter_params(x.shape[0], s, generator))


# --------------------------------------------------------------------------- resized crops


def _check_range(name: str, lo_hi: tuple[float, float], upper: float) -> None:
    lo, hi = lo_hi
    if not 0 < lo <= hi <= upper:
        raise ValueError(f"{name} must satisfy 0 < low <= high <= {upper}, got {lo_hi}")


def _first_fitting_size(
    n: int,
    height: int,
    width: int,
    area: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``attempts`` crop sizes per image and keep the first that fits inside the image.

    Attempt: area fraction a ~ U[area], aspect r = width/height with log r ~ U[log ratio], crop
    (h_c, w_c) = (√(a·H·W / r), √(a·H·W·r)) so that h_c·w_c = a·H·W and w_c/h_c = r. Returns
    (h_c, w_c, ok), (n,) each; ``ok`` is False where no attempt fits (h_c ≤ H and w_c ≤ W).
    """
    dev = generator.device
    a = area[0] + (area[1] - area[0]) * torch.rand(n, attempts, generator=generator, device=dev)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    r = torch.exp(lo + (hi - lo) * torch.rand(n, attempts, generator=generator, device=dev))
    target = a * (height * width)
    ch, cw = torch.sqrt(target / r), torch.sqrt(target * r)
    fits = (ch <= height) & (cw <= width)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # first fitting attempt (0 if none)
    return ch.gather(1, first)[:, 0], cw.gather(1, first)[:, 0], fits.any(1)


def _place(
    ch: Tensor, cw: Tensor, ok: Tensor, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """(n, 4) boxes (top, left, h_c, w_c): top ~ U[0, H − h_c], left ~ U[0, W − w_c] where ``ok``,
    centred (top = (H − h_c)/2, left = (W − w_c)/2) elsewhere."""
    u = torch.rand(ch.shape[0], 2, generator=generator, device=generator.device)
    frac = torch.where(ok.view(-1, 1), u, torch.full_like(u, 0.5))
    free = torch.stack([height - ch, width - cw], 1).clamp_min(0)
    return torch.cat([frac * free, ch.view(-1, 1), cw.view(-1, 1)], 1)


def random_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Tensor:
    """(n, 4) random-resized-crop boxes (top, left, height, width) in pixels (continuous).

    Up to ``attempts`` draws of area fraction a ~ U[area] and aspect w/h log-uniform in ``ratio``
    (see :func:`_first_fitting_size`); the first that fits is placed uniformly inside the image.
    Fallback (torchvision's rule) where none fits: with image aspect q = W/H, a centred crop of
    the whole height and width H·ratio_max if q > ratio_max, of the whole width and height
    W/ratio_min if q < ratio_min, else the whole image.
    """
    _check_range("area", area, 1.0)
    _check_range("ratio", ratio, math.inf)
    ch, cw, ok = _first_fitting_size(n, height, width, area, ratio, attempts, generator)
    q = width / height
    if q > ratio[1]:
        fh, fw = float(height), height * ratio[1]
    elif q < ratio[0]:
        fh, fw = width / ratio[0], float(width)
    else:
        fh, fw = float(height), float(width)
    ch = torch.where(ok, ch, torch.full_like(ch, fh))
    cw = torch.where(ok, cw, torch.full_like(cw, fw))
    return _place(ch, cw, ok, height, width, generator)


def fixed_area_crop_boxes(
    n: int,
    height: int,
    width: int,
    s: float,
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> Tensor:
    """(n, 4) boxes (top, left, height, width) covering exactly the area fraction s (Ojha et al.
    2023): aspect log-uniform in ``ratio``, redrawn up to ``attempts`` times until the crop fits,
    placed uniformly; else a centred crop of area s with the image's own aspect, (√s·H, √s·W), which
    always fits (so s = 1 gives the whole image)."""
    _check_range("area fraction s", (s, s), 1.0)
    _check_range("ratio", ratio, math.inf)
    ch, cw, ok = _first_fitting_size(n, height, width, (s, s), ratio, attempts, generator)
    ch = torch.where(ok, ch, torch.full_like(ch, math.sqrt(s) * height))
    cw = torch.where(ok, cw, torch.full_like(cw, math.sqrt(s) * width))
    return _place(ch, cw, ok, height, width, generator)


def crop_resize(x: Tensor, boxes: Tensor) -> Tensor:
    """Crop each image to its box (top, left, h_c, w_c) (``boxes`` (B, 4), pixels, continuous)
    and resize it back to H × W bilinearly, in one ``grid_sample`` call.

    Output pixel (i, j) samples the input at (top + (i + ½)·h_c/H, left + (j + ½)·w_c/W) in
    pixel-edge coordinates (pixel centres at k + ½), clamped to the box's outermost pixel centres
    (top + ½ … top + h_c − ½): for an integer box this is exactly a crop followed by a bilinear
    resize with align_corners=False (torchvision's resized_crop when enlarging). As an affine map
    of normalised coordinates: θ = [[w_c/W, 0, (2·left + w_c)/W − 1], [0, h_c/H, (2·top + h_c)/H − 1]].
    """
    b, _, h, w = x.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be ({b}, 4), got {tuple(boxes.shape)}")
    top, left, ch, cw = boxes.to(x).unbind(1)
    zero = torch.zeros_like(ch)
    cx, cy = (2 * left + cw) / w - 1, (2 * top + ch) / h - 1  # box centre, normalised
    theta = torch.stack([torch.stack([cw / w, zero, cx], 1), torch.stack([zero, ch / h, cy], 1)], 1)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    # outermost pixel centres of the box, normalised (x then y, as in the grid's last dim)
    lo = torch.stack([(2 * left + 1) / w - 1, (2 * top + 1) / h - 1], 1)
    hi = torch.stack([(2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1], 1)
    mid = torch.stack([cx, cy], 1)  # boxes under one pixel wide collapse onto their centre
    lo, hi = torch.minimum(lo, mid).view(b, 1, 1, 2), torch.maximum(hi, mid).view(b, 1, 1, 2)
    grid = torch.maximum(torch.minimum(grid, hi), lo)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: Tensor,
    generator: torch.Generator,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Training random-resized crop: :func:`random_crop_boxes` (10 attempts, torchvision's
    fallback) then :func:`crop_resize` back to H × W."""
    b, _, h, w = x.shape
    return crop_resize(x, random_crop_boxes(b, h, w, generator, area, ratio))


def crop_pair(x: Tensor, s: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Crop-invariance evaluation (Ojha et al. 2023): two independent crops per image, each of area
    fraction exactly s (:func:`fixed_area_crop_boxes`), each resized back to H × W."""
    b, _, h, w = x.shape
    first = fixed_area_crop_boxes(b, h, w, s, generator)
    second = fixed_area_crop_boxes(b, h, w, s, generator)
    return crop_resize(x, first), crop_resize(x, second)


# --------------------------------------------------------------------------- shift evaluation


def shift_pair(x: Tensor, d: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Shift-invariance evaluation (Ojha et al. 2023, scaled to the image side): resize (H, W) to
    (round(H·32/28), round(W·32/28)) bilinearly, centre-crop (H + d) × (W + d) (offset
    round((R − H − d)/2), as torchvision's center_crop), then two H × W crops at integer offsets
    (dy, dx) ∈ {0..d}², drawn uniformly and independently per crop and image.
    ``d`` may be at most round(H·32/28) − H (4 at H = 28)."""
    b, _, h, w = x.shape
    rh, rw = round(h * SHIFT_RESIZE), round(w * SHIFT_RESIZE)
    if not 0 <= d <= min(rh - h, rw - w):
        raise ValueError(f"shift d must be in [0, {min(rh - h, rw - w)}] for {h}x{w}, got {d}")
    big = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    top, left = round((rh - h - d) / 2), round((rw - w - d) / 2)
    big = big[..., top : top + h + d, left : left + w + d]
    off = torch.randint(0, d + 1, (2, 2, b), generator=generator, device=generator.device)
    return _crop_at(big, off[0, 0], off[0, 1], h, w), _crop_at(big, off[1, 0], off[1, 1], h, w)


# --------------------------------------------------------------------------- training pipeline


def augment(
    x: Tensor, ops: Sequence[str], generator: torch.Generator, max_shift: int = 2
) -> Tensor:
    """Apply the named augmentations in order: ``"flip"`` (:func:`random_flip`), ``"shift"``
    (:func:`random_shift` by up to ``max_shift`` px), ``"colour"`` (:func:`random_colour_jitter`
    at its defaults) and ``"crop"`` (:func:`random_resized_crop` at its defaults)."""
    for op in ops:
        if op == "flip":
            x = random_flip(x, generator)
        elif op == "shift":
            x = random_shift(x, max_shift, generator)
        elif op == "colour":
            x = random_colour_jitter(x, generator)
        elif op == "crop":
            x = random_resized_crop(x, generator)
        else:
            raise ValueError(f"unknown augmentation {op!r}")
    return x
