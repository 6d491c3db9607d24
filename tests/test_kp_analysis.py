"""The knowledge-point analysis: verdict rules, input selection, pairing and a whole study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdscope import io, load_preset, parse_study, run_study
from kdscope.analyses.knowledge_points import cache_path, hypothesis_verdict, metric_verdict
from kdscope.errors import ConfigError
from kdscope.knowledge_points.diagnosis import (
    EntropyTrajectory,
    _effective,
    compare,
    network_metrics,
    statistic,
)


def test_metric_verdicts() -> None:
    assert metric_verdict([0.1, 0.5], "higher") == "holds"
    assert metric_verdict([-0.5, -0.1], "higher") == "does not hold"
    assert metric_verdict([-0.5, -0.1], "lower") == "holds"
    assert metric_verdict([0.1, 0.5], "lower") == "does not hold"
    assert metric_verdict([-0.1, 0.5], "higher") == "inconclusive"
    assert metric_verdict([0.0, 0.5], "higher") == "inconclusive"  # must exclude 0


def test_hypothesis_verdicts() -> None:
    assert hypothesis_verdict(["holds", "holds"]) == "holds"
    assert hypothesis_verdict(["holds", "inconclusive"]) == "partly supported"
    assert hypothesis_verdict(["holds", "does not hold"]) == "does not hold"
    assert hypothesis_verdict(["inconclusive"]) == "inconclusive"


def test_paired_statistics() -> None:
    # rows: student (n_fg, n_bg, quality, d, rho) then baseline; two inputs
    rows = np.array(
        [
            [3, 1, 0.75, 0.2, 1.0, 1, 1, 0.5, 0.4, 0.5],
            [5, 0, 1.00, 0.4, 0.5, 2, 2, 0.5, 0.4, 0.5],
        ],
        dtype=float,
    )[None, None]
    assert statistic("n_fg", paired=True)(rows)[0, 0] == pytest.approx(2.5)
    assert statistic("n_bg", paired=True)(rows)[0, 0] == pytest.approx(-1.0)
    assert statistic("d_mean", paired=True)(rows)[0, 0] == pytest.approx(-0.1)
    assert statistic("d_std", paired=True)(rows)[0, 0] == pytest.approx(0.1)  # 0.1 − 0
    assert statistic("rho")(rows[..., :5])[0, 0] == pytest.approx(0.75)


def _traj(entropy: np.ndarray, fg: np.ndarray, effective: np.ndarray) -> EntropyTrajectory:
    i, k, n = entropy.shape
    return EntropyTrajectory(
        entropy=entropy.astype(np.float32),
        sigma_f=np.ones((i, k)),
        calibrated=np.ones((i, k), dtype=bool),
        foreground=fg,
        valid=np.ones((i, n), dtype=bool),
        candidates=np.arange(i),
        effective=effective,
        epochs=np.arange(k),
        distance=np.linspace(0, 1, k),
        info={},
    )


def test_effective_filter() -> None:
    fg = np.array([[True, True, False, False]] * 3)
    late = np.array([False, True])
    h = np.full((3, 2, 4), -2.8)
    h[0, 1] = [-3.0, -3.0, -2.5, -2.5]  # bg above fg late: effective
    h[1, 1] = [-2.5, -2.5, -3.0, -3.0]  # fg above bg late: not effective
    h[2, 0] = [-2.5, -2.5, -3.0, -3.0]  # only early: effective
    sigma_f = np.ones((3, 2))
    valid = np.ones((3, 4), dtype=bool)
    assert _effective(h, sigma_f, fg, valid, late).tolist() == [True, False, True]
    sigma_f[2, 0] = 0.0  # dead features at one checkpoint
    assert _effective(h, sigma_f, fg, valid, late).tolist() == [True, False, False]
    no_bg = np.ones((3, 4), dtype=bool)
    assert not _effective(h, np.ones((3, 2)), no_bg, valid, late).any()


def test_compare_uses_the_intersection_of_effective_inputs() -> None:
    rng = np.random.default_rng(0)
    fg = np.array([[True, True, False, False]] * 4)
    student = _traj(rng.normal(-2.8, 0.3, (4, 3, 4)), fg, np.array([1, 1, 0, 1], dtype=bool))
    baseline = _traj(rng.normal(-2.8, 0.3, (4, 3, 4)), fg, np.array([1, 0, 1, 1], dtype=bool))
    rows, common = compare(student, baseline)
    assert common.tolist() == [0, 3]
    ms = network_metrics(student.rows(common))
    assert rows.shape == (2, 10)
    assert np.allclose(rows[:, 0], ms["n_fg"]) and np.allclose(rows[:, 3], ms["d"])
    rows, common = compare(student, baseline, effective_filter=False)
    assert common.tolist() == [0, 1, 2, 3]


def test_unknown_analysis_parameter_is_rejected() -> None:
    data = load_preset("smoke").model_dump(mode="json")
    data["analyses"] = [{"name": "knowledge_points", "candidate": 3}]
    with pytest.raises(ConfigError, match="unknown parameter 'candidate'"):
        parse_study(data)


@pytest.fixture(scope="module")
def kp_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    data = load_preset("smoke").model_dump(mode="json")
    data["students"] = [{"method": "kd"}, {"method": "feature_mimic"}]
    data["analyses"] = [{"name": "knowledge_points", "candidates": 12, "target": 6}]
    out = tmp_path_factory.mktemp("kp")
    run_study(parse_study(data), out, quiet=True)
    return data, out


def test_study_summary_has_metrics_intervals_and_verdicts(kp_study: tuple[dict, Path]) -> None:
    _, out = kp_study
    kp = io.read_json(out / "summary.json")["analyses"]["knowledge_points"]
    assert kp["settings"]["lambda"] == 7.0 and kp["settings"]["units_n"] == 64
    assert set(kp["layers"]) == {"conv", "fc1"}
    for layer in kp["layers"].values():
        assert set(layer["networks"]) == {"teacher", "baseline", "kd", "feature_mimic"}
        base = layer["networks"]["baseline"]
        assert base["inputs"]["0"]["effective"] <= 6
        for name in ("n_fg", "n_bg", "quality", "d_mean", "d_std", "d_var", "rho"):
            m = base["metrics"][name]
            assert set(m["per_seed"]) == {"0", "1"}
            assert m["mean"] == pytest.approx(np.mean(list(m["per_seed"].values())))
        for cmp in layer["comparisons"].values():
            assert cmp["baseline"] == "baseline"
            assert set(cmp["hypotheses"]) == {"quantity_quality", "learning_speed", "stability"}
            for m in cmp["metrics"].values():
                lo, hi = m["ci95"]
                assert lo <= hi
                assert m["verdict"] == metric_verdict([lo, hi], m["expected"])


def test_study_analysis_resumes_from_its_cache(kp_study: tuple[dict, Path]) -> None:
    data, out = kp_study
    path = cache_path(out, "kd", 0, "conv")
    before = path.stat().st_mtime_ns
    summary = io.read_json(out / "summary.json")
    run_study(parse_study(data), out, quiet=True)  # everything complete: nothing recomputed
    assert path.stat().st_mtime_ns == before
    again = io.read_json(out / "summary.json")
    assert again["analyses"] == summary["analyses"]


def test_api_on_a_plain_module_without_a_study() -> None:
    import torch
    from torch import nn

    from kdscope import knowledge_points as kp

    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
        for _ in range(2)
    ]
    x = torch.rand(5, 3, 8, 8)
    masks = torch.zeros(5, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    units = kp.image_grid((3, 8, 8), 4)
    traj = kp.entropy_trajectory(nets, "0", x, masks, units, [0, 1], [0.0, 0.5])
    assert traj.entropy.shape == (5, 2, 16)
    assert traj.foreground[0].sum() == 4  # the central 2x2 cells
    assert traj.info["perturbation_space"] == "input"
    assert traj.info["scale_s"] == pytest.approx(float(x.double().std()))
    m = kp.network_metrics(traj.rows(traj.candidates))
    assert m["n_fg"].shape == (5,) and m["points"].shape == (5, 2, 16)


def test_bench_agreement_measures() -> None:
    from kdscope.bench import _agreement
    from kdscope.knowledge_points import metrics

    fg = np.array([[True, True, False, False]] * 2)
    ref = np.array([[-3.4, -3.0, -2.8, -2.7], [-3.0, -3.3, -2.6, -2.9]])
    same = _agreement(ref, ref, fg, metrics)
    assert same == {
        "spearman": 1.0,
        "abs_dN_fg": 0.0,
        "abs_dN_bg": 0.0,
        "d_mean_N_fg": 0.0,
        "d_mean_N_bg": 0.0,
    }
    # reversed unit order in the first map: Spearman −1 there, +1 in the second
    other = ref.copy()
    other[0] = other[0, ::-1]
    out = _agreement(other, ref, fg, metrics)
    assert out["spearman"] == pytest.approx(0.0)
    # ref: level −2.75, points where H < −2.95: A {0, 1}, B {0, 1} → N_fg (2, 2), N_bg (0, 0);
    # other: level −2.975, H < −3.175: A {3}, B {1} → N_fg (0, 1), N_bg (1, 0)
    assert out["abs_dN_fg"] == pytest.approx(1.5) and out["abs_dN_bg"] == pytest.approx(0.5)
    assert out["d_mean_N_fg"] == pytest.approx(-1.5) and out["d_mean_N_bg"] == pytest.approx(0.5)
