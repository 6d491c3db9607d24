"""``shapes``: an embedded, procedurally generated 10-class image dataset with exact object masks.

Each image shows one object (the class) drawn on a background. The object is painted last, so
the per-pixel foreground mask is *exactly* the set of pixels the object covers: its fill colour
plus a 1-pixel outline on its inner border (dark for light fills, light for dark fills) that keeps
the object visible whatever the background. Everything else - base colour, grating, colour blobs
and distractor strokes - is background and never in the mask, which makes the foreground /
background split of a knowledge-point analysis meaningful.

Rendering is vectorised over the whole batch with numpy: each class is an implicit inside-test
(polar, half-plane or box test) evaluated on the pixel-centre grid in per-image object coordinates
(random centre, radius and rotation). Generation is deterministic from ``seed``: the train and
test splits draw from separate ``numpy.random.Generator(PCG64)`` streams spawned from
``SeedSequence(seed)``. All per-image parameters are drawn in a fixed order before rendering, so
with one seed the labels, object geometry and object colours do not depend on ``background``,
``distractors``, ``noise`` or ``object_texture`` (the same objects can be rendered on different
backgrounds and with different fills). The per-image attributes added later (mixed-background
domain, nuisance group, object texture and its offset) come from a second stream of each split,
so they neither move the original draws (outputs of the original options are unchanged) nor
depend on the number of distractor strokes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, check_float, check_int, example_bytes
from kdscope.datasets.registry import register_dataset

__all__ = [
    "BACKGROUNDS",
    "CLASS_NAMES",
    "NAMED_COLOURS",
    "OBJECT_TEXTURES",
    "TEXTURE_NAMES",
    "shapes",
]

CLASS_NAMES: list[str] = [
    "disk",
    "ring",
    "square",
    "triangle",
    "plus",
    "x_cross",
    "star",
    "crescent",
    "bars",
    "diamond",
]

# Background name -> domain index stored in the ``domain`` tag. ``background="mixed"`` draws one of
# these per image.
BACKGROUNDS: dict[str, int] = {"plain": 0, "coloured": 1, "textured": 2}
MIXED = "mixed"

# Values of ``object_texture``: how the texture class of each object's fill is chosen.
OBJECT_TEXTURES: tuple[str, ...] = ("none", "class", "random", "conflict")

NAMED_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 0.8, 0.0),
    "blue": (0.0, 0.2, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "yellow": (1.0, 0.9, 0.0),
}

# object_colour="class": one fixed, distinct colour per class (colour alone predicts the class).
CLASS_COLOURS: np.ndarray = np.array(
    [
        (0.90, 0.10, 0.10),  # red
        (0.10, 0.75, 0.10),  # green
        (0.15, 0.30, 0.95),  # blue
        (0.95, 0.90, 0.10),  # yellow
        (0.90, 0.10, 0.85),  # magenta
        (0.10, 0.85, 0.90),  # cyan
        (1.00, 0.55, 0.00),  # orange
        (0.50, 0.15, 0.75),  # purple
        (1.00, 1.00, 1.00),  # white
        (0.00, 0.00, 0.00),  # black
    ],
    dtype=np.float32,
)

PLAIN_GREY = 0.5
OUTLINE_DARK = 0.08
OUTLINE_LIGHT = 0.92
MAX_ROTATION = math.radians(15.0)  # at jitter=1; keeps plus/x-cross and square/diamond apart
RADIUS_MEAN, RADIUS_SPREAD = 0.30, 0.08  # object radius in [0.22, 0.38] * size at jitter=1
MAX_OFFSET = 0.20  # centre offset up to +-20% of the side at jitter=1 (less for big objects)
NUM_BLOBS = 3
CHUNK = 1024  # images rendered at a time (bounds memory; fixed, so results do not depend on it)
EXTRA_STREAM_KEY = 0x7E57  # spawn-key suffix of each split's second stream (see _generate)

# groups > 0: the style of group g of G (see the ``shapes`` docstring for the table).
MAX_GROUPS = 8
GROUP_HUE_JITTER = 0.25  # background hue within +-0.25 / G of g / G: disjoint hue ranges
GROUP_FREQ_BANDS = ((1.5, 2.5), (3.5, 5.0))  # grating cycles per side: even g low, odd g high
GROUP_PLAIN_SV = (0.6, 0.65)  # saturation, value of the plain background's group colour

# object_texture: fill pattern periods in pixels at size <= 32 (scaled by size / 32 above it);
# the pattern alternates between the object's colour and a contrasting version of it.
TEXTURE_DARKEN = 0.25  # light fills (luminance > 0.5): second colour = 0.25 * colour
TEXTURE_LIGHTEN = 0.75  # dark fills: second colour = colour + 0.75 * (1 - colour)


# --------------------------------------------------------------------------- class inside-tests
# Each takes object coordinates (x to the right, y downwards, object radius 1) and returns a bool
# array: True where the pixel centre lies inside the object.


def _disk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x * x + y * y <= 0.90**2


def _ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r2 = x * x + y * y
    return (r2 <= 1.0) & (r2 >= 0.52**2)


def _square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(x), np.abs(y)) <= 0.72


def _triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Equilateral, pointing up, circumradius 1 about its centroid: three half-planes.
    inside = y <= 0.5
    for a in (math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
        inside &= x * math.cos(a) + y * math.sin(a) <= 0.5
    return inside


def _cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ax, ay = np.abs(x), np.abs(y)
    return ((ax <= 0.28) & (ay <= 0.95)) | ((ay <= 0.28) & (ax <= 0.95))


def _plus(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _cross(x, y)


def _x_cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c = math.sqrt(0.5)
    return _cross(c * (x + y), c * (x - y))


_STAR_POINTS, _STAR_INNER = 5, 0.48


def _star(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Five-pointed star, one point up: fold the angle into one half-sector [0, pi/5] (0 = outer
    # vertex A, pi/5 = inner vertex B) and test the origin side of the edge A-B.
    sector = 2 * math.pi / _STAR_POINTS
    phi = np.mod(np.arctan2(y, x) + math.pi / 2, sector)
    psi = sector / 2 - np.abs(phi - sector / 2)
    rho = np.sqrt(x * x + y * y)
    qx, qy = rho * np.cos(psi), rho * np.sin(psi)
    bx, by = _STAR_INNER * math.cos(sector / 2), _STAR_INNER * math.sin(sector / 2)
    ex, ey = bx - 1.0, by
    return ex * qy - ey * (qx - 1.0) >= 0.0


def _crescent(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # A disk with an offset disk cut out, opening to the right; shifted so that its bounding box
    # is centred (tips at x = 0.51 - 0.22 from the outer disk's centre).
    xs = x - 0.22
    return (xs * xs + y * y <= 0.95**2) & ((xs - 0.5) ** 2 + y * y > 0.80**2)


def _bars(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (ax >= 0.20) & (ax <= 0.62) & (np.abs(y) <= 0.90)


def _diamond(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # A tall rhombus (not a rotated square, so it stays distinct from "square").
    return np.abs(x) / 0.62 + np.abs(y) / 0.98 <= 1.0


_INSIDE: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = [
    _disk,
    _ring,
    _square,
    _triangle,
    _plus,
    _x_cross,
    _star,
    _crescent,
    _bars,
    _diamond,
]


# ------------------------------------------------------------------------------ fill textures
# Each takes pattern coordinates in pixels at size 32, in image coordinates shifted by a random
# per-image offset (x has shape (n, 1, s), y (n, s, 1)), and returns a bool array: True where the
# fill takes the second (contrasting) colour. Every period is a whole number of pixels, so every
# image shows the same pixel-exact pattern whatever its offset.


def _stripes(u: np.ndarray, period: float) -> np.ndarray:
    return np.mod(u, period) < 0.5 * period


def _full(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.broadcast_to(a, np.broadcast_shapes(x.shape, y.shape))


def _tex_h(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _full(_stripes(y, 4.0), x, y)


def _tex_d45(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _stripes(x + y, 4.0)  # constant along x + y: runs like "/" (y is downwards)


def _tex_v(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _full(_stripes(x, 4.0), x, y)


def _tex_d135(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _stripes(x - y, 4.0)  # constant along x - y: runs like a backslash


def _tex_coarse_h(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _full(_stripes(y, 6.0), x, y)


def _tex_coarse_v(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _full(_stripes(x, 6.0), x, y)


def _tex_checker(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _stripes(x, 4.0) != _stripes(y, 4.0)


def _tex_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _stripes(x, 4.0) & _stripes(y, 4.0)


def _tex_fine_checker(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _stripes(x, 2.0) != _stripes(y, 2.0)


def _tex_grid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.mod(x, 4.0) < 1.0) | (np.mod(y, 4.0) < 1.0)


# Texture k is class k's texture under object_texture="class" (see the shapes docstring).
TEXTURE_NAMES: list[str] = [
    "stripes_h",
    "stripes_d45",
    "stripes_v",
    "stripes_d135",
    "coarse_stripes_h",
    "coarse_stripes_v",
    "checker",
    "dots",
    "fine_checker",
    "grid",
]

#: the names of the tags' values: ``domain`` (the background) and ``texture`` (-1: none)
TAG_LABELS: dict[str, dict[int, str]] = {
    "domain": {v: k for k, v in BACKGROUNDS.items()},
    "texture": {**dict(enumerate(TEXTURE_NAMES)), -1: "none"},
}

_TEXTURES: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = [
    _tex_h,
    _tex_d45,
    _tex_v,
    _tex_d135,
    _tex_coarse_h,
    _tex_coarse_v,
    _tex_checker,
    _tex_dots,
    _tex_fine_checker,
    _tex_grid,
]


# --------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Config:
    size: int
    num_classes: int
    background: str
    object_colour: str
    jitter: float
    background_cue: float
    distractors: int
    noise: float
    outline: bool
    groups: int = 0
    object_texture: str = "none"
    stylized: float = 0.0
    group_rotation: tuple[float, ...] = ()


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n,) hue in [0, 1), saturation, value -> (n, 3) RGB."""
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0, 6.0)
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _group_hue(group: np.ndarray, u: np.ndarray, groups: int, width: float) -> np.ndarray:
    """Hue in [0, 1) of group ``g``: g / G plus ``width`` / G times ``u`` - 1/2 (u in [0, 1))."""
    return np.mod((group + width * (u - 0.5)) / groups, 1.0)


def _draw_extra(
    labels: np.ndarray, extra: np.random.Generator, cfg: _Config
) -> dict[str, np.ndarray]:
    """Per-image attributes from the split's second stream: ``domain``, ``group``, ``texture``
    (-1 when ``object_texture="none"``) and the texture offset ``texture_shift`` (n, 2) in
    pixels. One (n, 6) block of uniform doubles is drawn whatever the options, so each attribute
    depends only on the seed and on the option that uses it."""
    n, k = labels.shape[0], cfg.num_classes
    u = extra.random((n, 6))
    p: dict[str, np.ndarray] = {}
    if cfg.background == MIXED:
        p["domain"] = np.minimum((3 * u[:, 0]).astype(np.int64), 2)
    else:
        p["domain"] = np.full(n, BACKGROUNDS[cfg.background], dtype=np.int64)
    p["group"] = np.minimum((cfg.groups * u[:, 1]).astype(np.int64), max(cfg.groups - 1, 0))
    random_texture = np.minimum((k * u[:, 2]).astype(np.int64), k - 1)
    p["stylized"] = extra.random(n) < cfg.stylized  # drawn after the block: moves nothing above
    if cfg.object_texture == "class":
        p["texture"] = np.where(p["stylized"], random_texture, labels.astype(np.int64))
    elif cfg.object_texture == "random":
        p["texture"] = random_texture
    elif cfg.object_texture == "conflict":
        offset = 1 + np.minimum(((k - 1) * u[:, 3]).astype(np.int64), k - 2)
        p["texture"] = (labels + offset) % k
    else:
        p["texture"] = np.full(n, -1, dtype=np.int64)
    p["texture_shift"] = 12.0 * u[:, 4:6]  # a multiple of every period (4 and 6 pixels)
    return p


def _draw_params(
    labels: np.ndarray, rng: np.random.Generator, cfg: _Config, extra: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-image rendering parameters, drawn in a fixed order whatever the options.

    Returns centre ``cx``/``cy`` (pixels), ``radius`` (pixels), ``rotation`` (radians), ``colour``
    (n, 3) fill, ``outline_colour`` (n,), ``texture_colour`` (n, 3) (the fill pattern's second
    colour), ``bg_colour`` (n, 3) (the base colour of every background, plain included), grating
    ``grating_angle`` (the direction, in radians, along which the grating varies; x right, y
    down), ``grating_tied`` (bool; only ever true on textured backgrounds), ``grating_freq``
    (cycles per image side), ``grating_phase``, ``grating_amp`` (n, 3), blob centres/sigmas/colours
    and stroke endpoints/colours from ``rng``; ``domain``, ``group``, ``texture`` and
    ``texture_shift`` from ``extra`` (:func:`_draw_extra`). Options change how draws map to
    parameters, never which draws are made (except the number of strokes, drawn last).
    """
    n, size, k = labels.shape[0], cfg.size, cfg.num_classes
    p = _draw_extra(labels, extra, cfg)
    domain, group, groups = p["domain"], p["group"], cfg.groups

    # Object geometry: uniform in [-1, 1], scaled by jitter (jitter=0: centred, fixed, upright).
    u = rng.uniform(-1.0, 1.0, size=(n, 4))
    radius = size * (RADIUS_MEAN + RADIUS_SPREAD * cfg.jitter * u[:, 2])
    bound = np.clip(0.5 * size - 0.95 * radius, 0.0, MAX_OFFSET * size) * cfg.jitter
    p["radius"] = radius
    p["cx"] = 0.5 * size + bound * u[:, 0]
    p["cy"] = 0.5 * size + bound * u[:, 1]
    p["rotation"] = MAX_ROTATION * cfg.jitter * u[:, 3]
    if cfg.group_rotation:  # each group's objects turned by its extra angle (no new draws)
        p["rotation"] = p["rotation"] + np.radians(np.asarray(cfg.group_rotation))[group]

    # Object colour (groups > 0: random hues come from the group's sector, opposite its
    # background hue).
    hsv = rng.random((n, 3))
    if cfg.object_colour == "random":
        hue = hsv[:, 0]
        if groups:
            hue = np.mod((group + hue) / groups + 0.5, 1.0)
        colour = _hsv_to_rgb(hue, 0.75 + 0.25 * hsv[:, 1], 0.75 + 0.25 * hsv[:, 2])
    elif cfg.object_colour == "class":
        colour = CLASS_COLOURS[labels].astype(np.float64)
    else:
        colour = np.broadcast_to(np.array(NAMED_COLOURS[cfg.object_colour]), (n, 3))
    p["colour"] = colour.astype(np.float32)
    luminance = p["colour"] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    p["outline_colour"] = np.where(luminance > 0.5, OUTLINE_DARK, OUTLINE_LIGHT).astype(np.float32)
    light = (luminance > 0.5)[:, None]
    p["texture_colour"] = np.where(
        light, TEXTURE_DARKEN * p["colour"], p["colour"] + TEXTURE_LIGHTEN * (1 - p["colour"])
    ).astype(np.float32)

    # Background base colour (one draw of 3 uniforms per image in every case).
    if cfg.background == MIXED or groups:
        u_bg = rng.random((n, 3))
        if groups:
            hue = _group_hue(group, u_bg[:, 0], groups, 2 * GROUP_HUE_JITTER)
            value = np.where(domain == 1, 0.45 + 0.40 * u_bg[:, 2], 0.50 + 0.25 * u_bg[:, 2])
            p["bg_colour"] = _hsv_to_rgb(hue, 0.45 + 0.30 * u_bg[:, 1], value)
        else:
            p["bg_colour"] = np.where(
                (domain == 1)[:, None], 0.15 + 0.70 * u_bg, 0.25 + 0.50 * u_bg
            )
    elif cfg.background == "coloured":
        p["bg_colour"] = rng.uniform(0.15, 0.85, size=(n, 3))
    else:
        p["bg_colour"] = rng.uniform(0.25, 0.75, size=(n, 3))
    plain = domain == 0
    if groups:
        sv = np.full(n, GROUP_PLAIN_SV[0]), np.full(n, GROUP_PLAIN_SV[1])
        plain_colour = _hsv_to_rgb(group / groups, *sv)
    else:
        plain_colour = np.full((n, 3), PLAIN_GREY)
    p["bg_colour"] = np.where(plain[:, None], plain_colour, p["bg_colour"])

    random_angle = rng.uniform(0.0, math.pi, size=n)
    if groups:  # the group's orientation band: width pi / (2 G) about g * pi / G
        random_angle = math.pi * _group_hue(group, random_angle / math.pi, groups, 0.5)
    p["grating_tied"] = (rng.random(n) < cfg.background_cue) & (domain == 2)
    p["grating_angle"] = np.where(p["grating_tied"], labels * (math.pi / k), random_angle)
    p["grating_freq"] = rng.uniform(1.5, 4.0, size=n)
    if groups:  # the group's frequency band (low for even groups, high for odd ones)
        lo, hi = np.array(GROUP_FREQ_BANDS)[group % 2].T
        p["grating_freq"] = lo + (hi - lo) * (p["grating_freq"] - 1.5) / 2.5
    p["grating_phase"] = rng.uniform(0.0, 2 * math.pi, size=n)
    p["grating_amp"] = rng.uniform(0.06, 0.16, size=(n, 3))
    p["blob_centre"] = rng.uniform(0.0, size, size=(n, NUM_BLOBS, 2))
    p["blob_sigma"] = rng.uniform(0.12, 0.30, size=(n, NUM_BLOBS)) * size
    p["blob_colour"] = rng.uniform(-0.2, 0.2, size=(n, NUM_BLOBS, 3))

    # Distractor strokes (drawn last: their number does not move the draws above).
    m = cfg.distractors
    mid = rng.uniform(0.0, size, size=(n, m, 2))
    half = 0.5 * size * rng.uniform(0.25, 0.6, size=(n, m))
    theta = rng.uniform(0.0, math.pi, size=(n, m))
    direction = np.stack([np.cos(theta), np.sin(theta)], axis=-1) * half[..., None]
    p["stroke_start"] = mid - direction
    p["stroke_end"] = mid + direction
    p["stroke_colour"] = rng.random((n, m, 3))
    return p


# ---------------------------------------------------------------------------------- rendering


def _object_mask(labels: np.ndarray, p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """(n, size, size) bool: pixel centres inside each image's object."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    inv_r = (1.0 / p["radius"]).astype(np.float32)
    gx = (grid[None, None, :] - p["cx"].astype(np.float32)[:, None, None]) * inv_r[:, None, None]
    gy = (grid[None, :, None] - p["cy"].astype(np.float32)[:, None, None]) * inv_r[:, None, None]
    cos = np.cos(p["rotation"]).astype(np.float32)[:, None, None]
    sin = np.sin(p["rotation"]).astype(np.float32)[:, None, None]
    # Rotate the pixel into object coordinates (object rotated by +rotation).
    x = cos * gx + sin * gy
    y = cos * gy - sin * gx
    mask = np.zeros((labels.shape[0], size, size), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[idx] = _INSIDE[c](x[idx], y[idx])
    return mask


def _inner_border(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image edge is not a border)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    interior = (
        padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    )
    return mask & ~interior


def _background(p: dict[str, np.ndarray], cfg: _Config) -> np.ndarray:
    """(n, 3, size, size) float32 background in [0, 1], each image in its own domain's style."""
    domain = p["domain"]
    present = np.unique(domain)
    if present.size == 1:
        return _BACKGROUND_RENDERERS[int(present[0])](p, cfg)
    img = np.empty((domain.shape[0], 3, cfg.size, cfg.size), dtype=np.float32)
    for d in present:
        idx = np.flatnonzero(domain == d)
        img[idx] = _BACKGROUND_RENDERERS[int(d)]({k: v[idx] for k, v in p.items()}, cfg)
    return img


def _uniform_background(p: dict[str, np.ndarray], cfg: _Config) -> np.ndarray:
    """Domains 0 (plain) and 1 (coloured): each image filled with its ``bg_colour``."""
    size, n = cfg.size, p["cx"].shape[0]
    img = np.empty((n, 3, size, size), dtype=np.float32)
    img[...] = p["bg_colour"].astype(np.float32)[:, :, None, None]
    return img


def _textured_background(p: dict[str, np.ndarray], cfg: _Config) -> np.ndarray:
    """Domain 2: base colour + grating + colour blobs + distractor strokes."""
    size = cfg.size
    n = p["cx"].shape[0]
    f32 = np.float32
    img = _uniform_background(p, cfg)

    grid = np.arange(size, dtype=f32) + 0.5
    gx, gy = grid[None, None, :], grid[None, :, None]
    # Texture components (n, 1 + NUM_BLOBS, size, size), mixed into colour in one matmul:
    # an oriented sinusoidal grating (sin(a + b) split into separable factors) and
    # low-frequency colour blobs (separable Gaussians).
    components = np.empty((n, 1 + NUM_BLOBS, size, size), dtype=f32)
    w = 2 * math.pi * p["grating_freq"] / size
    ax = (w * np.cos(p["grating_angle"]))[:, None, None] * gx + p["grating_phase"][:, None, None]
    ay = (w * np.sin(p["grating_angle"]))[:, None, None] * gy
    np.multiply(np.sin(ax), np.cos(ay), out=components[:, 0], casting="same_kind")
    components[:, 0] += np.cos(ax).astype(f32) * np.sin(ay).astype(f32)
    for b in range(NUM_BLOBS):
        c = p["blob_centre"][:, b]
        s2 = (-0.5 / p["blob_sigma"][:, b] ** 2)[:, None, None]
        bx = np.exp(s2 * (gx - c[:, 0, None, None]) ** 2).astype(f32)
        by = np.exp(s2 * (gy - c[:, 1, None, None]) ** 2).astype(f32)
        np.multiply(by, bx, out=components[:, 1 + b])
    weights = np.concatenate([p["grating_amp"][:, :, None], p["blob_colour"].transpose(0, 2, 1)], 2)
    mixed = np.matmul(weights.astype(f32), components.reshape(n, 1 + NUM_BLOBS, size * size))
    img += mixed.reshape(n, 3, size, size)
    np.clip(img, 0.0, 1.0, out=img)
    # Distractor strokes: 1-pixel-wide line segments of random colours, rasterised by sampling
    # points along each segment (step < 0.5 px) and painting the pixels they fall in.
    t = np.linspace(0.0, 1.0, 2 * size + 1)[None, :]
    image_index = np.broadcast_to(np.arange(n)[:, None], (n, t.shape[1]))
    for s in range(cfg.distractors):
        a, b = p["stroke_start"][:, s], p["stroke_end"][:, s]
        col = np.floor(a[:, 0, None] + t * (b[:, 0, None] - a[:, 0, None])).astype(np.intp)
        row = np.floor(a[:, 1, None] + t * (b[:, 1, None] - a[:, 1, None])).astype(np.intp)
        keep = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        i = image_index[keep]
        img[i, :, row[keep], col[keep]] = p["stroke_colour"][i, s].astype(f32)
    return img


_BACKGROUND_RENDERERS: list[Callable[[dict[str, np.ndarray], _Config], np.ndarray]] = [
    _uniform_background,
    _uniform_background,
    _textured_background,
]


def _texture_pattern(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """(n, size, size) bool: where each image's fill texture takes its second colour."""
    texture = p["texture"]
    scale = np.float32(32.0 / max(size, 32))  # pattern pixels per image pixel (periods scale up)
    grid = (np.arange(size, dtype=np.float32) + 0.5) * scale
    shift = p["texture_shift"].astype(np.float32)
    out = np.empty((texture.shape[0], size, size), dtype=bool)
    for t in np.unique(texture):
        idx = np.flatnonzero(texture == t)
        x = grid[None, None, :] + shift[idx, 0, None, None]
        y = grid[None, :, None] + shift[idx, 1, None, None]
        out[idx] = _TEXTURES[t](x, y)
    return out


def _render(
    labels: np.ndarray, p: dict[str, np.ndarray], cfg: _Config, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Render images (n, 3, s, s) float32 in [0, 1] and foreground masks (n, s, s) bool."""
    mask = _object_mask(labels, p, cfg.size)
    img = _background(p, cfg)
    outline = _inner_border(mask) if cfg.outline else np.zeros_like(mask)
    fill = mask & ~outline
    second = _texture_pattern(p, cfg.size) & fill if cfg.object_texture != "none" else None
    for ch in range(3):
        np.copyto(img[:, ch], p["colour"][:, ch, None, None], where=fill)
        if second is not None:
            np.copyto(img[:, ch], p["texture_colour"][:, ch, None, None], where=second)
        np.copyto(img[:, ch], p["outline_colour"][:, None, None], where=outline)
    if cfg.noise > 0:
        img += np.float32(cfg.noise) * rng.standard_normal(img.shape, dtype=np.float32)
        np.clip(img, 0.0, 1.0, out=img)
    return img, mask


def _generate(
    n: int, seed_seq: np.random.SeedSequence, cfg: _Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One split: images, masks, labels and the per-image parameters used to render them."""
    rng = np.random.Generator(np.random.PCG64(seed_seq))
    # The second stream: an explicit child key (not seed_seq.spawn, whose result depends on how
    # often it was called before), so one seed sequence always gives the same two streams.
    extra_seq = np.random.SeedSequence(
        seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, EXTRA_STREAM_KEY)
    )
    extra = np.random.Generator(np.random.PCG64(extra_seq))
    labels = rng.permutation(np.arange(n, dtype=np.int64) % cfg.num_classes)
    params = _draw_params(labels, rng, cfg, extra)
    images = np.empty((n, 3, cfg.size, cfg.size), dtype=np.float32)
    masks = np.empty((n, cfg.size, cfg.size), dtype=bool)
    for start in range(0, n, CHUNK):
        sl = slice(start, min(start + CHUNK, n))
        images[sl], masks[sl] = _render(labels[sl], {k: v[sl] for k, v in params.items()}, cfg, rng)
    return images, masks, labels, params


def _config(
    size: Any,
    num_classes: Any,
    background: Any,
    object_colour: Any,
    jitter: Any,
    background_cue: Any,
    distractors: Any,
    noise: Any,
    outline: Any,
    groups: Any = 0,
    object_texture: Any = "none",
    stylized: Any = 0.0,
    group_rotation: Any = None,
) -> _Config:
    size = check_int("size", size, 8)
    num_classes = check_int("num_classes", num_classes, 2, len(CLASS_NAMES))
    known_backgrounds = [*BACKGROUNDS, MIXED]
    if background not in known_backgrounds:
        raise ValueError(
            f"shapes: unknown background {background!r} (known: {', '.join(known_backgrounds)})"
        )
    known_colours = ["random", "class", *NAMED_COLOURS]
    if object_colour not in known_colours:
        raise ValueError(
            f"shapes: unknown object_colour {object_colour!r} (known: {', '.join(known_colours)})"
        )
    jitter = check_float("jitter", jitter, 0.0, 1.0)
    background_cue = check_float("background_cue", background_cue, 0.0, 1.0)
    if background_cue > 0 and background not in ("textured", MIXED):
        raise ValueError(
            f"shapes: background_cue > 0 needs background='textured' or 'mixed', got {background!r}"
        )
    distractors = check_int("distractors", distractors, 0)
    noise = check_float("noise", noise, 0.0)
    if not isinstance(outline, bool):
        raise ValueError(f"shapes: outline must be a bool, got {outline!r}")
    groups = check_int("groups", groups, 0, MAX_GROUPS)
    if groups == 1:
        raise ValueError(f"shapes: groups must be 0 (off) or in [2, {MAX_GROUPS}], got 1")
    if object_texture not in OBJECT_TEXTURES:
        raise ValueError(
            f"shapes: unknown object_texture {object_texture!r} "
            f"(known: {', '.join(OBJECT_TEXTURES)})"
        )
    stylized = check_float("stylized", stylized, 0.0, 1.0)
    if stylized > 0 and object_texture != "class":
        raise ValueError(
            f"shapes: stylized > 0 needs object_texture='class', got {object_texture!r}"
        )
    rotation: tuple[float, ...] = ()
    if group_rotation is not None:
        if not isinstance(group_rotation, (list, tuple)) or len(group_rotation) != groups:
            raise ValueError(
                f"shapes: group_rotation needs one angle in degrees per group ({groups}), got "
                f"{group_rotation!r}"
            )
        rotation = tuple(
            check_float(f"group_rotation[{g}]", a, -360.0, 360.0)
            for g, a in enumerate(group_rotation)
        )
    return _Config(
        size, num_classes, background, object_colour, jitter, background_cue, distractors, noise,
        outline, groups, object_texture, stylized, rotation,
    )  # fmt: skip


def _footprint(a: Mapping[str, Any]) -> tuple[int, int]:
    """Examples and bytes per example: float32 images (3, size, size) and bool masks."""
    pixels = a["size"] ** 2
    return a["n_train"] + a["n_test"], example_bytes(3 * pixels, 4, pixels)


@register_dataset("shapes", modality="image", footprint=_footprint)
def shapes(
    n_train: int = 5000,
    n_test: int = 2000,
    size: int = 32,
    seed: int = 0,
    num_classes: int = 10,
    *,
    background: str = "textured",
    object_colour: str = "random",
    jitter: float = 1.0,
    background_cue: float = 0.0,
    distractors: int = 4,
    noise: float = 0.03,
    outline: bool = True,
    groups: int = 0,
    object_texture: str = "none",
    stylized: float = 0.0,
    group_rotation: list[float] | None = None,
) -> DataSplits:
    """Procedurally generated RGB images of 10 object classes with exact foreground masks.

    Classes (the first ``num_classes`` are used): disk, ring, square, triangle, plus, x_cross,
    star, crescent, bars (two parallel vertical bars), diamond (a tall rhombus).

    Args:
        n_train, n_test: number of train / test images (labels balanced over the classes).
        size: image side in pixels (>= 8).
        seed: non-negative integer; the same seed gives bit-identical tensors. Train and test
            come from separate random streams spawned from it.
        num_classes: 2..10.
        background: ``"plain"`` (uniform mid grey, domain 0), ``"coloured"`` (a random uniform
            colour per image, domain 1), ``"textured"`` (random base colour + a random oriented
            sinusoidal grating + low-frequency colour blobs + ``distractors`` 1-pixel line
            strokes of random colours, domain 2) or ``"mixed"`` (each image's domain drawn
            uniformly and independently from 0, 1, 2 and rendered as that background; the
            ``domain`` tag holds each image's own index). Labels, geometry and object colours are
            the same as with any single background for the same seed.
        object_colour: ``"random"`` (a random saturated colour per image), ``"class"`` (a fixed
            colour per class, so colour alone predicts the class) or one of ``"red"``,
            ``"green"``, ``"blue"``, ``"white"``, ``"black"``, ``"yellow"``.
        jitter: in [0, 1]; scales the random centre offset (up to ~20% of the side), object
            radius (in [0.22, 0.38] * size at 1) and rotation (up to +-15 degrees at 1).
            0 renders every object centred, at radius 0.3 * size, upright.
        background_cue: in [0, 1]; the probability that an image's grating orientation is tied
            to its class (class k varies along angle k * pi / num_classes) instead of random:
            spurious background evidence for the class. Only the ``"textured"`` background has a
            grating, so a value > 0 needs ``"textured"`` or ``"mixed"`` (where it applies to the
            textured images only).
        distractors: number of random strokes on textured backgrounds (never in the mask; the
            object is painted over them).
        noise: standard deviation of per-pixel Gaussian noise added at the end (then clipped).
        outline: draw a 1-pixel outline on the object's inner border (dark on light fills, light
            on dark fills) so the object stays visible on any background; it is part of the mask.
        groups: 0 (off) or G in 2..8: a nuisance group g drawn uniformly and independently of
            the class for each image (tag ``group``). Group g of G has a fixed style, unrelated
            to the class:

            =================  ======================================================
            background hue     g / G +- 0.25 / G (disjoint ranges); coloured: saturation
                               0.45-0.75, value 0.45-0.85; textured base: value
                               0.50-0.75; plain: uniform HSV(g / G, 0.6, 0.65)
                               instead of grey
            grating direction  g * pi / G +- pi / (4 G) (textured images whose grating
                               is not tied to the class by ``background_cue``)
            grating frequency  1.5-2.5 cycles per side for even g, 3.5-5.0 for odd g
            object hue         ``object_colour="random"`` only: in the sector
                               [g / G, (g + 1) / G) turned by half a turn, opposite
                               the group's background hue; class and named colours
                               are unchanged
            =================  ======================================================

            With G = 7: background hues red, orange, yellow-green, spring green, azure, blue-
            violet, magenta. Blobs, strokes and the object's geometry do not depend on the group.
        object_texture: the object's fill (the outline stays as it is). ``"none"``: flat fill.
            Otherwise the fill alternates between the object's colour and a contrasting second
            colour (0.25 * colour for fills of luminance > 0.5, else colour + 0.75 * (1 -
            colour)) in a pattern of one of K = ``num_classes`` texture classes (tag
            ``texture``): ``"class"`` (texture k for class k: shape and texture both predict the
            label), ``"random"`` (uniform, independent of the label: only the shape predicts),
            ``"conflict"`` (label + U{1..K-1} mod K, never the label's texture: cue-conflict
            inputs). Textures (periods in pixels at size <= 32, scaled by size / 32 above;
            evaluated in image coordinates, not rotating with the object, with a random
            per-image offset; the mask does not depend on this option):

            ==  ================  =================================================
            0   stripes_h         horizontal stripes, period 4 (2 on, 2 off)
            1   stripes_d45       diagonal stripes running like "/", period 4 on each axis
            2   stripes_v         vertical stripes, period 4
            3   stripes_d135      diagonal stripes running like "\\", period 4 on each axis
            4   coarse_stripes_h  horizontal stripes, period 6 (3 on, 3 off)
            5   coarse_stripes_v  vertical stripes, period 6
            6   checker           checkerboard of 2-pixel cells
            7   dots              2x2-pixel dots on a 4-pixel grid
            8   fine_checker      checkerboard of 1-pixel cells
            9   grid              1-pixel lines every 4 pixels in both directions
            ==  ================  =================================================

            A horizontal flip swaps textures 1 and 3, and resizing blurs the 1-pixel patterns,
            so don't use flip or resize augmentations on texture-cue data.
        stylized: in [0, 1], only with ``object_texture="class"``: the probability that an
            image's texture is drawn at random instead of from its class (the "stylized" images
            a shape-biased teacher trains on; tag ``stylized`` 1, else 0). With
            ``teacher_subset``/``student_subset`` on that tag one dataset serves a teacher
            trained on stylized images and students trained on standard ones.
        group_rotation: one angle in degrees per group (needs ``groups``): every object of group
            g is turned by ``group_rotation[g]`` on top of its jitter rotation, e.g.
            ``[0, 0, 45, 0, ...]`` makes group 2 a pose a teacher that never saw it misreads
            (a plus turned by 45 degrees is an x_cross). Changes no draw: the other images are
            unchanged.

    Returns:
        :class:`DataSplits` of image datasets: inputs float32 (N, 3, size, size) in [0, 1],
        labels int64, foreground bool (N, size, size) exactly the object's pixels, and int64
        tags ``domain`` (each image's background index: plain 0, coloured 1, textured 2),
        ``group`` (only when ``groups`` > 0), ``texture`` (only when ``object_texture`` is
        not ``"none"``) and ``stylized`` (only when ``stylized`` > 0).
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    seed = check_int("seed", seed, 0)
    cfg = _config(
        size, num_classes, background, object_colour, jitter, background_cue, distractors, noise,
        outline, groups, object_texture, stylized, group_rotation,
    )  # fmt: skip
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    splits = []
    for n, seq in ((n_train, train_seq), (n_test, test_seq)):
        images, masks, labels, params = _generate(n, seq, cfg)
        tags = {"domain": torch.from_numpy(params["domain"])}
        if cfg.groups:
            tags["group"] = torch.from_numpy(params["group"])
        if cfg.object_texture != "none":
            tags["texture"] = torch.from_numpy(params["texture"])
        if cfg.stylized > 0:
            tags["stylized"] = torch.from_numpy(params["stylized"].astype(np.int64))
        splits.append(
            TensorDataset(
                inputs=torch.from_numpy(images),
                labels=torch.from_numpy(labels),
                foreground=torch.from_numpy(masks),
                num_classes=cfg.num_classes,
                modality="image",
                tags=tags,
                tag_labels={k: v for k, v in TAG_LABELS.items() if k in tags},
                class_names=CLASS_NAMES[: cfg.num_classes],
                annotation="the pixels of the drawn object are foreground (exact masks)",
            )
        )
    return DataSplits(train=splits[0], test=splits[1])
