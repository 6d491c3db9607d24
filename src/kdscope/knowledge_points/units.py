"""Unit maps: how one σ per input unit becomes an element-wise noise scale.

A knowledge-point analysis learns one σ per *unit* of the input: a grid cell of an image
(shared over its pixels and channels), a point of a point cloud (shared over x, y, z), a token
(shared over its embedding dimensions). A :class:`UnitMap` holds, for each of P problems, the
unit that every element of the perturbed tensor belongs to (``-1`` = excluded: padding, special
tokens), so every modality uses the same two operations:

* ``expand(σ)``: (P, n) unit values → (P, E) element values, σ_{u(j)} (0 for excluded elements);
* ``unit_sums(v)``: (P, E) element values → (P, n) sums over each unit's elements, the adjoint
  of ``expand``; e.g. c_u = Σ_{j∈u} ‖J[:, j]‖² from per-element Jacobian column norms.

Foreground per unit: a unit is foreground iff at least half of its elements are (``majority``);
grids also offer the reference's ``center_sample`` rule (the element at the cell centre decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from kdscope.errors import KdscopeError


@dataclass(frozen=True)
class UnitMap:
    """Element → unit assignment for P problems over a perturbed tensor of shape ``shape``.

    ``assignment`` is (P, E) int64 with E = prod(shape), values in [0, n) or -1 (excluded).
    ``grid`` is set for image grids (side of the cell grid, cell size) and enables the
    ``center_sample`` foreground rule.
    """

    assignment: Tensor
    n_units: int
    shape: tuple[int, ...]
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.assignment.dim() != 2:
            raise ValueError("assignment must be (problems, elements)")
        if self.assignment.shape[1] != _prod(self.shape):
            raise ValueError(
                f"assignment has {self.assignment.shape[1]} elements, shape {self.shape}"
            )

    @property
    def problems(self) -> int:
        return int(self.assignment.shape[0])

    @property
    def valid(self) -> Tensor:
        """(P, n) bool: units that own at least one element (the others are excluded)."""
        counts = self.unit_sums(torch.ones(self.assignment.shape, dtype=torch.float64))
        return counts > 0

    def expand(self, sigma: Tensor) -> Tensor:
        """(P, n) → (P, *shape): each element takes its unit's value; excluded elements 0."""
        padded = torch.cat([sigma.new_zeros(sigma.shape[0], 1), sigma], dim=1)
        out = torch.gather(padded, 1, self._index(sigma.shape[0]))
        return out.view(sigma.shape[0], *self.shape)

    def unit_sums(self, values: Tensor) -> Tensor:
        """(P, *shape) or (P, E) element values → (P, n) sums over each unit's elements."""
        p = values.shape[0]
        flat = values.reshape(p, -1)
        out = flat.new_zeros(p, self.n_units + 1)
        out.scatter_add_(1, self._index(p), flat)
        return out[:, 1:]

    def foreground(self, mask: Tensor, rule: str = "majority") -> Tensor:
        """(P, n) bool from an element or spatial foreground mask (broadcast over leading
        channel dimensions): ``majority`` = at least half of the unit's elements are foreground;
        ``center_sample`` (grids only) = the element at the cell centre is foreground."""
        full = self._broadcast(mask)
        p = full.shape[0]
        if rule == "majority":
            counts = self.unit_sums(torch.ones_like(full, dtype=torch.float64))
            return (self.unit_sums(full.double()) >= 0.5 * counts) & (counts > 0)
        if rule == "center_sample":
            if self.grid is None:
                raise KdscopeError("mask_rule 'center_sample' needs an image grid unit map")
            side, cell = self.grid
            centre = full[..., cell // 2 :: cell, cell // 2 :: cell]  # (P, C, side, side)
            return centre.reshape(p, -1, side * side).any(1)
        raise KdscopeError(f"unknown mask rule {rule!r} (majority, center_sample)")

    def _broadcast(self, mask: Tensor) -> Tensor:
        """(P, *dims) → (P, *shape): dims are the trailing dimensions of ``shape`` (an image's
        spatial mask, repeated over channels) or its leading ones (a point's or token's flag,
        repeated over its coordinates)."""
        p, dims, k = mask.shape[0], tuple(mask.shape[1:]), mask.dim() - 1
        if dims == self.shape[len(self.shape) - k :]:
            view = (p,) + (1,) * (len(self.shape) - k) + dims
        elif dims == self.shape[:k]:
            view = (p,) + dims + (1,) * (len(self.shape) - k)
        else:
            raise KdscopeError(f"foreground mask of shape {dims} does not fit inputs {self.shape}")
        return mask.reshape(view).expand(p, *self.shape)

    def _index(self, p: int) -> Tensor:
        index = self.assignment + 1
        return index.expand(p, -1) if index.shape[0] == 1 else index


def image_grid(shape: Sequence[int], grid: int = 16, problems: int = 1) -> UnitMap:
    """Grid cells of a (C, H, W) image: ``grid``×``grid`` cells, each shared over its pixels and
    all channels (the reference uses 16×16 cells of 14×14 pixels on 224×224 images)."""
    c, h, w = (int(v) for v in shape)
    if h != w or h % grid:
        raise KdscopeError(
            f"the knowledge-point grid side {grid} must divide the image side ({h}x{w}); "
            "use e.g. 16 for 32x32 or 14 for 28x28 images"
        )
    cell = h // grid
    rows = torch.arange(h) // cell
    cols = torch.arange(w) // cell
    unit = (rows[:, None] * grid + cols[None, :]).expand(c, h, w).reshape(1, -1)
    return UnitMap(unit.expand(problems, -1).contiguous(), grid * grid, (c, h, w), (grid, cell))


def per_row(shape: Sequence[int], excluded: Tensor | None = None, problems: int = 1) -> UnitMap:
    """One unit per leading row of an (N, D) tensor, shared over the D trailing elements (a point
    and its x, y, z; a token and its embedding dimensions). ``excluded`` (P, N) bool marks the
    rows of each of P problems that are not units (padding, special tokens): they get σ = 0 in
    ``expand``, 0 in ``unit_sums``, are not ``valid`` and are never foreground. Without it the
    map is shared by ``problems`` problems."""
    n, d = (int(v) for v in shape)
    rows = torch.arange(n).repeat_interleave(d)[None, :]
    if excluded is None:
        return UnitMap(rows.expand(problems, -1).contiguous(), n, (n, d))
    if excluded.dim() != 2 or excluded.shape[1] != n:
        raise KdscopeError(f"excluded rows must be (problems, {n}), got {tuple(excluded.shape)}")
    out = excluded.bool().repeat_interleave(d, dim=1)
    return UnitMap(torch.where(out, -1, rows), n, (n, d))


def point_units(n_points: int, problems: int = 1, padding: Tensor | None = None) -> UnitMap:
    """One unit per point of (n_points, 3) point clouds, shared over its x, y, z;
    ``padding`` (P, n_points) bool marks excluded points (True = padding, at any position)."""
    if n_points < 1:
        raise KdscopeError(f"a point cloud needs at least one point, got {n_points}")
    return per_row((n_points, 3), padding, problems)


def token_units(ids: Tensor, embed_dim: int, excluded_ids: Sequence[int]) -> UnitMap:
    """One unit per token of (P, L) token ids, shared over its ``embed_dim`` embedding
    dimensions; tokens whose id is in ``excluded_ids`` (padding, special tokens)
    are not units."""
    if ids.dim() != 2:
        raise KdscopeError(f"token ids must be (problems, length), got {tuple(ids.shape)}")
    excluded = torch.isin(ids, torch.tensor(list(excluded_ids), dtype=ids.dtype))
    return per_row((ids.shape[1], embed_dim), excluded)


def per_element(shape: Sequence[int]) -> UnitMap:
    """Every element of the perturbed tensor is its own unit (analytic tests, tabular inputs)."""
    e = _prod(shape)
    return UnitMap(torch.arange(e)[None, :], e, tuple(int(v) for v in shape))


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for v in shape:
        out *= int(v)
    return out
