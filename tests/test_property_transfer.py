"""Property transfer: CKA and Grad-CAM against closed forms, win rates on hand-built cases, and
the localisation and representation-similarity analyses on a small study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kdscope.config import AnalysisConfig, load_preset
from kdscope.property_transfer import (
    foreground_energy,
    gradcam_maps,
    gram_cka,
    linear_cka,
    map_cosine,
    win_rate,
)
from kdscope.study import run_study


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


# ----------------------------------------------------------------------------- CKA


def test_cka_identities_and_invariances() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)  # orthogonal
    assert linear_cka(x, 3.5 * x) == pytest.approx(1.0, abs=1e-12)  # isotropic scaling
    scale = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 0.1], dtype=torch.float64))
    assert linear_cka(x, x @ scale) < 0.99  # not invariant to anisotropic scaling
    y = torch.randn(50, 5, generator=g, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(gram_cka(x, y), abs=1e-6)


def test_cka_of_orthonormal_columns_against_one_of_them() -> None:
    """X with orthonormal centred columns and Y its first column: CKA = 1/sqrt(p1)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    a = a - a.mean(0)
    q, _ = torch.linalg.qr(a)
    assert linear_cka(q, q[:, :1]) == pytest.approx(1 / np.sqrt(6), abs=1e-9)


# ----------------------------------------------------------------------------- Grad-CAM


class GapNet(nn.Module):
    """conv -> ReLU (the target layer) -> global average pool -> linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_gradcam_equals_the_class_activation_map() -> None:
    """With GAP + linear head, Grad-CAM(c) = ReLU(Σ_k W[c,k] A^k) / (h w) (the CAM)."""
    net = GapNet()
    x = torch.rand(5, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 1, 0])
    maps = gradcam_maps(net, "conv", x, target)
    with torch.no_grad():
        a = net.conv(x)
        w = net.fc.weight[target]
        cam = torch.relu((w[:, :, None, None] * a).sum(1)) / 64
    torch.testing.assert_close(maps, cam, atol=1e-6, rtol=1e-5)
    assert _hooks(net) == 0
    assert all(p.grad is None for p in net.parameters())


def test_gradcam_upsamples_to_the_input() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    )
    maps = gradcam_maps(net, "1", torch.rand(2, 3, 8, 8), torch.tensor([0, 2]))
    assert maps.shape == (2, 8, 8) and bool((maps >= 0).all())


# ----------------------------------------------------------------------------- win rates


def test_win_rate_known_cases() -> None:
    rng = np.random.default_rng(0)
    t = torch.rand(400, 6, 6)
    ind = torch.rand(400, 6, 6)
    same = map_cosine(t, t)
    other = map_cosine(t, ind)
    wins, excluded = win_rate(same, other)  # S = T beats a generic Ind everywhere
    assert wins.mean() == 1.0 and excluded == 0
    wins, _ = win_rate(other, other)  # S = Ind: every comparison ties
    assert wins.mean() == 0.5
    # exchangeable random maps: ~50 %
    a, b = torch.from_numpy(rng.random((4000, 6, 6))), torch.from_numpy(rng.random((4000, 6, 6)))
    t2 = torch.from_numpy(rng.random((4000, 6, 6)))
    wins, _ = win_rate(map_cosine(t2, a), map_cosine(t2, b))
    assert abs(wins.mean() - 0.5) < 0.03
    # an all-zero map is excluded and counted
    z = ind.clone()
    z[0] = 0
    _, excluded = win_rate(map_cosine(t, z), other)
    assert excluded == 1


def test_foreground_energy() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, :2] = 1.0
    maps[1] = 1.0
    fg = torch.zeros(2, 4, 4, dtype=torch.bool)
    fg[:, :2] = True
    np.testing.assert_allclose(foreground_energy(maps, fg), [1.0, 0.5])
    assert np.isnan(foreground_energy(torch.zeros(1, 4, 4), fg[:1]))[0]


# ----------------------------------------------------------------------------- analyses


def test_localisation_and_cka_analyses_on_a_small_study(tmp_path) -> None:
    cfg = load_preset("smoke").model_copy(
        update={
            "analyses": tuple(
                AnalysisConfig(**a)
                for a in (
                    {"name": "localisation", "n_inputs": 64},
                    {"name": "representation_similarity", "n_inputs": 64},
                    {"name": "adversarial", "n_inputs": 64, "calibration": 48},
                )
            )
        }
    )
    result = run_study(cfg, tmp_path, quiet=True)
    a = json.loads((tmp_path / "summary.json").read_text())["analyses"]
    loc = a["localisation"]
    assert loc["n_inputs"] == 64 and set(loc["students"]) >= {"kd", "hint"}
    for s in loc["students"].values():
        assert 0 <= s["win_rate"]["mean"] <= 100
        assert s["verdict"] in {"transfers", "no transfer", "confounded", "no control"}
        assert len(s["win_rate"]["pairs"]) == 4  # 2 student seeds x 2 independent seeds
    ctrl = loc["controls"]["baseline"]["cam"]
    assert ctrl["pairs"] == ["0-1"]
    cka = a["representation_similarity"]
    kd = cka["groups"]["kd"]
    assert 0 <= kd["matched"]["mean"] <= 1 + 1e-9
    assert "logits" in kd["matched_layers"] and "conv" in kd["matched_layers"]
    assert cka["comparisons"]["kd"]["verdict"] in {"transfers", "no transfer"}
    adv = a["adversarial"]
    assert set(adv["sources"]) == {"teacher, ε×1", "teacher, ε×0.5", "teacher, ε×2", "foreign, ε×1"}
    main = adv["sources"]["teacher, ε×1"]
    assert 0 <= main["groups"]["kd"]["fooled"]["mean"] <= 1
    assert adv["verdicts"]["kd"] in {"transfers", "no transfer", "confounded"}
    # a larger ε fools the teacher at least as often
    rates = [adv["sources"][f"teacher, ε×{f}"]["source_rate"] for f in ("0.5", "1", "2")]
    assert rates == sorted(rates)
    assert (tmp_path / "analyses" / "adversarial" / "foreign_vgg_small" / "result.json").exists()
    html = (tmp_path / "report.html").read_text()
    assert "Grad-CAM" in html and "CKA" in html and "FGSM" in html

    # a collapsed student (every weight zero: constant activations, CKA undefined everywhere)
    # drops out of the paired CKA difference instead of making it NaN
    from kdscope.analyses import ANALYSES

    ckpt = result.groups["kd"].runs[1].checkpoint_path(cfg.student.train.epochs)
    state = torch.load(ckpt)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, ckpt)
    cka = ANALYSES.get("representation_similarity")(n_inputs=64).run(result)
    kd = cka["groups"]["kd"]
    assert set(kd["undefined_layers"]) == {"1"} and "logits" in kd["undefined_layers"]["1"]
    assert list(kd["matched"]["per_seed"]) == ["0"]
    diff = cka["comparisons"]["kd"]["difference"]
    assert list(diff["per_seed"]) == ["0"] and np.isfinite(diff["mean"])


def test_transfer_verdict_rules() -> None:
    from kdscope.analyses.study_views import transfer_verdict

    def localisation_verdict(wr: dict, control: dict | None) -> str:
        return transfer_verdict(wr, control, null=50.0)

    adversarial_verdict = transfer_verdict

    def s(mean: float, lo: float, hi: float) -> dict:
        return {"mean": mean, "ci95": [lo, hi]}

    assert localisation_verdict(s(60, 55, 65), s(50, 45, 55)) == "transfers"
    assert localisation_verdict(s(60, 55, 65), s(58, 52, 64)) == "confounded"
    assert localisation_verdict(s(52, 48, 56), s(50, 45, 55)) == "no transfer"
    assert localisation_verdict(s(60, 55, 65), None) == "no control"
    assert adversarial_verdict(s(0.1, 0.05, 0.15), s(0.0, -0.02, 0.02)) == "transfers"
    assert adversarial_verdict(s(0.1, 0.05, 0.15), s(0.08, 0.03, 0.13)) == "confounded"
    assert adversarial_verdict(s(0.01, -0.02, 0.04), s(0.0, -0.02, 0.02)) == "no transfer"
    assert adversarial_verdict(s(0.1, 0.05, 0.15), None) == "no control"
