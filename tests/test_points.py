"""Point clouds: the ``points`` dataset, the PointNet models, per-point unit maps and the
closed-form σ with one σ per point shared over x, y, z."""

from __future__ import annotations

import math
import time

import pytest
import torch
from kp_fixtures import FIXTURE_A, H_A, SIGMA_A, Linear

from kdscope import KdscopeError
from kdscope.datasets import DATASETS, build
from kdscope.datasets.points import CLASS_NAMES, CLUTTER_EXTENT, points
from kdscope.knowledge_points.estimator import (
    HALF_LOG_2PIE,
    EstimatorSettings,
    estimate,
    layer_probe,
    unit_sensitivity,
)
from kdscope.knowledge_points.units import point_units
from kdscope.models import build_model
from kdscope.models.hooks import forward_with_features, layer_weights, resolve_layer
from kdscope.trainer import check_model_io

# ------------------------------------------------------------------------------------ dataset


def test_registered_shapes_and_dtypes() -> None:
    assert "points" in DATASETS
    d = build("points", n_train=40, n_test=24, num_points=64, seed=1)
    for split, n in ((d.train, 40), (d.test, 24)):
        assert split.inputs.shape == (n, 64, 3) and split.inputs.dtype == torch.float32
        assert split.foreground.shape == (n, 64) and split.foreground.dtype == torch.bool
        assert split.labels.dtype == torch.int64 and split.modality == "points"
        assert torch.isfinite(split.inputs).all()
    assert d.num_classes == 8 and d.train.class_names == CLASS_NAMES[:8]


def test_deterministic_from_seed() -> None:
    a = points(n_train=32, n_test=16, num_points=32, seed=3)
    b = points(n_train=32, n_test=16, num_points=32, seed=3)
    for name in ("inputs", "labels", "foreground"):
        assert torch.equal(getattr(a.train, name), getattr(b.train, name))
        assert torch.equal(getattr(a.test, name), getattr(b.test, name))
    c = points(n_train=32, n_test=16, num_points=32, seed=4)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.train.inputs[:16], a.test.inputs)  # separate streams


@pytest.mark.parametrize("clutter", [0.0, 0.2, 0.5])
def test_foreground_fraction_is_the_clutter_parameter(clutter: float) -> None:
    d = points(n_train=30, n_test=10, num_points=100, seed=0, clutter=clutter)
    for split in (d.train, d.test):  # every cloud of every split
        background = (~split.foreground).sum(1)
        assert (background == round(clutter * 100)).all()


def test_class_balance_and_geometry() -> None:
    d = points(n_train=100, n_test=30, num_points=64, seed=2, num_classes=10, blobs=0)
    assert d.train.labels.bincount().tolist() == [10] * 10
    assert d.test.labels.bincount().tolist() == [3] * 10
    x, fg = d.train.inputs, d.train.foreground
    # objects: normalised into the unit sphere (then scaled by <= 1), plus jitter 0.01
    assert x[fg].norm(dim=-1).max() <= 1.05
    assert (x[~fg].abs() <= CLUTTER_EXTENT).all()  # uniform clutter stays in the enlarged box
    # foreground points are shuffled, not in fixed rows
    assert not torch.equal(fg[0], fg[1]) or not torch.equal(fg[1], fg[2])


def test_object_points_lie_on_the_surface() -> None:
    # spheres without jitter or clutter: every point at one distance from the sphere's centre
    # (fitted by least squares from |x|² = 2 x·c + k, exact for points on a sphere); the
    # normalisation puts the farthest point at the cloud's scale in [min_scale, 1]
    d = points(n_train=8, n_test=1, num_points=50, num_classes=2, clutter=0.0, jitter=0.0)
    x = d.train.inputs[d.train.labels == 0].double()
    design = torch.cat([2 * x, torch.ones(*x.shape[:2], 1, dtype=x.dtype)], 2)
    fit = torch.linalg.lstsq(design, x.pow(2).sum(2, keepdim=True)).solution
    radius = (x - fit[:, None, :3, 0]).norm(dim=-1)
    assert torch.allclose(radius, radius[:, :1].expand_as(radius), atol=1e-4)
    assert torch.allclose(x.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    extent = x.norm(dim=-1).amax(1)
    assert ((extent >= 0.7 - 1e-6) & (extent <= 1.0 + 1e-6)).all()


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    points(n_train=2000, n_test=1, num_points=256, rotation="so3")
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_classes": 11}, "num_classes"),
        ({"num_points": 4}, "num_points"),
        ({"clutter": 0.95}, "clutter"),
        ({"clutter": float("nan")}, "clutter"),
        ({"rotation": "x"}, "unknown rotation 'x'"),
        ({"min_scale": 0.0}, "min_scale"),
        ({"jitter": -0.1}, "jitter"),
        ({"blobs": 1.5}, "blobs"),
        ({"n_train": 0}, "n_train"),
    ],
)
def test_bad_parameters_are_user_errors(params: dict, message: str) -> None:
    with pytest.raises(KdscopeError, match=f"dataset 'points': .*{message}"):
        build("points", n_train=params.pop("n_train", 4), n_test=2, **params)


# ------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("name", ["pointnet", "pointnet_small"])
def test_pointnet_forward_and_named_layers(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, width=4).eval()
    x = torch.randn(3, 40, 3)  # any number of points
    paths = [resolve_layer(model, r) for r in model.roles] + list(model.diagnosable)
    out = forward_with_features(model, x, paths)
    assert out.logits.shape == (3, 5)
    assert resolve_layer(model, "last_conv") == "conv" and out.features["conv"].dim() == 2
    assert out.features["fc1"].shape[0] == 3 and out.features["fc2"].shape[0] == 3
    # permutation invariant; conv_act is PointNet's global feature max_i relu(BN(W h_i))
    perm = torch.randperm(40)
    assert torch.allclose(model(x[:, perm]), out.logits, atol=1e-5)
    h = x.transpose(1, 2)
    for stage in model.stage_names:
        h = getattr(model, stage)(h)
    expected = model.conv[1](model.conv[0](h)).relu().amax(2)
    assert torch.allclose(model.conv_act(out.features["conv"]), expected, atol=1e-6)
    conv_w = layer_weights(model, "conv")
    assert len(conv_w) == 1 and conv_w[0] is model.conv[0].weight  # BatchNorm's γ left out


def test_pointnet_accepts_the_dataset() -> None:
    d = points(n_train=16, n_test=4, num_points=32)
    model = build_model("pointnet", d.num_classes, width=4, num_points=32)
    assert model.input_shape == (32, 3)
    check_model_io(model, d.train.inputs, d.num_classes, "model 'pointnet'")
    with pytest.raises(KdscopeError, match="outputs"):
        check_model_io(build_model("pointnet", 3, width=4), d.train.inputs, 8, "m")


# ----------------------------------------------------------------------------------- unit maps


def test_point_units_adjoint_and_foreground() -> None:
    padding = torch.tensor([[False, False, True, False], [False, False, False, False]])
    units = point_units(4, padding=padding)
    assert units.shape == (4, 3) and units.problems == 2 and units.n_units == 4
    sigma = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    full = units.expand(sigma)
    assert full[0].tolist() == [[1.0] * 3, [2.0] * 3, [0.0] * 3, [4.0] * 3]  # padding: σ = 0
    assert full[1, 3].tolist() == [8.0] * 3  # shared over x, y, z
    v = torch.randn(2, 4, 3)
    # unit_sums is the adjoint of expand: <expand(σ), v> = <σ, unit_sums(v)>
    assert torch.allclose((full * v).sum(), (sigma * units.unit_sums(v)).sum())
    assert torch.allclose(units.unit_sums(v)[1], v[1].sum(1))
    assert units.valid.tolist() == [[True, True, False, True], [True] * 4]
    # a point is foreground iff its flag is set; a padding point never is
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    assert units.foreground(mask).tolist() == [
        [True, False, False, True],
        [False, True] + [False] * 2,
    ]
    shared = point_units(5, problems=3)
    assert shared.problems == 3 and shared.valid.all()
    with pytest.raises(KdscopeError, match="excluded rows must be"):
        point_units(4, padding=torch.zeros(2, 5, dtype=torch.bool))


# ------------------------------------------------------------------ closed-form σ per point


# Fixture A (c = (1, 4, 9, 0), M = 2) with unit u = point u: its column norm is
# split unequally over x, y, z (fractions 1/2, 1/3, 1/6), so only the per-point sum c_u is fixed.
SPLIT = torch.tensor([1 / 2, 1 / 3, 1 / 6]).sqrt()


def _point_weight(per_point: torch.Tensor) -> torch.Tensor:
    """(M, n) per-point weights → (M, n·3) with point u's weight spread as ``SPLIT`` over x, y, z."""
    return (per_point[:, :, None] * SPLIT).flatten(1)


def _closed_form(
    sigma_f: float, c: torch.Tensor, m: int, lam: float = 7.0, scale: float = 1.0
) -> torch.Tensor:
    """σ* = clip(sqrt(λ M σ_f / (2 n c_u)), 0.001·s, s) over the n non-excluded points."""
    star = torch.sqrt(lam * m * sigma_f / (2 * len(c) * c.double()))
    return star.clamp(0.001 * scale, scale)


def test_point_fixture_sensitivity_is_exact() -> None:
    # c_u = Σ_{a ∈ x,y,z} ‖W[:, (u, a)]‖²: the per-point sum over its three coordinates
    model = Linear(_point_weight(FIXTURE_A))
    with layer_probe(model, "fc") as fn:
        c, m = unit_sensitivity(
            fn,
            torch.randn(2, 4, 3),
            point_units(4),
            EstimatorSettings(feature_transform="identity"),
        )
    assert m == 2
    assert torch.allclose(c, torch.tensor([[1.0, 4.0, 9.0, 0.0]]).double().expand(2, -1))


@pytest.mark.parametrize("variant", ["points", "padding", "coordinate_scale"])
def test_optimum_mode_reaches_the_closed_form_per_point(variant: str) -> None:
    """The analogue of the image-cell test: σ* = sqrt(λ M σ_f / (2 n c_u)) per point.

    ``padding``: two extra padding points with large weights sit between the real ones; they
    are excluded, so they get no noise, do not count in n, and σ of the 4 real points is
    unchanged. ``coordinate_scale``: coordinates of standard deviation s ≈ 5 and no fixed
    scale, so the estimator uses s = coordinate std: σ₀ = 0.01·s, clamp
    [0.001·s, s], and σ* = s · (fixture A's σ*), the ignored point clamped at s.
    """
    torch.manual_seed(0)
    weight, units, scale = _point_weight(FIXTURE_A), point_units(4), 1.0
    x = torch.randn(1, 4, 3)
    if variant == "padding":
        order = [0, 4, 1, 2, 5, 3]  # real points 0..3 at rows 0, 2, 3, 5; padding at 1 and 4
        per_point = torch.cat([FIXTURE_A, torch.full((2, 2), 5.0)], 1)[:, order]
        weight = _point_weight(per_point)
        units = point_units(6, padding=torch.tensor([[False, True, False, False, True, False]]))
        x = torch.randn(1, 6, 3)
    if variant == "coordinate_scale":
        x = 5.0 * x
    settings = EstimatorSettings(
        mode="optimum",
        samples=4096,
        lam=7,
        feature_transform="identity",
        scale=None if variant == "coordinate_scale" else 1.0,
    )
    res = estimate(Linear(weight), "fc", x, units, settings)
    if variant == "coordinate_scale":
        scale = float(x.double().std())
        assert res.scale == pytest.approx(scale)
    valid = units.valid[0]
    c = units.unit_sums(weight.double().pow(2).sum(0)[None])[0][valid]
    assert c.tolist() == pytest.approx([1.0, 4.0, 9.0, 0.0])
    sigma = res.sigma[0][valid]
    star = _closed_form(float(res.sigma_f[0]), c, 2, scale=scale)
    assert (sigma.log() - star.log()).abs().max() <= 0.03
    # σ_f at its Monte Carlo value is close to its expectation: the closed-form numbers (× s) hold
    assert (sigma.log() - (scale * SIGMA_A).log()).abs().max() <= 0.05
    entropy = res.entropy[0][valid] - math.log(scale)
    assert (entropy - H_A).abs().max() <= 0.05
    assert torch.allclose(res.entropy[0][valid], sigma.log() + HALF_LOG_2PIE)
    assert res.entropy[0][~valid].isnan().all()


def test_optimum_per_point_with_many_points() -> None:
    """32 points, M = 8 random rows, random per-coordinate column norms: σ*_u ∝ c_u^(−1/2)."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 96, generator=gen) * (0.3 + torch.rand(1, 96, generator=gen))
    units = point_units(32)
    res = estimate(
        Linear(weight),
        "fc",
        torch.randn(1, 32, 3, generator=gen),
        units,
        EstimatorSettings(
            mode="optimum", samples=4096, lam=7, feature_transform="identity", scale=1.0
        ),
    )
    c = units.unit_sums(weight.double().pow(2).sum(0)[None])[0]
    star = _closed_form(float(res.sigma_f[0]), c, 8)
    assert (res.sigma[0].log() - star.log()).abs().max() <= 0.03


def test_fast_mode_runs_on_pointnet_and_the_dataset() -> None:
    d = points(n_train=4, n_test=1, num_points=32, seed=0)
    torch.manual_seed(0)
    model = build_model("pointnet_small", d.num_classes, width=4, num_points=32)
    x = d.train.inputs[:2]
    units = point_units(32)
    res = estimate(model, "conv", x, units, EstimatorSettings(projections=32))
    assert res.sigma.shape == (2, 32) and torch.isfinite(res.entropy).all()
    assert res.scale == pytest.approx(float(x.double().std()))  # raw coordinates, scale s
    assert units.foreground(d.train.foreground[:2]).sum() == 2 * (32 - round(0.2 * 32))


def test_knowledge_points_run_on_a_tiny_point_cloud_study(tmp_path) -> None:
    """The study machinery end to end on point clouds: one σ per point, foreground = object
    points, the metrics per network with verdicts, the report's point-cloud figures."""
    from kdscope import io
    from kdscope.config import parse_study
    from kdscope.pipeline import run_study

    cfg = parse_study(
        {
            "dataset": {"name": "points", "n_train": 96, "n_test": 32, "num_points": 48},
            "teacher": {"model": {"name": "pointnet", "width": 8, "num_points": 48},
                        "train": {"epochs": 2, "batch_size": 16}},
            "student": {"model": {"name": "pointnet_small", "width": 4, "num_points": 48},
                        "train": {"epochs": 2, "batch_size": 16}},
            "students": [{"method": "kd"}],
            "seeds": [0],
            "layers": ["conv"],
            "checkpoints": [0, 1, 2],
            # two epochs train no network that discards clutter more than the object (the
            # "effective" rule); the filter is off so every analysed input is measured
            "analyses": [{"name": "knowledge_points", "candidates": 6, "target": None,
                          "effective_filter": False}],
        }
    )  # fmt: skip
    run_study(cfg, tmp_path, quiet=True)
    kp = io.read_json(tmp_path / "summary.json")["analyses"]["knowledge_points"]
    assert "skipped" not in kp
    assert kp["settings"]["units_n"] == 48  # one unit per point
    nets = kp["layers"]["conv"]["networks"]
    assert set(nets) == {"teacher", "baseline", "kd"}
    for net in nets.values():
        m = net["metrics"]
        # 48 points, 10 of them clutter (round(0.2 * 48)): counts are bounded by each side
        assert 0 <= m["n_fg"]["mean"] <= 38 and 0 <= m["n_bg"]["mean"] <= 10
    assert set(kp["layers"]["conv"]["comparisons"]["kd"]["hypotheses"]) == {
        "quantity_quality",
        "learning_speed",
        "stability",
    }
    assert "example entropy maps with knowledge points" in (tmp_path / "report.html").read_text()
