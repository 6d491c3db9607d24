"""The knowledge-point analysis: verdict rules, input selection, pairing and a whole study."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from kp_fixtures import tiny_conv_nets

from kdscope import StudyResult, io, load_preset, parse_study, run_study
from kdscope.analyses.knowledge_points.knowledge_points import (
    KnowledgePointsAnalysis,
    cache_path,
    mimicked_layer,
    not_a_verdict,
)
from kdscope.errors import ConfigError, KdscopeError
from kdscope.knowledge_points.diagnosis import (
    DISPLACEMENT,
    EXPECTED,
    EntropyTrajectory,
    _effective,
    compare,
    network_metrics,
    statistic,
)
from kdscope.verdicts import directional, hypothesis


def test_paired_statistics() -> None:
    # rows: student (n_fg, n_bg, quality, d, rho, d_epoch) then baseline; two inputs
    rows = np.array(
        [
            [3, 1, 0.75, 0.2, 1.0, 0.1, 1, 1, 0.5, 0.4, 0.5, 0.3],
            [5, 0, 1.00, 0.4, 0.5, 0.2, 2, 2, 0.5, 0.4, 0.5, 0.3],
        ],
        dtype=float,
    )[None, None]
    assert statistic("n_fg", paired=True)(rows)[0, 0] == pytest.approx(2.5)
    assert statistic("n_bg", paired=True)(rows)[0, 0] == pytest.approx(-1.0)
    assert statistic("d_mean", paired=True)(rows)[0, 0] == pytest.approx(-0.1)
    assert statistic("d_std", paired=True)(rows)[0, 0] == pytest.approx(0.1)  # 0.1 − 0
    assert statistic("rho")(rows[..., :6])[0, 0] == pytest.approx(0.75)
    assert statistic("d_epoch_mean", paired=True)(rows)[0, 0] == pytest.approx(0.15 - 0.3)
    assert statistic("d_epoch_std", paired=True)(rows)[0, 0] == pytest.approx(0.05)  # 0.05 − 0


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
        displacement=np.linspace(0, 0.5, k),
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
    assert rows.shape == (2, 12)
    assert np.allclose(rows[:, 0], ms["n_fg"]) and np.allclose(rows[:, 3], ms["d"])
    assert np.allclose(rows[:, 5], ms["d_epoch"]) and np.allclose(rows[:, 5], rows[:, 3] / 2)
    rows, common = compare(student, baseline, effective_filter=False)
    assert common.tolist() == [0, 1, 2, 3]


def test_unknown_analysis_parameter_is_rejected() -> None:
    data = load_preset("smoke").model_dump(mode="json")
    data["analyses"] = [{"name": "knowledge_points", "candidate": 3}]
    with pytest.raises(ConfigError, match="unknown parameter 'candidate'"):
        parse_study(data)


@pytest.fixture(scope="module")
def kp_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, StudyResult]:
    """KD and a feature-mimicking student at ``conv``, diagnosed at conv and fc1."""
    data = load_preset("smoke").model_dump(mode="json")
    data["students"] = [{"method": "kd"}, {"method": "feature_mimic", "layer": "conv"}]
    data["analyses"] = [{"name": "knowledge_points", "candidates": 12, "target": 6}]
    out = tmp_path_factory.mktemp("kp")
    study = run_study(parse_study(data), out, quiet=True)
    return data, out, study


def test_study_summary_has_metrics_intervals_and_verdicts(
    kp_study: tuple[dict, Path, StudyResult],
) -> None:
    _, out, _ = kp_study
    kp = io.read_json(out / "summary.json")["analyses"]["knowledge_points"]
    assert kp["settings"]["lambda"] == 7.0 and kp["settings"]["units_n"] == 64
    assert kp["settings"]["distance_for_verdicts"] == "per-step path length"
    assert set(kp["layers"]) == {"conv", "fc1"}
    for layer in kp["layers"].values():
        assert set(layer["networks"]) == {"teacher", "baseline", "kd", "feature_mimic"}
        base = layer["networks"]["baseline"]
        assert base["inputs"]["0"]["effective"] <= 6
        for name in ("n_fg", "n_bg", "quality", "d_mean", "d_std", "d_var", "rho", "d_epoch_mean"):
            m = base["metrics"][name]
            assert set(m["per_seed"]) == {"0", "1"}
            assert m["mean"] == pytest.approx(np.mean(list(m["per_seed"].values())))
        for net in layer["networks"].values():  # ‖W_e − W_(e−1)‖ ≤ the epoch's summed steps
            for seed, d in net["peak_distance"].items():
                assert np.all(np.array(net["peak_displacement"][seed]) <= np.array(d) + 1e-12)
        for cmp in layer["comparisons"].values():
            assert cmp["baseline"] == "baseline"
            if not cmp["for_verdicts"]:
                continue
            assert set(cmp["hypotheses"]) == {"quantity_quality", "learning_speed", "stability"}
            for name, m in cmp["metrics"].items():
                lo, hi = m["ci95"]
                assert lo <= hi
                if name.startswith("d_epoch"):  # shown beside the verdict basis, never a verdict
                    assert "verdict" not in m and m["expected"] == "lower"
                else:
                    expected = directional(m, m["expected"])
                    assert m["verdict"] == ("model at chance" if "at_chance" in cmp else expected)


def test_mimicking_student_gets_verdicts_only_at_its_layer(
    kp_study: tuple[dict, Path, StudyResult],
) -> None:
    _, out, _ = kp_study
    layers = io.read_json(out / "summary.json")["analyses"]["knowledge_points"]["layers"]
    at_conv, at_fc1 = (layers[x]["comparisons"]["feature_mimic"] for x in ("conv", "fc1"))
    assert at_conv["for_verdicts"] and "not_a_verdict" not in at_conv and "hypotheses" in at_conv
    assert not at_fc1["for_verdicts"] and "hypotheses" not in at_fc1
    assert at_fc1["not_a_verdict"] == "mimics conv; diagnosed at fc1: shown, not a verdict"
    assert set(at_fc1["metrics"]) == {*EXPECTED, *DISPLACEMENT}  # still computed and shown
    assert all("verdict" not in m for m in at_fc1["metrics"].values())
    for x in ("conv", "fc1"):  # KD (a kdscope extension) keeps its verdicts at every layer
        assert layers[x]["comparisons"]["kd"]["for_verdicts"]
        assert "hypotheses" in layers[x]["comparisons"]["kd"]


def test_mimic_phase_moves_no_weight_above_the_mimicked_layer(
    kp_study: tuple[dict, Path, StudyResult],
) -> None:
    """Why fc1 is no verdict for the conv-mimicking student: with 2 epochs, epoch 1 mimics
    (fc1 gets no gradient: D = 0 there) and epoch 2 trains the classifier (conv frozen)."""
    _, _, study = kp_study
    for run in study.groups["feature_mimic"].runs.values():
        layers = run.trajectory()["layers"]
        assert layers["conv"]["weights"] == ["conv.0.weight"]
        for key in ("cumulative_distance", "cumulative_displacement"):
            assert layers["fc1"][key][1] == 0.0 and layers["fc1"][key][2] > 0
            assert layers["conv"][key][1] > 0 and layers["conv"][key][2] == layers["conv"][key][1]


def test_not_a_verdict_compares_resolved_layer_paths(
    kp_study: tuple[dict, Path, StudyResult],
) -> None:
    _, _, study = kp_study
    g = dataclasses.replace(study.groups["feature_mimic"], method_params={})
    assert mimicked_layer(g) == "last_conv"  # the method's default, a role of the model
    assert not_a_verdict(g, "last_conv", "conv") is None  # last_conv resolves to conv
    assert not_a_verdict(g, "last_conv", "fc1") == (
        "mimics last_conv; diagnosed at fc1: shown, not a verdict"
    )
    assert mimicked_layer(study.groups["kd"]) is None
    assert not_a_verdict(study.groups["kd"], None, "fc1") is None


def test_optimum_mode_is_an_analysis_option(
    kp_study: tuple[dict, Path, StudyResult], tmp_path: Path
) -> None:
    """The ablation runs on a trained study (short optimisation, to stay fast): its maps are
    the estimator's optimum maps, the settings and assumptions say so, and no calibration is
    counted."""
    import torch

    from kdscope.knowledge_points.diagnosis import input_units
    from kdscope.knowledge_points.estimator import estimate

    _, _, study = kp_study
    with pytest.raises(KdscopeError, match="fast, reference, optimum"):
        KnowledgePointsAnalysis(mode="exact")  # type: ignore[arg-type]
    analysis = KnowledgePointsAnalysis(
        layers=["fc1"], mode="optimum", candidates=2, target=None, include_teacher=False
    )
    analysis.quiet = True
    analysis.settings = dataclasses.replace(analysis.settings, samples=8, optimum_steps=8)
    result = analysis.run(dataclasses.replace(study, out_dir=tmp_path))
    assert result["settings"]["mode"] == "optimum" and result["settings"]["samples"] == 8
    rows = {r["what"]: r["choice"] for r in result["assumptions"]}
    assert rows["estimator mode"].startswith("optimum (ablation)")
    base = result["layers"]["fc1"]["networks"]["baseline"]
    assert base["inputs"]["0"]["uncalibrated_maps"] is None
    run = study.groups["baseline"].runs[0]
    model = run.load()
    x = study.student_data.train.inputs[torch.tensor(result["candidates"])]
    units = input_units("image", model, x)
    direct = estimate(model, "fc1", x, units, analysis.settings).entropy.numpy()
    cached = io.load_npz(cache_path(tmp_path, "baseline", 0, "fc1"))["entropy"][:, -1]
    assert np.array_equal(cached, direct.astype(np.float32))


def test_study_analysis_resumes_from_its_cache(kp_study: tuple[dict, Path, StudyResult]) -> None:
    data, out, _ = kp_study
    path = cache_path(out, "kd", 0, "conv")
    before = path.stat().st_mtime_ns
    summary = io.read_json(out / "summary.json")
    run_study(parse_study(data), out, quiet=True)  # everything complete: nothing recomputed
    assert path.stat().st_mtime_ns == before
    again = io.read_json(out / "summary.json")
    assert again["analyses"] == summary["analyses"]


def test_models_at_chance_get_no_verdict_and_the_others_the_interval_rule(
    kp_study: tuple[dict, Path, StudyResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smoke models are at chance (4 classes, 2 epochs): every verdict reads "model at
    chance". With the guard lifted, the same cached maps give the interval rule's verdicts."""
    data, out, study = kp_study
    layers = io.read_json(out / "summary.json")["analyses"]["knowledge_points"]["layers"]
    kd = layers["conv"]["comparisons"]["kd"]
    assert set(kd["at_chance"]) == {"kd", "baseline"}
    assert {h["verdict"] for h in kd["hypotheses"].values()} == {"model at chance"}

    import kdscope.analyses.knowledge_points.knowledge_points as kp_module

    monkeypatch.setattr(kp_module, "pair_at_chance", lambda _study, _name: {})
    analysis = KnowledgePointsAnalysis(
        **{k: v for k, v in data["analyses"][0].items() if k != "name"}
    )
    analysis.quiet = True
    result = analysis.run(study)  # the maps come from the study's cache
    for layer in result["layers"].values():
        for cmp in layer["comparisons"].values():
            assert "at_chance" not in cmp
            for m in cmp["metrics"].values():
                if "verdict" in m:
                    assert m["verdict"] == directional(m, m["expected"])
            for v in cmp.get("hypotheses", {}).values():
                assert v["verdict"] == hypothesis(
                    [cmp["metrics"][m]["verdict"] for m in v["metrics"]]
                )


def test_api_on_a_plain_module_without_a_study() -> None:
    from kdscope import knowledge_points as kp

    nets, x, masks, units = tiny_conv_nets(5)
    traj = kp.entropy_trajectory(nets, "0", x, masks, units, [0, 1], [0.0, 0.5])
    assert traj.entropy.shape == (5, 2, 16)
    assert traj.foreground[0].sum() == 4  # the central 2x2 cells
    assert traj.info["perturbation_space"] == "input"
    assert traj.info["scale_s"] == pytest.approx(float(x.double().std()))
    m = kp.network_metrics(traj.rows(traj.candidates))
    assert m["n_fg"].shape == (5,) and m["points"].shape == (5, 2, 16)


def test_bench_agreement_measures() -> None:
    from kdscope.bench import _agreement, _gate

    fg = np.array([[True, True, False, False]] * 2)
    ref = np.array([[-3.4, -3.0, -2.8, -2.7], [-3.0, -3.3, -2.6, -2.9]])
    same = _agreement(ref, ref, fg)
    assert same == {
        "spearman": 1.0,
        "abs_dN_fg": 0.0,
        "max_dN_fg": 0.0,
        "abs_dN_bg": 0.0,
        "max_dN_bg": 0.0,
    }
    assert _gate(same, 25.0) == "pass" and _gate(same, 10.0) == "fail: speed"
    # reversed unit order in the first map: Spearman −1 there, +1 in the second
    other = ref.copy()
    other[0] = other[0, ::-1]
    out = _agreement(other, ref, fg)
    assert out["spearman"] == pytest.approx(0.0)
    # ref: level −2.75, points where H < −2.95: A {0, 1}, B {0, 1} → N_fg (2, 2), N_bg (0, 0);
    # other: level −2.975, H < −3.175: A {3}, B {1} → N_fg (0, 1), N_bg (1, 0)
    assert out["abs_dN_fg"] == pytest.approx(1.5) and out["max_dN_fg"] == 2.0
    assert out["abs_dN_bg"] == pytest.approx(0.5) and out["max_dN_bg"] == 1.0
    assert _gate(out, 25.0) == "fail: spearman, N_fg"


def test_bench_gate_counts_disagreements_that_cancel_in_the_mean() -> None:
    """Two inputs whose foreground counts are swapped (2, 0) vs (0, 2): the mean counts agree
    but every input is off by 2, so the per-input gate fails."""
    from kdscope.bench import _agreement, _gate

    fg = np.array([[True, True, False, False]] * 2)
    ref = np.array([[-3.4, -3.3, -2.8, -2.8], [-2.8, -2.85, -2.8, -2.75]])
    swapped = ref[::-1].copy()
    out = _agreement(swapped, ref, fg)
    assert out["abs_dN_fg"] == 2.0 and out["abs_dN_bg"] == 0.0
    assert _gate(out, 25.0).startswith("fail:") and "N_fg" in _gate(out, 25.0)
