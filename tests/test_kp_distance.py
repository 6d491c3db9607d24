"""The learning-speed distance D: which weights it measures, its two forms (per-step path length
and per-epoch displacement), their resumable logging and how old run folders are reported."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from kdscope import io
from kdscope.analyses.knowledge_points.knowledge_points import run_distances
from kdscope.errors import KdscopeError
from kdscope.knowledge_points.diagnosis import EntropyTrajectory, network_metrics
from kdscope.models import build_model
from kdscope.models.hooks import layer_weight_names, layer_weights
from kdscope.trajectory import PathLengthLogger


@pytest.mark.parametrize("name", ["cnn_small", "vgg_small", "resnet_small"])
def test_conv_bn_layer_is_measured_on_its_conv_kernel(name: str) -> None:
    model = build_model(name, 3, width=4)
    assert layer_weight_names(model, "conv") == ["conv.0.weight"]
    assert layer_weights(model, "conv")[0] is model.conv[0].weight
    x = torch.rand(2, 3, 16, 16)  # a ReLU after conv+BN: the conv kernel, not BatchNorm's γ
    assert layer_weight_names(model, "conv_act", x) == ["conv.0.weight"]
    assert layer_weight_names(model, "conv.1", x) == ["conv.0.weight"]  # BatchNorm itself
    assert layer_weight_names(model, "fc1_act", x) == ["fc1.weight"]


def test_blocks_keep_their_matrices_and_drop_layer_norms() -> None:
    block = nn.Module()
    block.norm = nn.LayerNorm(4)
    block.qkv = nn.Linear(4, 12)
    block.gn = nn.GroupNorm(2, 4)
    block.lstm = nn.LSTM(4, 3)
    model = nn.Sequential(block)
    assert layer_weight_names(model, "0") == [
        "0.qkv.weight",
        "0.lstm.weight_ih_l0",
        "0.lstm.weight_hh_l0",
    ]


def _set(model: nn.Module, conv: list[float], bn: list[float]) -> None:
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(conv).view_as(model[0].weight))
        model[1].weight.copy_(torch.tensor(bn))


def test_conv_bn_distance_uses_only_the_conv_weight() -> None:
    """Conv kernel (3, 4) → (0, 0) → (0, 4): steps of length 5 and 4 over ‖W₀‖ = 5, so D = 1.8
    and D_epoch = ‖(−3, 0)‖ / 5 = 0.6; BatchNorm's γ moves by 100 and changes nothing."""
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    _set(model, [3.0, 4.0], [10.0, 10.0])
    logger = PathLengthLogger(model, {"conv": "0"}, torch.rand(2, 1, 2, 2))
    for conv, bn in (([0.0, 0.0], [110.0, 10.0]), ([0.0, 4.0], [10.0, 10.0])):
        logger.before_step()
        _set(model, conv, bn)
        logger.after_step()
    logger.end_epoch()
    layer = logger.to_json([0, 1])["layers"]["conv"]
    assert layer["weights"] == ["0.weight"]
    assert layer["initial_norm"] == pytest.approx(5.0)
    assert layer["cumulative_distance"] == pytest.approx([0.0, 1.8])
    assert layer["cumulative_displacement"] == pytest.approx([0.0, 0.6])


def _linear() -> tuple[nn.Sequential, PathLengthLogger]:
    """A bias-free linear layer with W₀ = (3, 4) and its logger."""
    model = nn.Sequential(nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0]]))
    return model, PathLengthLogger(model, {"lin": "0"}, torch.rand(1, 2))


def _step(model: nn.Sequential, logger: PathLengthLogger, delta: tuple[float, float]) -> None:
    logger.before_step()
    with torch.no_grad():
        model[0].weight += torch.tensor([delta])
    logger.after_step()


EPOCHS = (((1.5, 0.0), (0.0, 2.0)), ((-1.5, 0.0), (1.5, 0.0)))


def test_per_step_and_per_epoch_distances_on_a_two_epoch_sequence() -> None:
    """W₀ = (3, 4), ‖W₀‖ = 5. Epoch 1 steps (1.5, 0), (0, 2): path 3.5, displacement
    ‖(1.5, 2)‖ = 2.5. Epoch 2 steps (−1.5, 0), (1.5, 0): path 3, displacement 0. So
    D = (0, 0.7, 1.3) and D_epoch = (0, 0.5, 0.5): they differ by 0.2 after epoch 1 and 0.8
    after epoch 2 (the back-and-forth of epoch 2 has no net displacement)."""
    model, logger = _linear()
    for steps in EPOCHS:
        for delta in steps:
            _step(model, logger, delta)
        logger.end_epoch()
    layer = logger.to_json([0, 1, 2])["layers"]["lin"]
    assert layer["path_length_per_epoch"] == pytest.approx([3.5, 3.0])
    assert layer["displacement_per_epoch"] == pytest.approx([2.5, 0.0])
    assert layer["cumulative_distance"] == pytest.approx([0.0, 0.7, 1.3])
    assert layer["cumulative_displacement"] == pytest.approx([0.0, 0.5, 0.5])


def test_resumed_logger_logs_the_same_numbers() -> None:
    """Kill after epoch 1, rebuild the model at its initialisation, load the weights and the
    logger's state, finish epoch 2: the same trajectory as without the interruption."""
    model, logger = _linear()
    for delta in EPOCHS[0]:
        _step(model, logger, delta)
    logger.end_epoch()
    weights, state = model.state_dict(), logger.state_dict()
    for delta in EPOCHS[1]:
        _step(model, logger, delta)
    logger.end_epoch()
    uninterrupted = logger.to_json([0, 1, 2])

    model, logger = _linear()
    model.load_state_dict(weights)
    logger.load_state_dict(state)
    for delta in EPOCHS[1]:
        _step(model, logger, delta)
    logger.end_epoch()
    assert logger.to_json([0, 1, 2]) == uninterrupted
    old = {k: v for k, v in state.items() if k not in ("displacement", "epoch_start")}
    with pytest.raises(KdscopeError, match="delete the run's state.pt"):
        logger.load_state_dict(old)


def test_peak_distance_in_both_forms() -> None:
    """A hand-built trajectory: m̂ = (2, 1); D = (0, 0.4, 0.7, 0.9) gives d = (0.7, 0.4) and the
    displacement series (0, 0.3, 0.5, 0.6) gives d_epoch = (0.5, 0.3) at the same m̂."""
    h = np.array(
        [
            [
                [-2.8] * 4,
                [-3.3, -2.7, -2.6, -2.9],
                [-3.4, -3.3, -2.6, -2.7],
                [-3.2, -2.7, -2.5, -2.8],
            ],
            [
                [-2.8] * 4,
                [-3.3, -3.4, -2.5, -2.7],
                [-3.0, -2.7, -2.4, -3.2],
                [-3.3, -3.1, -2.7, -2.5],
            ],
        ]
    )
    fg = np.array([[True, True, False, False]] * 2)
    traj = EntropyTrajectory.from_arrays(
        {
            "entropy": h,
            "sigma_f": np.ones((2, 4)),
            "calibrated": np.ones((2, 4), dtype=bool),
            "foreground": fg,
            "valid": np.ones((2, 4), dtype=bool),
            "candidates": np.arange(2),
            "effective": np.ones(2, dtype=bool),
            "epochs": np.arange(4),
        },
        {},
        distance=[0.0, 0.4, 0.7, 0.9],
        displacement=[0.0, 0.3, 0.5, 0.6],
    )
    m = network_metrics(traj)
    assert m["d"] == pytest.approx([0.7, 0.4])
    assert m["d_epoch"] == pytest.approx([0.5, 0.3])
    without = EntropyTrajectory.from_arrays(traj.arrays(), {})  # distances not given: NaN
    assert np.isnan(network_metrics(without)["d_epoch"]).all()


def _run(tmp_path: Path, layer: dict[str, object]) -> SimpleNamespace:
    io.write_json(tmp_path / "trajectory.json", {"checkpoints": [0, 2], "layers": {"conv": layer}})
    plan = SimpleNamespace(name="baseline", seed=0)
    return SimpleNamespace(
        dir=tmp_path, plan=plan, trajectory=lambda: io.read_json(tmp_path / "trajectory.json")
    )


def test_run_distances_reads_both_series_and_names_an_old_run(tmp_path: Path) -> None:
    new = {
        "weights": ["conv.0.weight"],
        "cumulative_distance": [0.0, 0.5, 0.9],
        "cumulative_displacement": [0.0, 0.4, 0.6],
    }
    assert run_distances(_run(tmp_path, new), "conv", [0, 2]) == ([0.0, 0.9], [0.0, 0.6])  # type: ignore[arg-type]
    old = {"cumulative_distance": [0.0, 0.5, 0.9]}
    with pytest.raises(KdscopeError, match="older kdscope.*delete") as err:
        run_distances(_run(tmp_path, old), "conv", [0, 2])  # type: ignore[arg-type]
    assert "baseline seed 0" in str(err.value) and str(tmp_path) in str(err.value)
