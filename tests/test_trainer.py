"""The trainer is deterministic, resumes bit-identically, logs path lengths exactly and stops
cleanly on a diverging loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kdscope import io
from kdscope.augment import random_shift
from kdscope.config import ModelConfig, TrainConfig
from kdscope.errors import TrainingDiverged
from kdscope.trainer import RunPlan, lr_at, train_run
from kdscope.trajectory import PathLengthLogger, auto_checkpoints


def _plan(method: str = "ce", epochs: int = 3, **train: object) -> RunPlan:
    return RunPlan(
        name="m",
        seed=3,
        model=ModelConfig(name="cnn_small", width=4),
        method=method,
        method_params={},
        train=TrainConfig(epochs=epochs, batch_size=16, **train),
        checkpoints=(0, 1, 3),
        layers=("conv", "fc1"),
    )


def test_auto_checkpoints_follow_the_reference_list() -> None:
    assert auto_checkpoints(20) == [0, 1, 2, 3, 4, 5, 7, 9, 12, 15, 17, 20]
    assert auto_checkpoints(150) == [0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 70, 90, 110, 130, 150]


def test_lr_schedules() -> None:
    cfg = TrainConfig(lr=0.1, schedule="log")
    assert [round(lr_at(cfg, e, 3), 10) for e in range(3)] == [0.1, round(0.1 / 10**0.5, 10), 0.01]
    cos = TrainConfig(lr=1.0, schedule="cosine")
    assert lr_at(cos, 0, 4) == 1.0 and math.isclose(lr_at(cos, 2, 4), 0.5)
    step = TrainConfig(lr=1.0, schedule="step")
    assert [lr_at(step, e, 8) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_path_length_is_the_sum_of_update_norms() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    logger = PathLengthLogger(model, {"lin": "0"}, torch.rand(1, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    w0 = model[0].weight.detach().clone()
    expected = 0.0
    for _ in range(3):
        x = torch.rand(4, 3)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        expected += 0.5 * float(model[0].weight.grad.norm())  # plain SGD: ‖ΔW‖ = lr·‖∇W‖
        logger.before_step()
        opt.step()
        logger.after_step()
    logger.end_epoch()
    traj = logger.to_json([0, 1])["layers"]["lin"]
    assert traj["initial_norm"] == pytest.approx(float(w0.norm()))
    assert traj["path_length_per_epoch"][0] == pytest.approx(expected, rel=1e-6)
    assert traj["cumulative_distance"] == pytest.approx(
        [0.0, expected / float(w0.norm())], rel=1e-6
    )


def test_random_shift_moves_images_by_integer_offsets() -> None:
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    for b in range(2):  # every output is an edge-padded translate of its input
        padded = torch.nn.functional.pad(x[b : b + 1], (1, 1, 1, 1), mode="replicate")[0, 0]
        assert any(
            torch.equal(out[b, 0], padded[dy : dy + 5, dx : dx + 5])
            for dy in range(3)
            for dx in range(3)
        )


def _files(run_dir: Path) -> dict[str, object]:
    out: dict[str, object] = {
        "metrics": [
            {k: v for k, v in r.items() if k != "seconds"}
            for r in io.read_csv(run_dir / "metrics.csv")
        ],
        "trajectory": io.read_json(run_dir / "trajectory.json"),
    }
    for ckpt in sorted((run_dir / "checkpoints").glob("*.pt")):
        out[ckpt.name] = io.load_torch(ckpt)
    return out


def _assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith(".pt"):
            for name, t in a[k].items():  # type: ignore[union-attr]
                assert torch.equal(t, b[k][name]), (k, name)  # type: ignore[index]
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("method", ["ce", "hint", "feature_mimic", "crd"])
def test_training_is_deterministic_and_resumes_identically(
    tiny_splits, tmp_path: Path, method: str
) -> None:
    teacher = None
    if method != "ce":
        teacher = _trained_teacher(tiny_splits, tmp_path)
    plan = _plan(method, augment=("flip", "shift"))
    full = train_run(plan, tiny_splits, tmp_path / "full", teacher)
    again = train_run(plan, tiny_splits, tmp_path / "again", teacher)
    assert full["test_acc"] == again["test_acc"]
    _assert_same(_files(tmp_path / "full"), _files(tmp_path / "again"))

    # interrupt after the first epoch: keep only what an epoch-1 kill leaves behind
    calls = {"n": 0}

    def kill_after_first_epoch(n: int) -> None:
        calls["n"] += n
        if calls["n"] > 96 // 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(plan, tiny_splits, tmp_path / "resumed", teacher, progress=kill_after_first_epoch)
    assert (tmp_path / "resumed" / "state.pt").exists()
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = train_run(plan, tiny_splits, tmp_path / "resumed", teacher)
    assert resumed["test_acc"] == full["test_acc"]
    _assert_same(_files(tmp_path / "full"), _files(tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "state.pt").exists()
    if teacher is not None:  # the teacher's features were captured by hooks: none may survive
        assert all(not m._forward_hooks for m in teacher.modules())


def _trained_teacher(splits, tmp_path: Path) -> torch.nn.Module:
    plan = _plan("ce", epochs=1)
    train_run(plan, splits, tmp_path / "teacher")
    from kdscope.trainer import load_checkpoint

    return load_checkpoint(
        plan, splits.num_classes, tmp_path / "teacher" / "checkpoints" / "epoch_001.pt"
    )


def test_nan_loss_stops_with_a_clear_error_and_keeps_earlier_files(
    tiny_splits, tmp_path: Path
) -> None:
    plan = _plan("ce", epochs=3, lr=1e30, optimizer="sgd", momentum=0.0)
    with pytest.raises(TrainingDiverged, match=r"loss term 'ce' became (nan|inf)"):
        train_run(plan, tiny_splits, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "epoch_000.pt").exists()
    assert not (tmp_path / "run" / "result.json").exists()
