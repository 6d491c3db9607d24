"""The knowledge-point API for one network and for a training loop of the user's own: single-
network points, the public weight-path logger, the checkpoint-based lower bound, and the code
shown in docs/knowledge_points.md."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from kp_fixtures import tiny_conv_nets
from torch import nn

from kdscope import knowledge_points as kp
from kdscope.errors import KdscopeError
from kdscope.trajectory import PathLengthLogger

DOCS = Path(__file__).resolve().parent.parent / "docs" / "knowledge_points.md"


def _linear(weight: list[float]) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(len(weight), 1, bias=False))
    _set(model, weight)
    return model


def _set(model: nn.Module, weight: list[float]) -> None:
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([weight]))


def test_path_length_and_displacement_have_known_values(tmp_path: Path) -> None:
    """W = (3, 4), ‖W_0‖ = 5. Epoch 1: +1 then −1 on W[0] (path 2, displacement 0); epoch 2:
    +3 on W[1] in one step (path 3, displacement 3)."""
    model = _linear([3.0, 4.0])
    log = kp.WeightPathLogger(model, ["0"])
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for epoch_weights in ([[4.0, 4.0], [3.0, 4.0]], [[3.0, 7.0]]):
        for w in epoch_weights:
            _set(model, w)
            log.step()
        log.end_epoch()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert log.epochs == 2 and log.initial_norm == {"0": 5.0}
    assert log.path_length == {"0": [2.0, 3.0]}
    assert log.displacement == {"0": [0.0, 3.0]}
    log.save(tmp_path / "trajectory.json", checkpoints=[0, 1, 2])
    distance, displacement = kp.read_distances(tmp_path / "trajectory.json", "0", [0, 1, 2])
    assert distance == pytest.approx([0.0, 0.4, 1.0])
    assert displacement == pytest.approx([0.0, 0.0, 0.6])
    with pytest.raises(KdscopeError, match="epochs 0..2"):
        kp.read_distances(tmp_path / "trajectory.json", "0", [3])
    with pytest.raises(KdscopeError, match="layer 'fc'"):
        kp.read_distances(tmp_path / "trajectory.json", "fc", [0])
    # from the checkpoints alone: the displacement, a lower bound of the path length
    torch.save(states[2], tmp_path / "last.pt")
    lower = kp.from_checkpoints([states[0], states[1], tmp_path / "last.pt"], ["0"])["0"]
    assert lower["weights"] == ["0.weight"] and lower["initial_norm"] == 5.0
    assert lower["displacement_per_epoch"] == pytest.approx([0.0, 3.0])
    assert lower["cumulative_displacement"] == pytest.approx([0.0, 0.0, 0.6])
    assert all(a <= b for a, b in zip(lower["cumulative_displacement"], distance, strict=True))


def test_from_checkpoints_finds_the_kernels() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU())
    state = model.state_dict()
    assert kp.from_checkpoints([state], ["0"])["0"]["weights"] == ["0.weight"]
    x = torch.rand(2, 1, 2, 2)
    assert kp.from_checkpoints([state], ["2"], model, x)["2"]["weights"] == ["0.weight"]
    with pytest.raises(KdscopeError, match="no weight of layer '1'"):
        kp.from_checkpoints([state], ["1"])  # BatchNorm's γ is not a kernel
    assert kp.from_checkpoints([state], ["0"])["0"]["cumulative_displacement"] == [0.0]


def _train(model: nn.Module, step: object, end: object) -> None:
    """Two epochs of SGD on fixed random data, calling ``step()`` after each optimiser step
    and ``end()`` after each epoch."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 4, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        for xb, yb in zip(x.split(8), y.split(8), strict=True):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            step()  # type: ignore[operator]
        end()  # type: ignore[operator]


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2)
    )


def test_the_public_logger_equals_the_trainers() -> None:
    """The trainer brackets opt.step() with before_step/after_step; the public logger is called
    once after it. Both log the same numbers, bit for bit."""
    x = torch.rand(2, 3, 4, 4)
    model = _net()
    trainer_log = PathLengthLogger(model, {"act": "2", "fc": "4"}, x)
    opt_step = torch.optim.SGD.step

    def bracketed(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        trainer_log.before_step()
        out = opt_step(self, *args, **kwargs)
        trainer_log.after_step()
        return out

    torch.optim.SGD.step = bracketed  # type: ignore[method-assign]
    try:
        _train(model, lambda: None, trainer_log.end_epoch)
    finally:
        torch.optim.SGD.step = opt_step  # type: ignore[method-assign]
    model = _net()
    public = kp.WeightPathLogger(model, {"act": "2", "fc": "4"}, example=x)
    _train(model, public.step, public.end_epoch)
    assert public.to_json([0, 2]) == trainer_log.to_json([0, 2])
    assert public.to_json()["layers"]["act"]["weights"] == ["0.weight"]


def test_single_network_equals_the_trajectory_at_that_checkpoint() -> None:
    nets, x, masks, units = tiny_conv_nets(6)
    traj = kp.entropy_trajectory(nets, "0", x, masks, units, [0, 5], [0.0, 0.3])
    full = kp.network_metrics(traj)
    one = kp.single(nets[-1], "0", x, masks, units, b=0.05)
    ref = kp.network_metrics(traj, b=0.05)
    np.testing.assert_array_equal(one.entropy, traj.entropy[:, -1])
    np.testing.assert_array_equal(one.sigma_f, traj.sigma_f[:, -1])
    np.testing.assert_array_equal(one.points, ref["points"][:, -1])
    assert one.level == pytest.approx(ref["level"][-1])
    for key in ("n_fg", "n_bg", "quality"):
        np.testing.assert_array_equal(getattr(one, key), ref[key])
    assert one.n_fg.shape == (6,) and one.info["scale_s"] == traj.info["scale_s"]
    assert np.isfinite(full["d"]).all() and np.isfinite(full["rho"]).all()
    # the effective inputs only: as compare() takes them, level computed on them
    kept = kp.single(nets[-1], "0", x, masks, units, effective_filter=True)
    assert kept.effective.all() and len(kept.candidates) == int(one.effective.sum())


def test_one_network_has_no_learning_speed_nor_stability() -> None:
    nets, x, masks, units = tiny_conv_nets(6)
    one = kp.single(nets[0], "0", x, masks, units)
    assert one.learning_speed is None and one.stability is None
    assert "checkpoint" in one.absent and one.absent == kp.ABSENT
    summary = one.summary()
    assert summary["d_mean"] is None and summary["d_std"] is None and summary["rho"] is None
    assert summary["n_fg"] == pytest.approx(float(one.n_fg.mean()))
    # a one-checkpoint trajectory: no metric from a distance that stands for nothing
    traj = kp.entropy_trajectory(nets[:1], "0", x, masks, units, [0], [0.0])
    m = kp.network_metrics(traj)
    assert np.isnan(m["d"]).all() and np.isnan(m["d_epoch"]).all() and np.isnan(m["rho"]).all()
    assert m["absent"] == kp.ABSENT
    assert (
        kp.network_metrics(kp.entropy_trajectory(nets, "0", x, masks, units, [0, 1]))["absent"]
        is None
    )


def test_the_code_in_the_docs_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Your own network and training loop", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(code.group(1), str(DOCS), "exec"), scope)  # noqa: S102  (our own docs)
    assert (tmp_path / "trajectory.json").is_file()
    m, traj, lower = scope["m"], scope["traj"], scope["lower"]
    assert np.isfinite(m["d"]).all()  # type: ignore[index]
    np.testing.assert_allclose(
        lower["0"]["cumulative_displacement"],  # type: ignore[index]
        traj.displacement,  # type: ignore[attr-defined]
    )
    assert (traj.displacement <= traj.distance + 1e-12).all()  # type: ignore[attr-defined]
