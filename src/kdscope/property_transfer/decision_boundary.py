"""Decision-boundary similarity on planes through input triplets (dbViz; Ojha et al. 2023).

For three inputs x1, x2, x3 (flattened to vectors in R^D) the plane through them has the
orthonormal directions

    a = (x2 − x1)/‖x2 − x1‖,   b = x3 − x1,   b⊥ = b − (a·b) a,   b̂ = b⊥/‖b⊥‖,

and the in-plane coordinates of the anchors are

    x1 → (0, 0),   x2 → (‖x2 − x1‖, 0),   x3 → (a·b, ‖b⊥‖).

Per axis the grid spans [min − m·L, max + m·L] over the three anchor coordinates (L = max − min,
margin m = 0.1) with R points (R = 50); the R² grid points x1 + u·a + v·b̂ are reshaped to the input
shape, not clipped to [0, 1] (as in dbViz; clipping is an option). Grid point k = i_v·R + i_u (u
varies fastest), so ``predictions.reshape(R, R)`` is a map with v along the rows and u along the
columns (``imshow(..., origin="lower")``).

The similarity of two networks A and B on one plane is the fraction of its R² grid points where
argmax A = argmax B; the score of a domain is its mean over triplets of test inputs with pairwise
distinct labels (50 triplets [paper]). The plane is computed in float64; grids are returned in
float32 (or the dtype asked for).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdscope.property_transfer.adversarial import predict_labels

__all__ = [
    "Plane",
    "boundary_similarity",
    "boundary_similarity_matrix",
    "plane",
    "plane_predictions",
    "planes_from_triplets",
    "sample_triplets",
]

#: relative size below which ‖x2 − x1‖ or ‖b⊥‖ count as zero (float64 rounding is ~1e-16)
_DEGENERATE_RTOL = 1e-9
#: candidate triplets drawn per rejection-sampling round
_TRIPLET_BATCH = 1024


@dataclass(frozen=True, eq=False)
class Plane:
    """The plane through an input triplet and its R × R grid (all tensors float64, flattened).

    ``origin`` is x1, ``a`` and ``b`` are the orthonormal directions a and b̂ (shape (D,)),
    ``anchors`` the (3, 2) in-plane coordinates of x1, x2, x3, ``u_range`` and ``v_range`` the
    grid's closed ranges per axis, ``resolution`` R and ``shape`` the shape of one input.
    """

    origin: Tensor
    a: Tensor
    b: Tensor
    anchors: Tensor
    u_range: tuple[float, float]
    v_range: tuple[float, float]
    resolution: int
    shape: tuple[int, ...]

    @property
    def u(self) -> Tensor:
        """The R grid values along a (float64)."""
        return _linspace(self.u_range, self.resolution, self.origin.device)

    @property
    def v(self) -> Tensor:
        """The R grid values along b̂ (float64)."""
        return _linspace(self.v_range, self.resolution, self.origin.device)

    def grid_coords(self) -> Tensor:
        """(R², 2) float64 in-plane coordinates (u, v) of the grid, point k = i_v·R + i_u."""
        vv, uu = torch.meshgrid(self.v, self.u, indexing="ij")
        return torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=1)

    def points(
        self, coords: Tensor, *, clip: bool = False, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Inputs x1 + u·a + v·b̂ for the (N, 2) in-plane coordinates ``coords``, shape (N, *shape),
        computed in float64, optionally clipped to [0, 1], returned in ``dtype``."""
        c = torch.as_tensor(coords, dtype=torch.float64, device=self.origin.device).reshape(-1, 2)
        x = self.origin + c[:, :1] * self.a + c[:, 1:] * self.b
        if clip:
            x = x.clamp(0.0, 1.0)
        return x.to(dtype).reshape(len(c), *self.shape)

    def grid(self, *, clip: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
        """(R², *shape) grid inputs in the order of :meth:`grid_coords` (not clipped by default)."""
        return self.points(self.grid_coords(), clip=clip, dtype=dtype)


def _linspace(rng: tuple[float, float], n: int, device: torch.device) -> Tensor:
    return torch.linspace(rng[0], rng[1], n, dtype=torch.float64, device=device)


def _axis_range(c: Tensor, margin: float) -> tuple[float, float]:
    """[min − margin·L, max + margin·L] with L = max − min over the anchor coordinates ``c``."""
    lo, hi = float(c.min()), float(c.max())
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def plane(x1: Tensor, x2: Tensor, x3: Tensor, resolution: int = 50, margin: float = 0.1) -> Plane:
    """The dbViz plane through x1, x2, x3 (inputs of one shape) with an R × R grid:

        a = (x2 − x1)/‖x2 − x1‖,  b⊥ = (x3 − x1) − (a·(x3 − x1)) a,  b̂ = b⊥/‖b⊥‖,

    anchors (0, 0), (‖x2 − x1‖, 0), (a·b, ‖b⊥‖), ranges [min − margin·L, max + margin·L] per axis.
    Raises ``ValueError`` for coincident or collinear inputs (‖x2 − x1‖ or ‖b⊥‖ zero relative to
    the inputs' scale), mismatched shapes, R < 2 or a negative margin.
    """
    if not (x1.shape == x2.shape == x3.shape):
        raise ValueError(
            f"triplet inputs differ in shape: {tuple(x1.shape)}, {tuple(x2.shape)}, "
            f"{tuple(x3.shape)}"
        )
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    p1, p2, p3 = (x.detach().reshape(-1).to(torch.float64, copy=True) for x in (x1, x2, x3))
    scale = max(float(p1.norm()), float(p2.norm()), float(p3.norm()), 1e-300)
    d = p2 - p1
    dist = float(d.norm())
    if dist <= _DEGENERATE_RTOL * scale:
        raise ValueError("degenerate triplet: x1 and x2 coincide, so they define no direction")
    a = d / dist
    b = p3 - p1
    ab = float(a @ b)
    b_perp = b - ab * a
    height = float(b_perp.norm())
    if height <= _DEGENERATE_RTOL * scale:
        raise ValueError(
            "degenerate triplet: x3 lies on the line through x1 and x2 (collinear or coincident "
            "inputs span no plane)"
        )
    anchors = torch.tensor(
        [[0.0, 0.0], [dist, 0.0], [ab, height]], dtype=torch.float64, device=p1.device
    )
    return Plane(
        origin=p1,
        a=a,
        b=b_perp / height,
        anchors=anchors,
        u_range=_axis_range(anchors[:, 0], margin),
        v_range=_axis_range(anchors[:, 1], margin),
        resolution=int(resolution),
        shape=tuple(x1.shape),
    )


def planes_from_triplets(
    x: Tensor, triplets: Tensor, resolution: int = 50, margin: float = 0.1
) -> list[Plane]:
    """One :func:`plane` per row (i, j, k) of the (T, 3) index tensor ``triplets`` into ``x``."""
    return [plane(x[i], x[j], x[k], resolution, margin) for i, j, k in triplets.tolist()]


def sample_triplets(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """(n, 3) long indices of inputs whose three labels are pairwise distinct.

    Each triplet is uniform over the ordered index triplets with pairwise distinct labels: candidate
    triplets (three independent uniform indices) are drawn in batches from ``generator`` and those
    with distinct labels are kept in draw order until n are found (rejection sampling). Triplets are
    independent, so a repeat is possible but unlikely. Deterministic for a given generator state,
    and the candidates come in fixed-size batches, so a request for n triplets returns the first n
    of a longer request from the same state.
    Raises ``ValueError`` with fewer than 3 classes in ``labels``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    y = torch.as_tensor(labels).reshape(-1).long().cpu()
    if len(torch.unique(y)) < 3:
        raise ValueError(
            f"need inputs of at least 3 classes for triplets, got {len(torch.unique(y))}"
        )
    found: list[Tensor] = []
    have, rounds = 0, 0
    while have < n:
        if rounds == 10_000:
            raise ValueError("could not find enough triplets with distinct labels (rare classes)")
        idx = torch.randint(len(y), (_TRIPLET_BATCH, 3), generator=generator)
        t = y[idx]
        ok = (t[:, 0] != t[:, 1]) & (t[:, 0] != t[:, 2]) & (t[:, 1] != t[:, 2])
        found.append(idx[ok])
        have += int(ok.sum())
        rounds += 1
    return torch.cat(found)[:n] if found else torch.empty(0, 3, dtype=torch.long)


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device | None]:
    """The dtype and device of the model's first floating parameter (float32, None without one)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, None


def plane_predictions(
    model: nn.Module,
    planes: Plane | Sequence[Plane] | Tensor,
    batch_size: int = 500,
    *,
    clip: bool = False,
) -> Tensor:
    """(T, R²) argmax predictions of ``model`` on the grids of ``planes`` (eval mode, flags
    restored, no grad, in chunks of ``batch_size``), on CPU.

    ``planes`` is a :class:`Plane`, a sequence of them (grids built one plane at a time, in the
    dtype and on the device of the model's parameters, clipped to [0, 1] if ``clip``), or a tensor
    of grid inputs of shape (T, P, *input shape), moved to the model's device as it is.
    """
    dtype, device = _model_dtype_device(model)
    if isinstance(planes, Tensor):
        if planes.dim() < 3:
            raise ValueError(
                f"a grid batch must have shape (T, P, *input shape), got {tuple(planes.shape)}"
            )
        t, p = planes.shape[:2]
        x = planes.reshape(t * p, *planes.shape[2:])
        x = x if device is None else x.to(device)
        return predict_labels(model, x, batch_size=batch_size).reshape(t, p).cpu()
    seq = [planes] if isinstance(planes, Plane) else list(planes)
    out = []
    for pl in seq:
        g = pl.grid(clip=clip, dtype=dtype)
        g = g if device is None else g.to(device)
        out.append(predict_labels(model, g, batch_size=batch_size).cpu())
    if not out:
        return torch.empty(0, 0, dtype=torch.long)
    return torch.stack(out)


def boundary_similarity(pred_a: Tensor, pred_b: Tensor) -> Tensor:
    """Per-triplet fraction of grid points with equal predictions, (T,) float64:

    sim_t = (1/R²) Σ_k 1[pred_a[t, k] = pred_b[t, k]]   (mean over the last dimension).
    """
    if pred_a.shape != pred_b.shape:
        raise ValueError(f"shapes differ: {tuple(pred_a.shape)} vs {tuple(pred_b.shape)}")
    return (pred_a == pred_b).double().mean(dim=-1)


def boundary_similarity_matrix(preds: Sequence[Tensor]) -> Tensor:
    """(M, M) float64 matrix of the triplet-mean similarity between every pair of M models'
    (T, R²) predictions (symmetric, ones on the diagonal)."""
    m = len(preds)
    out = torch.ones(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            out[i, j] = out[j, i] = boundary_similarity(preds[i], preds[j]).mean()
    return out
