"""``points``: generated 3D point clouds of shape classes with labelled background clutter.

Each cloud holds P points: ``P - round(clutter · P)`` object points, sampled uniformly (by area)
on the surface of the class's shape, and ``round(clutter · P)`` clutter points (kdscope's choice:
object datasets have no background, so clutter is added to every split and marked background).

Object points, per cloud:

1. Sample on the canonical shape (z is the vertical axis): each point picks a part with
   probability area_part / Σ area, then a uniform point on that part's surface. A composition's
   surface is the union of its parts' full surfaces (faces hidden inside another part included).
2. Rotate: x ← R x with R a uniform rotation about z (``rotation="z"``), a uniform rotation of
   SO(3) (``"so3"``, from a uniform unit quaternion) or the identity (``"none"``).
3. Normalise: x ← (x − x̄) / max_i ‖x_i − x̄‖ (centroid at the origin, inside the unit sphere),
   computed on the object points only, before any clutter exists.
4. Scale and jitter: x ← a · x + ε, a ~ U(min_scale, 1), ε ~ N(0, jitter² I₃) per point.

Clutter points live in the cube [−E, E]³, E = 1.2 (the unit sphere's bounding box enlarged by
20 %): with ``blobs = b > 0`` half of them (rounded down) are split evenly over b distractor
blobs, c_k + N(0, 0.05² I₃) with centres c_k ~ U[−E, E]³, the rest are uniform in the cube. The
cloud is not renormalised after clutter is added, so clutter never changes the object's scale.
Finally the points of every cloud are put in a random order, so foreground points have no
fixed rows.

Generation is vectorised over the clouds of a class and the points of a part; it is
deterministic from ``seed``: train and test draw from separate ``numpy.random.Generator(PCG64)``
streams spawned from ``SeedSequence(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, check_float, check_int, example_bytes
from kdscope.datasets.registry import register_dataset

__all__ = ["CLASS_NAMES", "ROTATIONS", "add_clutter", "cloud_dataset", "normalise", "points"]

ROTATIONS: tuple[str, ...] = ("none", "z", "so3")
CLUTTER_EXTENT = 1.2  # clutter cube half-side E: the unit sphere's bounding box enlarged by 20 %
BLOB_STD = 0.05  # standard deviation of a distractor blob's points

Sampler = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class _Part:
    """One primitive of a shape: ``sample(rng, n)`` gives (n, 3) uniform surface points about the
    origin, ``area`` its surface area, ``offset`` where its origin sits in the shape."""

    sample: Sampler
    area: float
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _angle(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.0, 2.0 * math.pi, n)


def _disk(rng: np.random.Generator, n: int, r: float, z: float) -> np.ndarray:
    """Uniform on the disk of radius r at height z: radius r·sqrt(u) has density ∝ radius."""
    rho, phi = r * np.sqrt(rng.random(n)), _angle(rng, n)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), np.full(n, z)], 1)


def _sphere(r: float, at: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> _Part:
    """Sphere of radius r: a normalised standard normal vector is uniform on the sphere."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        v = rng.standard_normal((n, 3))
        return r * v / np.linalg.norm(v, axis=1, keepdims=True)

    return _Part(sample, 4.0 * math.pi * r * r, at)


def _box(
    half: tuple[float, float, float], at: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> _Part:
    """Axis-aligned box with half-sides h: the face normal to axis a (area 4 h_b h_c, two of
    them) is drawn ∝ its area, then a uniform point on it."""
    h = np.asarray(half, dtype=np.float64)
    face_area = 4.0 * np.array([h[1] * h[2], h[0] * h[2], h[0] * h[1]])

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        axis = rng.choice(3, size=n, p=face_area / face_area.sum())
        out = rng.uniform(-1.0, 1.0, (n, 3))
        out[np.arange(n), axis] = rng.choice([-1.0, 1.0], size=n)
        return out * h

    return _Part(sample, 2.0 * float(face_area.sum()), at)


def _cylinder(r: float, h: float, at: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> _Part:
    """Capped cylinder about z, radius r, z in [−h, h]: side (area 4πrh) or a cap (πr² each)."""
    side, cap = 4.0 * math.pi * r * h, math.pi * r * r

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        phi = _angle(rng, n)
        out = np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(-h, h, n)], 1)
        on_cap = rng.random(n) < 2.0 * cap / (side + 2.0 * cap)
        k = int(on_cap.sum())
        out[on_cap] = _disk(rng, k, r, 0.0)
        out[on_cap, 2] = rng.choice([-h, h], size=k)
        return out

    return _Part(sample, side + 2.0 * cap, at)


def _cone(r: float, h: float) -> _Part:
    """Cone about z, base of radius r at z = −h, apex at z = h. On the side (area πr·l, slant
    l = sqrt(r² + 4h²)) the fraction t of the way from apex to base has density 2t: t = sqrt(u)."""
    side, base = math.pi * r * math.hypot(r, 2.0 * h), math.pi * r * r

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        t, phi = np.sqrt(rng.random(n)), _angle(rng, n)
        out = np.stack([r * t * np.cos(phi), r * t * np.sin(phi), h - 2.0 * h * t], 1)
        on_base = rng.random(n) < base / (side + base)
        out[on_base] = _disk(rng, int(on_base.sum()), r, -h)
        return out

    return _Part(sample, side + base)


def _torus(big: float, small: float) -> _Part:
    """Torus about z, tube radius ``small`` around a circle of radius ``big``. The area element
    is ∝ (big + small·cos θ) in the tube angle θ: θ is drawn by rejection against big + small."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        theta = np.empty(0)
        while theta.size < n:
            cand = _angle(rng, 2 * n)
            keep = rng.random(2 * n) * (big + small) < big + small * np.cos(cand)
            theta = np.concatenate([theta, cand[keep]])
        theta, phi = theta[:n], _angle(rng, n)
        rho = big + small * np.cos(theta)
        return np.stack([rho * np.cos(phi), rho * np.sin(phi), small * np.sin(theta)], 1)

    return _Part(sample, 4.0 * math.pi**2 * big * small)


_LEGS = [(sx * 1.0, sy * 0.6, -0.1) for sx in (-1, 1) for sy in (-1, 1)]

# Class name -> parts of its canonical shape (z up; sizes of order 1, normalised later).
SHAPES: dict[str, list[_Part]] = {
    "sphere": [_sphere(1.0)],
    "cube": [_box((1.0, 1.0, 1.0))],
    "cylinder": [_cylinder(0.6, 1.0)],
    "cone": [_cone(0.8, 1.0)],
    "torus": [_torus(1.0, 0.3)],
    "stacked_boxes": [_box((1.0, 1.0, 0.4), (0.0, 0.0, -0.4)), _box((0.5, 0.5, 0.4), (0, 0, 0.4))],
    "table": [_box((1.2, 0.8, 0.08), (0.0, 0.0, 0.58))]
    + [_box((0.08, 0.08, 0.6), a) for a in _LEGS],
    "l_shape": [_box((0.25, 0.25, 1.0), (-0.75, 0.0, 0.0)), _box((1.0, 0.25, 0.25), (0, 0, -0.75))],
    "dumbbell": [_sphere(0.5, (0, 0, -1.0)), _sphere(0.5, (0, 0, 1.0)), _cylinder(0.15, 0.6)],
    "snowman": [_sphere(0.6, (0.0, 0.0, -0.5)), _sphere(0.4, (0.0, 0.0, 0.5))],
}
CLASS_NAMES: list[str] = list(SHAPES)


def _surface(rng: np.random.Generator, parts: Sequence[_Part], n: int, m: int) -> np.ndarray:
    """(n, m, 3) points uniform on the union of the parts' surfaces: part ∝ area, then uniform
    on that part, then shifted by the part's offset."""
    area = np.array([part.area for part in parts])
    which = rng.choice(len(parts), size=n * m, p=area / area.sum())
    out = np.empty((n * m, 3))
    for k, part in enumerate(parts):
        sel = which == k
        out[sel] = part.sample(rng, int(sel.sum())) + np.asarray(part.offset)
    return out.reshape(n, m, 3)


def _rotations(rng: np.random.Generator, n: int, rotation: str) -> np.ndarray:
    """(n, 3, 3) rotation matrices: identity, uniform about z, or uniform on SO(3) (the matrix
    of a unit quaternion q = g / ‖g‖, g ~ N(0, I₄), which is uniform on the 3-sphere)."""
    if rotation == "none":
        return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    if rotation == "z":
        phi = _angle(rng, n)
        c, s, zero, one = np.cos(phi), np.sin(phi), np.zeros(n), np.ones(n)
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
        return np.stack([np.stack(r, -1) for r in rows], 1)
    q = rng.standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, -1) for r in rows], 1)


@dataclass(frozen=True)
class _Config:
    num_points: int
    num_classes: int
    clutter: float
    blobs: int
    rotation: str
    min_scale: float
    jitter: float


def _objects(rng: np.random.Generator, labels: np.ndarray, m: int, cfg: _Config) -> np.ndarray:
    """(n, m, 3) object points: sampled, rotated, normalised, scaled and jittered (steps 1-4 of
    the module docstring)."""
    n = len(labels)
    out = np.empty((n, m, 3))
    for k in range(cfg.num_classes):
        idx = np.flatnonzero(labels == k)
        out[idx] = _surface(rng, SHAPES[CLASS_NAMES[k]], len(idx), m)
    out = normalise(np.einsum("nij,nmj->nmi", _rotations(rng, n, cfg.rotation), out))
    out *= rng.uniform(cfg.min_scale, 1.0, n)[:, None, None]
    return out + cfg.jitter * rng.standard_normal(out.shape)


def _clutter(rng: np.random.Generator, n: int, c: int, blobs: int) -> np.ndarray:
    """(n, c, 3) clutter: ``c // 2`` points split evenly over ``blobs`` Gaussian blobs (when
    blobs > 0), the rest uniform in [−E, E]³."""
    in_blobs = c // 2 if blobs else 0
    uniform = rng.uniform(-CLUTTER_EXTENT, CLUTTER_EXTENT, (n, c - in_blobs, 3))
    if not in_blobs:
        return uniform
    centres = rng.uniform(-CLUTTER_EXTENT, CLUTTER_EXTENT, (n, blobs, 3))
    blob = np.arange(in_blobs) % blobs
    spread = BLOB_STD * rng.standard_normal((n, in_blobs, 3))
    return np.concatenate([centres[:, blob] + spread, uniform], 1)


def normalise(objects: np.ndarray) -> np.ndarray:
    """(n, m, 3) object points, each cloud normalised in place (step 3 of the module docstring):
    x ← (x − x̄) / max_i ‖x_i − x̄‖, so its centroid is the origin and its farthest point lies on
    the unit sphere. Returns ``objects``."""
    objects -= objects.mean(1, keepdims=True)
    objects /= np.linalg.norm(objects, axis=2).max(1)[:, None, None]
    return objects


def add_clutter(
    rng: np.random.Generator, objects: np.ndarray, c: int, blobs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Add ``c`` clutter points to each of the (n, m, 3) object clouds and shuffle the points of
    every cloud. Returns the clouds (n, m + c, 3) float32 and the foreground (n, m + c) bool,
    True on object points."""
    n, m = objects.shape[:2]
    clouds = np.concatenate([objects, _clutter(rng, n, c, blobs)], 1)
    foreground = np.broadcast_to(np.arange(m + c) < m, (n, m + c))
    order = rng.random((n, m + c)).argsort(1)
    clouds = np.take_along_axis(clouds, order[:, :, None], 1).astype(np.float32)
    return clouds, np.ascontiguousarray(np.take_along_axis(foreground, order, 1))


def cloud_dataset(
    clouds: np.ndarray, foreground: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> TensorDataset:
    """A ``"points"`` dataset: clouds (N, P, 3) float32, foreground (N, P) bool, labels (N,)."""
    return TensorDataset(
        inputs=torch.from_numpy(clouds),
        labels=torch.from_numpy(labels),
        foreground=torch.from_numpy(foreground),
        num_classes=len(class_names),
        modality="points",
        class_names=class_names,
        annotation=(
            "object points (sampled on the shape's surface) are foreground, the added clutter "
            "points background (kdscope's choice: object datasets have no background)"
        ),
    )


def _generate(
    n: int, seed_seq: np.random.SeedSequence, cfg: _Config
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split: clouds (n, P, 3) float32, foreground (n, P) bool and labels (n,) int64."""
    rng = np.random.Generator(np.random.PCG64(seed_seq))
    labels = rng.permutation(np.arange(n, dtype=np.int64) % cfg.num_classes)
    c = round(cfg.clutter * cfg.num_points)
    clouds, foreground = add_clutter(
        rng, _objects(rng, labels, cfg.num_points - c, cfg), c, cfg.blobs
    )
    return clouds, foreground, labels


def _footprint(a: Mapping[str, Any]) -> tuple[int, int]:
    """Examples and bytes per example: float32 clouds (num_points, 3) and bool flags."""
    return a["n_train"] + a["n_test"], example_bytes(3 * a["num_points"], 4, a["num_points"])


@register_dataset("points", modality="points", footprint=_footprint)
def points(
    n_train: int = 2000,
    n_test: int = 800,
    num_points: int = 256,
    seed: int = 0,
    num_classes: int = 8,
    *,
    clutter: float = 0.2,
    blobs: int = 2,
    rotation: str = "z",
    min_scale: float = 0.7,
    jitter: float = 0.01,
) -> DataSplits:
    """Generated point clouds of 10 shape classes with background clutter (see the module
    docstring for the generative model).

    Classes (the first ``num_classes`` are used): sphere, cube, cylinder, cone, torus,
    stacked_boxes (a small box on a flat one), table (a slab on four legs), l_shape (two bars),
    dumbbell (two spheres on a rod), snowman (two stacked spheres).

    Args:
        n_train, n_test: number of train / test clouds (labels balanced over the classes).
        num_points: P, points per cloud (>= 8).
        seed: non-negative integer; the same seed gives bit-identical tensors.
        num_classes: 2..10.
        clutter: in [0, 0.9]: the fraction of the P points that is clutter (background);
            exactly round(clutter · P) points of every cloud, on every split.
        blobs: number of distractor blobs per cloud holding half of the clutter points (0: all
            clutter uniform in the enlarged bounding box).
        rotation: ``"z"`` (uniform about the vertical axis), ``"so3"`` (uniform 3D rotation) or
            ``"none"``.
        min_scale: in (0, 1]: the object's radius after normalisation is U(min_scale, 1).
        jitter: standard deviation of the Gaussian noise added to each object point.

    Returns:
        :class:`DataSplits` of ``"points"`` datasets: inputs float32 (N, P, 3), labels int64,
        foreground bool (N, P), True on object points and False on clutter points; no tags.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    seed = check_int("seed", seed, 0)
    num_points = check_int("num_points", num_points, 8)
    num_classes = check_int("num_classes", num_classes, 2, len(CLASS_NAMES))
    clutter = check_float("clutter", clutter, 0.0, 0.9)
    blobs = check_int("blobs", blobs, 0)
    if rotation not in ROTATIONS:
        raise ValueError(f"points: unknown rotation {rotation!r} (known: {', '.join(ROTATIONS)})")
    min_scale = check_float("min_scale", min_scale, 0.0, 1.0)
    if min_scale == 0.0:
        raise ValueError("min_scale must be > 0, got 0.0")
    jitter = check_float("jitter", jitter, 0.0)
    cfg = _Config(num_points, num_classes, clutter, blobs, rotation, min_scale, jitter)
    train, test = (
        cloud_dataset(*_generate(n, seq, cfg), CLASS_NAMES[:num_classes])
        for n, seq in zip((n_train, n_test), np.random.SeedSequence(seed).spawn(2), strict=True)
    )
    return DataSplits(train=train, test=test)
