"""Property transfer: CKA (biased and debiased) and Grad-CAM against closed forms, win-rate grids,
and the transfer rule on hand-built cases, and the localisation,
representation-similarity and adversarial analyses on a small study."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kdscope.config import AnalysisConfig, load_preset
from kdscope.pipeline import run_study
from kdscope.property_transfer import (
    debiased_cka,
    foreground_energy,
    gradcam_maps,
    gram_cka,
    linear_cka,
    map_cosine,
    win_grid,
)
from kdscope.property_transfer.representation_similarity import centred_gram, u_centre


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


# ----------------------------------------------------------------------------- CKA


def test_cka_identities_and_invariances() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = torch.randn(50, 5, generator=g, dtype=torch.float64) + 0.5 * x[:, :5]
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-9)  # orthogonal
    assert linear_cka(x, 3.5 * x) == pytest.approx(1.0, abs=1e-12)  # isotropic scaling
    scale = torch.diag(torch.tensor([10.0, 1, 1, 1, 1, 1, 1, 0.1], dtype=torch.float64))
    assert linear_cka(x, x @ scale) < 0.99  # not invariant to anisotropic scaling
    assert linear_cka(x, y) == pytest.approx(gram_cka(x, y), abs=1e-6)
    # the debiased estimator: 1 for identical features, unchanged by an orthogonal transform or
    # an isotropic scaling of either side, changed by an anisotropic one
    assert debiased_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    for f in (gram_cka, debiased_cka):
        assert f(x @ q, 3.5 * y) == pytest.approx(f(x, y), abs=1e-12)
        assert f(x @ scale, y) != pytest.approx(f(x, y), abs=1e-3)


def test_debiased_cka_of_independent_wide_features() -> None:
    """Independent random features, 2,048 of them on 256 inputs: the biased estimator reads a
    high similarity (0.89), the debiased one about 0."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2048, generator=g, dtype=torch.float64)
    y = torch.randn(256, 2048, generator=g, dtype=torch.float64)
    assert gram_cka(x, y) > 0.8
    assert abs(debiased_cka(x, y)) < 0.05


def test_unbiased_hsic_closed_form() -> None:
    """By hand, n = 4, x = (1, −1, 1, −1), y = (1, 1, −1, −1) (orthogonal, so biased CKA 0):
    K̃ has off-diagonal entries ±1 with every row sum −1, tr(K̃K̃) = 12, 1ᵀK̃1 = −4,
    1ᵀK̃K̃1 = 4, so HSIC₁(K, K) = [12 + 16/6 − 4] / (4·1) = 8/3; likewise HSIC₁(L, L) = 8/3 and
    tr(K̃L̃) = −4, 1ᵀK̃L̃1 = 4, HSIC₁(K, L) = [−4 + 16/6 − 4] / 4 = −4/3; debiased CKA = −1/2."""
    x = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    y = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    k, l_ = u_centre(centred_gram(x)), u_centre(centred_gram(y))
    assert float((k * k).sum()) / 4 == pytest.approx(8 / 3, abs=1e-12)
    assert float((k * l_).sum()) / 4 == pytest.approx(-4 / 3, abs=1e-12)
    assert debiased_cka(x, y) == pytest.approx(-0.5, abs=1e-12)
    assert gram_cka(x, y) == pytest.approx(0.0, abs=1e-12)

    def song(a: np.ndarray, b: np.ndarray) -> float:
        """Song et al.'s direct formula on raw (uncentred) linear Gram matrices."""
        n = len(a)
        kt, lt = a @ a.T, b @ b.T
        np.fill_diagonal(kt, 0)
        np.fill_diagonal(lt, 0)
        one = np.ones(n)
        return (
            np.trace(kt @ lt)
            + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ kt @ lt @ one)
        ) / (n * (n - 3))

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 3)) + 2.0, rng.normal(size=(9, 5))  # a shifted: no centring
    u, v = u_centre(centred_gram(torch.from_numpy(a))), u_centre(centred_gram(torch.from_numpy(b)))
    assert float((u * v).sum()) / (9 * 6) == pytest.approx(song(a, b), rel=1e-10)
    assert debiased_cka(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        song(a, b) / np.sqrt(song(a, a) * song(b, b)), rel=1e-10
    )
    with pytest.raises(ValueError, match="at least 4"):
        debiased_cka(x[:3], y[:3])


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


def test_win_grid_known_cases() -> None:
    rng = np.random.default_rng(0)
    t = torch.rand(400, 6, 6)
    ind = torch.rand(400, 6, 6)
    same = map_cosine(t, t)
    other = map_cosine(t, ind)
    wins, excluded = win_grid(same, other)  # S = T beats a generic Ind everywhere
    assert wins.shape == (1, 1, 400) and wins.mean() == 1.0 and excluded == 0
    wins, _ = win_grid(other, other)  # S = Ind: every comparison ties
    assert wins.mean() == 0.5
    # exchangeable random maps: ~50 %
    a, b = torch.from_numpy(rng.random((4000, 6, 6))), torch.from_numpy(rng.random((4000, 6, 6)))
    t2 = torch.from_numpy(rng.random((4000, 6, 6)))
    wins, _ = win_grid(map_cosine(t2, a), map_cosine(t2, b))
    assert abs(wins.mean() - 0.5) < 0.03
    # seeds × seeds: an input with an all-zero map in any seed is dropped from every pair
    z0, z1 = ind.clone(), ind.clone()
    z0[0] = 0
    z1[3] = 0
    wins, excluded = win_grid(np.stack([same, map_cosine(t, z0)]), np.stack([other, other]))
    assert wins.shape == (2, 2, 399) and excluded == 1
    wins, excluded = win_grid(
        np.stack([same, map_cosine(t, z0)]), np.stack([other, map_cosine(t, z1)])
    )
    assert wins.shape == (2, 2, 398) and excluded == 2
    assert wins[0].mean() == 1.0 and wins[1, 0].mean() == 0.5  # S seed 0 = T; S seed 1 = Ind


def test_crossed_win_rate_and_independent_spread() -> None:
    from kdscope.analyses.property_transfer.localisation import crossed_win_rate, independent_spread

    s = {0: np.array([0.9, 0.9, 0.9, np.nan]), 1: np.array([0.9, 0.1, 0.5, 0.9])}
    ind = {0: np.array([0.5, 0.5, 0.5, 0.5]), 1: np.array([0.5, 0.5, 0.9, 0.5])}
    wr = crossed_win_rate(s, ind)
    # input 3 is dropped; pairs (S seed, Ind seed): 0-0 wins 3/3, 0-1 2.5/3, 1-0 1.5/3, 1-1 1/3
    assert wr["excluded_inputs"] == 1 and wr["design"] == "seeds × seeds × inputs"
    expected = {"0-0": 100.0, "0-1": 250 / 3, "1-0": 50.0, "1-1": 100 / 3}
    assert wr["per_seed"] == pytest.approx(expected)
    assert wr["mean"] == pytest.approx(200 / 3) and wr["n_seeds"] == 2
    gap = crossed_win_rate(s, ind, centre=50.0)  # the teacher-ward gap: win rate − 50
    assert gap["mean"] == pytest.approx(50 / 3)
    np.testing.assert_allclose(gap["ci95"], np.array(wr["ci95"]) - 50, atol=1e-9)
    one = crossed_win_rate({0: s[0]}, ind)  # one student seed: no interval
    assert one["n_seeds"] == 1 and np.isnan(one["ci95"][0])
    spread = independent_spread(ind)
    # Ind seed 0 over Ind seed 1: ties on inputs 0, 1, 3, a loss on input 2: 1.5/4
    assert spread == {"per_pair": {"0-1": 37.5}, "mean_abs_deviation": 12.5}
    assert independent_spread({0: ind[0]}) is None


def test_foreground_energy() -> None:
    maps = torch.zeros(2, 4, 4)
    maps[0, :2] = 1.0
    maps[1] = 1.0
    fg = torch.zeros(2, 4, 4, dtype=torch.bool)
    fg[:, :2] = True
    np.testing.assert_allclose(foreground_energy(maps, fg), [1.0, 0.5])
    assert np.isnan(foreground_energy(torch.zeros(1, 4, 4), fg[:1]))[0]


# ----------------------------------------------------------------------------- analyses


def test_transfer_verdict_rules() -> None:
    """The rule every property analysis uses, on hand-built summaries (margin 0.03 on a
    fooling-rate gap; 5 points on a win rate − 50)."""
    from kdscope.verdicts import transfer

    def s(mean: float, lo: float, hi: float, ci90: tuple | None = None, n: int = 3) -> dict:
        ci90 = ci90 or (lo + 0.2 * (hi - lo), hi - 0.2 * (hi - lo))  # inside the 95 % one
        return {"mean": mean, "n_seeds": n, "ci95": [lo, hi], "ci90": list(ci90)}

    gap, above, null = s(0.1, 0.05, 0.15), s(0.05, 0.01, 0.09), s(0.0, -0.04, 0.04)
    assert transfer(gap, [above], 0.03) == "transfers"
    assert transfer(gap, [above, null], 0.03) == "confounded"  # a control equivalent to S
    assert transfer(gap, [s(-0.05, -0.09, -0.01)], 0.03) == "confounded"  # control beyond S
    # a control too uncertain to tell apart confounds nothing, and confirms nothing
    assert transfer(gap, [s(-0.02, -0.05, 0.01)], 0.03) == "control inconclusive"
    assert transfer(gap, [above, s(0.3, -0.4, 1.0)], 0.03) == "control inconclusive"
    assert transfer(gap, [], 0.03) == "no control"
    assert transfer(gap, [s(0.05, 0.01, 0.09, n=1)], 0.03) == "no control"  # unusable control
    # a wide interval around 0 is not evidence of no transfer
    assert transfer(s(0.01, -0.2, 0.22), [above], 0.03) == "inconclusive"
    # a 90 % interval inside ±margin is
    tight = s(0.01, -0.025, 0.045, ci90=(-0.015, 0.029))
    assert transfer(tight, [above], 0.03) == "no transfer"
    assert transfer(tight, [above], 0.02) == "inconclusive"  # 0.029 > 0.02
    assert transfer(s(-0.1, -0.15, -0.05), [above], 0.03) == "away from the teacher"
    assert transfer(s(0.1, float("nan"), float("nan"), n=1), [above], 0.03) == "too few seeds"
    # a localisation gap: win rate − 50 in points, margin 5
    assert transfer(s(12.0, 4.0, 20.0), [s(6.0, 1.0, 11.0)], 5.0) == "transfers"
    assert transfer(s(1.0, -3.0, 5.5, ci90=(-2.0, 4.0)), [s(6.0, 1.0, 11.0)], 5.0) == "no transfer"


def test_localisation_cka_and_adversarial_analyses_on_a_small_study(tmp_path) -> None:
    from kdscope.analyses.property_transfer.adversarial import FOREIGN, MAIN
    from kdscope.analyses.property_transfer.adversarial import WHAT as ADV
    from kdscope.analyses.property_transfer.localisation import EXTENSION
    from kdscope.analyses.property_transfer.localisation import WHAT as LOC
    from kdscope.analyses.property_transfer.representation_similarity import WHAT as CKA
    from kdscope.config import StudentConfig

    cfg = load_preset("smoke").model_copy(
        update={
            "students": (
                StudentConfig(method="kd"),
                StudentConfig(method="hint"),
                StudentConfig(method="soft_label", noise_var=0.02),
            ),
            "analyses": tuple(
                AnalysisConfig(**a)
                for a in (
                    {"name": "localisation", "n_inputs": 64},
                    {"name": "representation_similarity", "n_inputs": 64},
                    {"name": "adversarial", "n_inputs": 64, "calibration": 48},
                )
            ),
        }
    )
    result = run_study(cfg, tmp_path, quiet=True)
    a = json.loads((tmp_path / "summary.json").read_text())["analyses"]

    loc = a["localisation"]
    assert loc["n_inputs"] == 64 and loc["margin"] == 5.0
    assert set(loc["students"]) == {"kd", "hint", "soft_label"}
    assert set(loc["verdicts"]) == {LOC} and set(loc["verdicts"][LOC]) == {"kd", "hint"}
    assert set(loc["extension"][EXTENSION]) == {"kd", "hint"}  # kept apart: not a finding
    assert set(loc["premise"]) == {"kd", "hint"}
    for name, rec in loc["verdicts"][LOC].items():
        wr = loc["students"][name]["cam"]["win_rate"]
        assert 0 <= wr["mean"] <= 100 and wr["n_seeds"] == 2
        # every (student seed, independent seed) pair, crossed with the inputs
        assert list(wr["per_seed"]) == ["0-0", "0-1", "1-0", "1-1"]
        assert rec["gap"]["mean"] == pytest.approx(wr["mean"] - 50)
        assert set(rec["controls"]) == {"soft_label"}  # head-to-head against the control
        head = loc["students"][name]["cam"]["against_controls"]["soft_label"]
        assert rec["controls"]["soft_label"]["mean"] == pytest.approx(head["mean"] - 50)
        assert rec["margin"] == 5.0 and rec["premise"] == loc["premise"][name]
    assert list(loc["independent_spread"]["baseline"]["cam"]["per_pair"]) == ["0-1"]

    cka = a["representation_similarity"]
    # flattened conv maps (6 channels × 16 × 16) outnumber the 64 inputs: debiased by default
    assert cka["estimator"] == "debiased" and cka["widest_layer"] > 64
    kd = cka["groups"]["kd"]
    assert -1 <= kd["matched"]["debiased"]["mean"] <= 1 + 1e-9
    assert 0 <= kd["matched"]["biased"]["mean"] <= 1 + 1e-9
    assert {"logits", "conv"} <= set(kd["matched_layers"]["debiased"])
    rec = cka["verdicts"][CKA]["kd"]
    diff = cka["comparisons"]["kd"]["difference"]["debiased"]
    assert rec["gap"] == diff and rec["margin"] == 0.03 and set(rec["controls"]) == {"soft_label"}
    m = {n: kd_["matched"]["debiased"]["per_seed"] for n, kd_ in cka["groups"].items()}
    for seed in ("0", "1"):  # one value per seed, paired by seed
        assert diff["per_seed"][seed] == pytest.approx(m["kd"][seed] - m["baseline"][seed])
        assert rec["controls"]["soft_label"]["per_seed"][seed] == pytest.approx(
            m["kd"][seed] - m["soft_label"][seed]
        )

    adv = a["adversarial"]
    assert set(adv["sources"]) == {"teacher, ε×1", "teacher, ε×0.5", "teacher, ε×2", FOREIGN}
    main = adv["sources"][MAIN]
    assert 0 <= main["groups"]["kd"]["fooled"]["mean"] <= 1
    assert main["gaps"]["kd"]["fooled"]["design"] == "seeds × inputs"
    rec = adv["verdicts"][ADV]["kd"]
    assert rec["gap"] == main["gaps"]["kd"]["fooled"] and rec["margin"] == 0.03
    assert set(rec["controls"]) == {"foreign source", "soft_label"}
    foreign = adv["sources"][FOREIGN]["gaps"]["kd"]["fooled"]["per_seed"]
    for seed in ("0", "1"):  # per seed: gap on the teacher's attacks − gap on the foreign ones
        assert rec["controls"]["foreign source"]["per_seed"][seed] == pytest.approx(
            main["gaps"]["kd"]["fooled"]["per_seed"][seed] - foreign[seed]
        )
    # a larger ε fools the teacher at least as often
    rates = [adv["sources"][f"teacher, ε×{f}"]["source_rate"] for f in ("0.5", "1", "2")]
    assert rates == sorted(rates)
    assert (tmp_path / "analyses" / "adversarial" / "foreign_vgg_small" / "result.json").exists()
    html = (tmp_path / "report.html").read_text()
    for words in ("Grad-CAM", "Estimator for the verdicts: <b>debiased</b>", "FGSM", "Premise"):
        assert words in html

    # accuracy matching that cannot succeed (tolerance −1: no accuracy is 1 below another's):
    # every factor is tried, the record reads "not matched" and keeps the rule's verdict
    from kdscope.analyses import ANALYSES

    am = ANALYSES.get("accuracy_matched")(factors=(0.5,), tolerance=-1.0, n_inputs=32)
    out = am.run(result)
    kd = out["students"]["kd"]
    assert [t["factor"] for t in kd["tried"]] == [0.5] and kd["matched"] is False
    rec = out["verdicts"]["adversarial at matched accuracy"]["kd"]
    assert rec["verdict"] == "not matched" and rec["premise"] == "not applicable (accuracy matched)"
    assert rec["verdict_without_guard"] != "not matched" and rec["gap"]["n_seeds"] == 2
    assert set(rec["controls"]) == ({"foreign source"} if out["n_kept_foreign"] else set())

    # a collapsed student (every weight zero: constant activations, CKA undefined everywhere)
    # is counted and left out of the paired CKA difference instead of making it NaN

    ckpt = result.groups["kd"].runs[1].checkpoint_path(cfg.student.train.epochs)
    state = torch.load(ckpt)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, ckpt)
    cka = ANALYSES.get("representation_similarity")(n_inputs=64).run(result)
    kd = cka["groups"]["kd"]
    assert set(kd["undefined_layers"]) == {"1"} and "logits" in kd["undefined_layers"]["1"]
    assert kd["matched"]["debiased"]["undefined_seeds"] == [1]
    diff = cka["comparisons"]["kd"]["difference"]["debiased"]
    assert diff["undefined_seeds"] == [1] and diff["n_seeds"] == 1 and np.isfinite(diff["mean"])
    rec = cka["verdicts"][CKA]["kd"]  # the zeroed seed may also sit at chance: a guard on top
    assert rec.get("verdict_without_guard", rec["verdict"]) == "too few seeds"
