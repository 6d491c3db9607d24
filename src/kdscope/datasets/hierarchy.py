"""``hierarchy``: feature vectors of classes grouped into superclasses (docs/models_and_datasets.md,
'hierarchy').

The class structure is planted, so an analysis can check whether a teacher's soft labels, or a
student's logit layer, carry the class relations:

    superclass centres   mu_S ~ N(0, sigma_super^2 I_d),                 S = 1..n_super
    class centres        mu_c = mu_sup(c) + N(0, sigma_sub^2 I_d),       n_sub classes per S
    inputs               x = mu_c + a (mu_c' - mu_c) + N(0, sigma_noise^2 I_d)
    warp                 x <- x + warp * sin(2 x)   (element-wise)

Classes of one superclass are close (sigma_sub < sigma_super), so their examples are confused
with each other more than with other superclasses'. The fixed non-linear warp makes a wide
non-linear teacher better than a small or linear student. With ``difficulty = a_max > 0``
each example is pulled toward a random sibling class c' of its superclass by
a ~ U(0, a_max); the true difficulty ``a`` is kept as the tag ``"difficulty"`` (0 without it).
``label_noise`` replaces that fraction of *training* labels by a uniformly drawn other class.

Per-class ground truth travels with the data (``class_info``): ``"superclass"`` (K,) and
``"centre"`` (K, d), the class centres before the warp. Labels are class indices
c = S * n_sub + j, so classes of one superclass are adjacent. Every draw comes from
``numpy.random.SeedSequence(seed)``: one stream for the class structure, one per split, so the
test split does not change with the training size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdscope.datasets.base import DataSplits, TensorDataset, check_float, check_int, example_bytes
from kdscope.datasets.registry import register_dataset

__all__ = ["hierarchy"]


def _centres(
    rng: np.random.Generator,
    n_super: int,
    n_sub: int,
    dim: int,
    sigma_super: float,
    sigma_sub: float,
) -> np.ndarray:
    """(K, d) class centres mu_c = mu_sup(c) + N(0, sigma_sub^2 I)."""
    supers = rng.normal(0.0, sigma_super, size=(n_super, dim))
    offsets = rng.normal(0.0, sigma_sub, size=(n_super, n_sub, dim))
    return (supers[:, None, :] + offsets).reshape(n_super * n_sub, dim)


def _split(
    rng: np.random.Generator,
    centres: np.ndarray,
    n_sub: int,
    per_class: int,
    sigma_noise: float,
    warp: float,
    a_max: float,
    label_noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, labels and true difficulty of one split: ``per_class`` examples per class,
    shuffled."""
    k, dim = centres.shape
    labels = rng.permutation(np.repeat(np.arange(k), per_class))
    n = len(labels)
    a = rng.uniform(0.0, a_max, size=n) if a_max > 0 else np.zeros(n)
    # a sibling c' != c in the same superclass: shift the within-superclass index by 1..n_sub-1
    shift = rng.integers(1, n_sub, size=n) if n_sub > 1 else np.zeros(n, dtype=np.int64)
    sibling = (labels // n_sub) * n_sub + (labels % n_sub + shift) % n_sub
    x = centres[labels] + a[:, None] * (centres[sibling] - centres[labels])
    x = x + rng.normal(0.0, sigma_noise, size=(n, dim))
    x = x + warp * np.sin(2.0 * x)
    if label_noise > 0:
        flip = rng.random(n) < label_noise
        other = (labels + rng.integers(1, k, size=n)) % k
        labels = np.where(flip, other, labels)
    return x, labels, a


def _dataset(
    x: np.ndarray, labels: np.ndarray, a: np.ndarray, k: int, info: dict[str, torch.Tensor]
) -> TensorDataset:
    n_sub = int((info["superclass"] == 0).sum())
    return TensorDataset(
        inputs=torch.from_numpy(x.astype(np.float32)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        foreground=torch.ones(x.shape, dtype=torch.bool),
        num_classes=k,
        modality="vector",
        tags={"difficulty": torch.from_numpy(a.astype(np.float32))},
        class_names=[f"s{c // n_sub}.c{c % n_sub}" for c in range(k)],
        class_info=info,
    )


def _footprint(a: Mapping[str, Any]) -> tuple[int, int]:
    """Examples (n_train + n_test per class) and bytes per example: float32 vectors and bool
    flags of ``dim`` elements."""
    classes = a["n_super"] * a["n_sub"]
    return (a["n_train"] + a["n_test"]) * classes, example_bytes(a["dim"], 4, a["dim"])


@register_dataset("hierarchy", modality="vector", footprint=_footprint)
def hierarchy(
    n_super: int = 5,
    n_sub: int = 4,
    dim: int = 32,
    n_train: int = 30,
    n_test: int = 200,
    sigma_super: float = 1.0,
    sigma_sub: float = 0.6,
    sigma_noise: float = 1.0,
    warp: float = 0.5,
    difficulty: float = 0.0,
    label_noise: float = 0.0,
    seed: int = 0,
) -> DataSplits:
    """Planted-hierarchy feature vectors: ``n_super`` x ``n_sub`` classes in ``dim`` dimensions,
    ``n_train`` / ``n_test`` examples *per class*; see the module docstring for the model."""
    n_super, n_sub, dim, n_train, n_test = (
        check_int(name, value, 1)
        for name, value in [
            ("n_super", n_super),
            ("n_sub", n_sub),
            ("dim", dim),
            ("n_train", n_train),
            ("n_test", n_test),
        ]
    )
    if n_super * n_sub < 2:
        raise ValueError("n_super * n_sub must give at least 2 classes")
    sigma_super, sigma_sub, sigma_noise, warp = (
        check_float(name, value, 0.0)
        for name, value in [
            ("sigma_super", sigma_super),
            ("sigma_sub", sigma_sub),
            ("sigma_noise", sigma_noise),
            ("warp", warp),
        ]
    )
    # difficulty: the fraction of the way to a sibling class
    difficulty = check_float("difficulty", difficulty, 0.0, 1.0)
    label_noise = check_float("label_noise", label_noise, 0.0, 1.0)
    if label_noise == 1.0:
        raise ValueError("label_noise must be < 1 (no label would be kept)")
    structure, train_rng, test_rng = (
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(3)
    )
    centres = _centres(structure, n_super, n_sub, dim, sigma_super, sigma_sub)
    k = n_super * n_sub
    info = {
        "superclass": torch.arange(k) // n_sub,
        "centre": torch.from_numpy(centres.astype(np.float32)),
    }
    common = (centres, n_sub)
    train = _split(train_rng, *common, n_train, sigma_noise, warp, difficulty, label_noise)
    test = _split(test_rng, *common, n_test, sigma_noise, warp, difficulty, 0.0)
    return DataSplits(_dataset(*train, k, info), _dataset(*test, k, info))
