"""Decision-boundary planes (Ojha et al. 2023; dbViz): plane geometry against its
definition, triplet sampling, and similarity scores with known answers (identical networks, a
label permutation, two half-plane classifiers whose disagreement area is known in closed form)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from kdscope.property_transfer.decision_boundary import (
    Plane,
    boundary_similarity,
    boundary_similarity_matrix,
    plane,
    plane_predictions,
    planes_from_triplets,
    sample_triplets,
)

SHAPE = (3, 4, 4)
K = 5


def _data(n: int = 40, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs around K class centroids, their labels and the centroids (flattened)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(K, math.prod(SHAPE), generator=g)
    y = torch.arange(n) % K
    x = mu[y] + 0.3 * torch.randn(n, math.prod(SHAPE), generator=g)
    return x.reshape(n, *SHAPE), y, mu


class Centroid(nn.Module):
    """Nearest-centroid classifier z_c = x·μ_c − ½‖μ_c‖², with a dropout that only eval mode
    switches off (so predictions are deterministic only if the code under test uses eval mode)."""

    def __init__(self, mu: Tensor) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(mu.shape[1], len(mu))
        with torch.no_grad():
            self.fc.weight.copy_(mu)
            self.fc.bias.copy_(-0.5 * (mu * mu).sum(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(x.flatten(1)))


class Permuted(nn.Module):
    """``model`` with its logits permuted: z'_c = z_{perm[c]}, so argmax z' = perm⁻¹(argmax z)."""

    def __init__(self, model: nn.Module, perm: Tensor) -> None:
        super().__init__()
        self.model, self.perm = model, perm

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[:, self.perm]


# ----------------------------------------------------------------------------- plane geometry


def test_anchors_coordinates_and_reconstruction() -> None:
    g = torch.Generator().manual_seed(1)
    x1, x2, x3 = torch.rand(3, *SHAPE, generator=g, dtype=torch.float64)
    pl = plane(x1, x2, x3, resolution=50, margin=0.1)
    d1, d2, d3 = x1.reshape(-1), x2.reshape(-1), x3.reshape(-1)
    # stated in-plane coordinates, computed independently from the definition
    a = (d2 - d1) / (d2 - d1).norm()
    b = d3 - d1
    b_perp = b - (a @ b) * a
    expected = torch.tensor(
        [[0.0, 0.0], [float((d2 - d1).norm()), 0.0], [float(a @ b), float(b_perp.norm())]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(pl.anchors, expected, rtol=0, atol=1e-12)
    assert pl.anchors[2, 1] > 0
    # the anchors reconstruct the inputs: in float64 to 1e-12, in float32 (the default) to 1e-6
    back64 = pl.points(pl.anchors, dtype=torch.float64)
    assert back64.shape == (3, *SHAPE)
    torch.testing.assert_close(back64, torch.stack([x1, x2, x3]), rtol=0, atol=1e-12)
    back32 = pl.points(pl.anchors)
    assert back32.dtype == torch.float32
    assert (back32.double() - torch.stack([x1, x2, x3])).abs().max() < 1e-6
    # x1 is the origin, and a float32 triplet works the same way
    assert torch.equal(pl.origin, d1)
    pl32 = plane(x1.float(), x2.float(), x3.float())
    assert (pl32.points(pl32.anchors).double() - torch.stack([x1, x2, x3])).abs().max() < 1e-6


def test_directions_are_orthonormal_and_span_the_triplet() -> None:
    g = torch.Generator().manual_seed(2)
    x1, x2, x3 = torch.rand(3, *SHAPE, generator=g)
    pl = plane(x1, x2, x3)
    assert pl.a.dtype == pl.b.dtype == torch.float64
    basis = torch.stack([pl.a, pl.b])
    torch.testing.assert_close(
        basis @ basis.T, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0
    )
    # x3 − x1 has no component outside span(a, b̂)
    r = x3.reshape(-1).double() - pl.origin
    assert (r - basis.T @ (basis @ r)).norm() < 1e-12


def test_grid_ranges_include_the_margin_and_grid_layout() -> None:
    x1 = torch.tensor([0.0, 0.0, 0.5])
    x2 = torch.tensor([2.0, 0.0, 0.5])
    x3 = torch.tensor([3.0, 1.0, 0.5])  # anchors (0, 0), (2, 0), (3, 1)
    pl = plane(x1, x2, x3, resolution=7, margin=0.1)
    torch.testing.assert_close(
        pl.anchors, torch.tensor([[0.0, 0.0], [2.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    )
    assert pl.u_range == pytest.approx((0 - 0.3, 3 + 0.3))  # L = 3
    assert pl.v_range == pytest.approx((0 - 0.1, 1 + 0.1))  # L = 1
    assert pl.u[0] == pytest.approx(-0.3) and pl.u[-1] == pytest.approx(3.3)
    assert len(pl.u) == len(pl.v) == 7
    # margin 0: the ranges are the anchors' bounding box
    tight = plane(x1, x2, x3, resolution=7, margin=0.0)
    assert tight.u_range == pytest.approx((0.0, 3.0)) and tight.v_range == pytest.approx((0.0, 1.0))
    # R² points, u fastest; unclipped by default, clipped to [0, 1] on request
    grid = pl.grid()
    assert grid.shape == (49, 3) and grid.dtype == torch.float32
    coords = pl.grid_coords()
    assert coords[1, 0] > coords[0, 0] and coords[1, 1] == coords[0, 1]
    assert coords[7, 1] > coords[0, 1] and coords[7, 0] == coords[0, 0]
    torch.testing.assert_close(grid[:, 0], coords[:, 0].float())  # a = e1, b̂ = e2 here
    torch.testing.assert_close(grid[:, 1], coords[:, 1].float())
    assert grid.min() < 0 and grid.max() > 1
    clipped = pl.grid(clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 1
    torch.testing.assert_close(clipped, grid.clamp(0, 1))


@pytest.mark.parametrize(
    "x2, x3",
    [
        ([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]),  # x2 = x1
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),  # x3 = x1
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),  # x3 = x2
        ([1.0, 2.0, 0.0], [-2.0, -4.0, 0.0]),  # collinear
    ],
)
def test_degenerate_triplets_raise(x2: list[float], x3: list[float]) -> None:
    with pytest.raises(ValueError, match="degenerate"):
        plane(torch.zeros(3), torch.tensor(x2), torch.tensor(x3))


def test_invalid_arguments_raise() -> None:
    x = torch.eye(3)
    with pytest.raises(ValueError, match="shape"):
        plane(x[0], x[1], torch.zeros(4))
    with pytest.raises(ValueError, match="resolution"):
        plane(x[0], x[1], x[2], resolution=1)
    with pytest.raises(ValueError, match="margin"):
        plane(x[0], x[1], x[2], margin=-0.1)


# ----------------------------------------------------------------------------- triplets


def test_triplets_have_distinct_labels_and_are_deterministic() -> None:
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 3 + [3] * 12)  # unbalanced
    t = sample_triplets(labels, 200, torch.Generator().manual_seed(0))
    assert t.shape == (200, 3) and t.dtype == torch.long
    assert t.min() >= 0 and t.max() < len(labels)
    y = labels[t]
    assert ((y[:, 0] != y[:, 1]) & (y[:, 0] != y[:, 2]) & (y[:, 1] != y[:, 2])).all()
    assert torch.equal(t, sample_triplets(labels, 200, torch.Generator().manual_seed(0)))
    assert not torch.equal(t, sample_triplets(labels, 200, torch.Generator().manual_seed(1)))
    # a shorter request from the same state is a prefix of a longer one
    assert torch.equal(t[:17], sample_triplets(labels, 17, torch.Generator().manual_seed(0)))
    assert sample_triplets(labels, 0, torch.Generator()).shape == (0, 3)


def test_triplets_need_three_classes() -> None:
    with pytest.raises(ValueError, match="3 classes"):
        sample_triplets(torch.tensor([0, 1, 0, 1, 1]), 5, torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- similarity


def _planes(seed: int = 0, n: int = 6, resolution: int = 40) -> tuple[list[Plane], Tensor]:
    x, y, mu = _data(seed=seed)
    t = sample_triplets(y, n, torch.Generator().manual_seed(seed))
    return planes_from_triplets(x, t, resolution=resolution), mu


def test_identical_networks_score_one_and_modes_are_restored() -> None:
    planes, mu = _planes()
    model = Centroid(mu).train()  # dropout active in train mode
    twin = copy.deepcopy(model)
    pa = plane_predictions(model, planes, batch_size=128)
    pb = plane_predictions(twin, planes, batch_size=333)
    assert pa.shape == (len(planes), 40 * 40) and pa.dtype == torch.long
    assert model.training and model.drop.training  # flags restored
    sim = boundary_similarity(pa, pb)
    assert sim.shape == (len(planes),)
    assert torch.equal(sim, torch.ones(len(planes), dtype=torch.float64))
    # a single plane, and a precomputed grid batch, give the same predictions
    assert torch.equal(plane_predictions(model, planes[0]), pa[:1])
    batch = torch.stack([p.grid() for p in planes[:2]])
    assert torch.equal(plane_predictions(model, batch), pa[:2])


def test_label_permutation_scores_the_fixed_point_fraction() -> None:
    planes, mu = _planes(seed=3)
    model = Centroid(mu)
    perm = torch.tensor([0, 2, 1, 3, 4])  # fixed points {0, 3, 4}
    fixed = (perm == torch.arange(K)).nonzero().flatten()
    sim = boundary_similarity(
        plane_predictions(model, planes), plane_predictions(Permuted(model, perm), planes)
    )
    # the fraction computed independently: the model's own argmax on every grid point
    with torch.no_grad():
        model.eval()
        own = torch.stack([model(p.grid()).argmax(1) for p in planes])
    expected = torch.isin(own, fixed).double().mean(1)
    assert torch.equal(sim, expected)
    # the case is non-trivial: fixed and moved labels both occur
    assert 0 < float(expected.mean()) < 1
    assert len(torch.unique(own)) >= 3


def test_similarity_matrix() -> None:
    planes, mu = _planes(seed=4, n=3, resolution=20)
    model = Centroid(mu)
    other = Permuted(model, torch.tensor([1, 0, 2, 3, 4]))
    preds = [plane_predictions(m, planes) for m in (model, copy.deepcopy(model), other)]
    mat = boundary_similarity_matrix(preds)
    assert mat.shape == (3, 3)
    torch.testing.assert_close(mat, mat.T)
    assert mat[0, 1] == 1.0 and (mat.diagonal() == 1).all()
    assert mat[0, 2] == pytest.approx(float(boundary_similarity(preds[0], preds[2]).mean()))
    with pytest.raises(ValueError, match="shapes differ"):
        boundary_similarity(preds[0], preds[0][:, :5])


class HalfPlane(nn.Module):
    """Two-class classifier on R²: class 1 where n·(x − c) > 0, n = (−sin θ, cos θ) (the line
    through c at angle θ to the first axis), class 0 elsewhere."""

    def __init__(self, theta: float, centre: tuple[float, float]) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2).double()
        n = torch.tensor([-math.sin(theta), math.cos(theta)], dtype=torch.float64)
        with torch.no_grad():
            self.fc.weight.copy_(torch.stack([torch.zeros(2, dtype=torch.float64), n]))
            self.fc.bias.copy_(torch.tensor([0.0, -float(n @ torch.tensor(centre).double())]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


@pytest.mark.parametrize(
    "x2, degrees",
    [((1.0, 0.0), 30.0), ((2.0, 0.0), 20.0), ((1.0, 0.0), 45.0)],
)
def test_half_plane_disagreement_matches_the_wedge_area(
    x2: tuple[float, float], degrees: float
) -> None:
    """Anchors (0, 0), x2 = (w, 0), (0, 1) span R² itself (a = e1, b̂ = e2); the grid is the
    rectangle [−0.1w, 1.1w] × [−0.1, 1.1] with centre c and half-sides h_u = 0.6w, h_v = 0.6. A
    horizontal line through c and a line through c at angle Δ (tan Δ · h_u ≤ h_v) disagree on two
    opposite triangles of legs h_u and h_u tan Δ: area fraction h_u² tan Δ / (4 h_u h_v)
    = h_u tan Δ / (4 h_v)."""
    x1, x3 = torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    r = 200
    pl = plane(x1, torch.tensor(x2, dtype=torch.float64), x3, resolution=r, margin=0.1)
    w = x2[0]
    hu, hv = 0.6 * w, 0.6
    assert pl.u_range == pytest.approx((-0.1 * w, 1.1 * w))
    assert pl.v_range == pytest.approx((-0.1, 1.1))
    centre = (0.5 * w, 0.5)
    delta = math.radians(degrees)
    assert math.tan(delta) * hu <= hv + 1e-12
    expected = hu * math.tan(delta) / (4 * hv)
    pa = plane_predictions(HalfPlane(0.0, centre), pl)
    pb = plane_predictions(HalfPlane(delta, centre), pl)
    disagree = 1 - float(boundary_similarity(pa, pb)[0])
    assert disagree == pytest.approx(expected, abs=1 / r)
