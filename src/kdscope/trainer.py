"""Train one model (a teacher, a baseline or a distilled student) with resumable trajectories.

A run directory holds::

    metrics.csv                 one row per epoch: phase, lr, every loss term, train/test accuracy
    trajectory.json             per diagnosed layer: initial weight norm, path length per epoch
    checkpoints/epoch_XXX.pt    student weights after XXX epochs (000 = initialisation)
    state.pt                    resume state (deleted when the run completes)
    result.json                 final accuracies; its presence marks the run complete

Determinism: the model is initialised from ``derive_seed(seed, "init")`` and every epoch reseeds
the shuffling/augmentation generator and torch's global RNG from ``derive_seed(seed, "epoch", e)``.
The state saved at the end of each epoch holds everything else (weights, optimiser, method
buffers, trajectory, metrics), so a run killed at any point and started again redoes at most the
interrupted epoch and ends bit-identical to an uninterrupted run. All files are written
atomically; the temporary files of writes killed midway are removed when the run starts again.

Files read back are checked, and never run code (:mod:`kdscope.io`): ``state.pt`` and the
checkpoints hold only tensors and plain data (no RNG state is needed: every epoch reseeds). A
damaged resume state (unreadable, an epoch outside 1..epochs, metrics or trajectory of another
length, weights that do not fit) or a damaged file of a finished run (result, metrics,
trajectory, a checkpoint) is named in a warning and the run retrains from scratch, ending as
the lost run did.
"""

from __future__ import annotations

import copy
import json
import math
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdscope import device, io
from kdscope.augment import augment
from kdscope.config import ModelConfig, TrainConfig
from kdscope.datasets.base import Batch, DataSplits, TensorDataset
from kdscope.errors import KdscopeError, TrainingDiverged
from kdscope.evaluation import accuracy_and_loss
from kdscope.methods import BindContext, Method, build_method
from kdscope.models import forward_with_features, resolve_layer
from kdscope.models.hooks import Outputs
from kdscope.seeding import derive_seed
from kdscope.trajectory import PathLengthLogger

Progress = Callable[[int], None]


@dataclass(frozen=True)
class RunPlan:
    """Everything that determines one training run."""

    name: str
    seed: int
    model: ModelConfig | None  # None: a given TorchScript model (kdscope.given)
    method: str
    method_params: dict[str, Any]
    train: TrainConfig
    checkpoints: tuple[int, ...]
    layers: tuple[str, ...] = ()

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "model": None if self.model is None else self.model.model_dump(mode="json"),
            "method": self.method,
            "method_params": self.method_params,
            "train": self.train.model_dump(mode="json"),
            "checkpoints": list(self.checkpoints),
            "layers": list(self.layers),
        }


def lr_at(cfg: TrainConfig, epoch: int, length: int) -> float:
    """Learning rate at ``epoch`` (0-based) of a phase of ``length`` epochs."""
    if cfg.schedule == "constant" or length <= 1:
        return cfg.lr
    if cfg.schedule == "log":
        return cfg.lr * 10 ** (-epoch / (length - 1))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / length))
    drops = sum(epoch >= m for m in (length // 2, (3 * length) // 4))
    return cfg.lr * 0.1**drops


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class TeacherOutputs:
    """Teacher logits and features for a batch, in eval mode and without gradient.

    With ``cache=True`` (valid only without augmentation, where the teacher sees the same
    inputs every epoch) they are computed once for the whole training set and indexed.
    """

    def __init__(
        self, teacher: nn.Module | None, layers: list[str], train: TensorDataset, cache: bool
    ):
        self.teacher, self.layers = teacher, layers
        self._cache: Outputs | None = None
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            if cache:
                parts = [self._compute(b.input.to(device.current())) for b in train.batches(500)]
                self._cache = Outputs(
                    torch.cat([o.logits for o in parts]),
                    {k: torch.cat([o.features[k] for o in parts]) for k in layers},
                )

    @torch.no_grad()
    def _compute(self, x: Tensor) -> Outputs:
        assert self.teacher is not None
        return forward_with_features(self.teacher, x, self.layers)

    def __call__(self, batch: Batch, x: Tensor) -> Outputs | None:
        if self.teacher is None:
            return None
        if self._cache is not None:
            i = batch.index
            return Outputs(
                self._cache.logits[i], {k: v[i] for k, v in self._cache.features.items()}
            )
        return self._compute(x)


@dataclass
class _Epochs:
    """Maps a global epoch to (phase, epoch within phase, phase length)."""

    phases: list[tuple[str, int]]
    starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = [sum(n for _, n in self.phases[:i]) for i in range(len(self.phases))]

    def locate(self, epoch: int) -> tuple[str, int, int]:
        for (name, n), start in zip(self.phases, self.starts, strict=True):
            if epoch < start + n:
                return name, epoch - start, n
        raise IndexError(epoch)


def check_model_io(model: nn.Module, x: Tensor, num_classes: int, what: str) -> None:
    """A user error unless ``model`` maps inputs like ``x`` to (batch, num_classes) logits
    (run on the model's device: a teacher loaded by the study is on the current device)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2].to(device.model_device(model)))
    except (RuntimeError, IndexError) as e:  # IndexError: a token id beyond the embedding
        first = str(e).splitlines()[0]
        raise KdscopeError(
            f"{what} cannot process inputs of shape {tuple(x.shape[1:])}: {first}"
        ) from None
    finally:
        model.train(was)
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise KdscopeError(
            f"{what} outputs {tuple(out.shape[1:])} logits but the dataset has {num_classes} classes"
        )


def train_run(
    plan: RunPlan,
    data: DataSplits,
    run_dir: Path,
    teacher: nn.Module | None = None,
    cache_teacher: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train (or resume, or load if complete) the run ``plan`` in ``run_dir``; returns its result.
    A damaged file of the run makes it retrain from scratch, with a warning (module docstring)."""
    run_dir = Path(run_dir)
    io.clean_orphans(run_dir)
    finished = _finished_result(plan, data.num_classes, run_dir)
    if finished is not None:
        if progress is not None:
            progress(run_steps(plan, len(data.train)))
        return finished
    cfg, train = plan.train, data.train
    example = train.batch(torch.arange(min(len(train), cfg.batch_size)))

    torch.manual_seed(derive_seed(plan.seed, "init"))
    student = plan.model.build(data.num_classes)
    check_model_io(
        student, example.input, data.num_classes, f"model {plan.model.label(params=False)!r}"
    )
    method: Method = build_method(plan.method, **plan.method_params)
    if method.needs_teacher and teacher is None:
        raise KdscopeError(f"method {plan.method!r} needs a teacher")
    if teacher is not None:
        check_model_io(teacher, example.input, data.num_classes, "the teacher")
    method.bind(BindContext(student, teacher if method.needs_teacher else None, train, example))
    dev = device.current()
    student.to(dev)
    method.to(dev)
    if teacher is not None and dev.type != "cpu":
        teacher = on_device(teacher, dev)
    layers = {name: resolve_layer(student, name) for name in plan.layers}
    traj = PathLengthLogger(student, layers, example.input.to(dev))
    params = [p for p in [*student.parameters(), *method.parameters()] if p.requires_grad]
    opt = make_optimizer(cfg, params)
    epochs = _Epochs([(p.name, p.epochs) for p in method.phases(cfg.epochs)])
    state_path = run_dir / "state.pt"

    rows: list[dict[str, Any]] = []
    start = 0
    if state_path.exists():
        try:
            rows, start = _resume(plan, data.num_classes, run_dir, student, method, opt, traj)
        except io.DamagedFile as damage:
            _discard(damage, plan, run_dir)
            return train_run(plan, data, run_dir, teacher, cache_teacher, progress)
    elif 0 in plan.checkpoints:
        io.save_torch(checkpoint_path(run_dir, 0), cpu_state(student))
    if progress is not None:
        progress(start * _steps(len(train), cfg.batch_size))

    teacher_out = TeacherOutputs(
        teacher if method.needs_teacher else None,
        method.teacher_layers(),
        train,
        cache=cache_teacher and not cfg.augment,
    )
    for epoch in range(start, cfg.epochs):
        phase, phase_epoch, phase_len = epochs.locate(epoch)
        lr = lr_at(cfg, phase_epoch, phase_len)
        for group in opt.param_groups:
            group["lr"] = lr
        student.train()
        method.train()
        method.enter_phase(phase, student)
        gen = torch.Generator().manual_seed(derive_seed(plan.seed, "epoch", epoch))
        torch.manual_seed(derive_seed(plan.seed, "epoch-global", epoch))
        sums: dict[str, float] = {}
        correct = seen = 0
        t0 = time.perf_counter()
        for step, batch in enumerate(train.batches(cfg.batch_size, gen)):
            if len(batch) < 2:  # BatchNorm cannot train on a single example
                continue
            x = augment(batch.input, cfg.augment, gen, cfg.shift).to(dev, non_blocking=True)
            batch = batch.to(dev)
            s_out = forward_with_features(student, x, method.student_layers())
            terms = method(s_out, teacher_out(batch, x), batch)
            loss = sum(terms.values())
            assert isinstance(loss, Tensor)
            if not torch.isfinite(loss):
                bad = next((k for k, v in terms.items() if not torch.isfinite(v)), "total")
                raise TrainingDiverged(
                    f"{plan.name} seed {plan.seed}: loss term {bad!r} became {float(terms.get(bad, loss).detach())} "
                    f"at epoch {epoch + 1}, step {step + 1}; lower the learning rate or check the "
                    "method's hyper-parameters"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            traj.before_step()
            opt.step()
            traj.after_step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(batch)
            correct += int((s_out.logits.argmax(1) == batch.label).sum())
            seen += len(batch)
            if progress is not None:
                progress(1)
        traj.end_epoch()
        test_acc, test_loss = accuracy_and_loss(student, data.test)
        row = {"epoch": epoch + 1, "phase": phase, "lr": lr}
        row.update({f"loss_{k}": v / max(seen, 1) for k, v in sums.items()})
        row["loss"] = sum(sums.values()) / max(seen, 1)
        row.update(train_acc=correct / max(seen, 1), test_acc=test_acc, test_loss=test_loss)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        if epoch + 1 in plan.checkpoints:
            io.save_torch(checkpoint_path(run_dir, epoch + 1), cpu_state(student))
        checkpoints_so_far = [e for e in plan.checkpoints if e <= epoch + 1]
        io.write_csv(run_dir / "metrics.csv", rows)
        io.write_json(run_dir / "trajectory.json", traj.to_json(checkpoints_so_far))
        io.save_torch(
            state_path,
            {
                "plan": plan.fingerprint(),
                "epoch": epoch + 1,
                "model": cpu_state(student),
                "method": cpu_state(method),
                "optimizer": to_cpu(opt.state_dict()),
                "trajectory": to_cpu(traj.state_dict()),
                "metrics": rows,
            },
        )

    train_acc, _ = accuracy_and_loss(student, train)
    test_acc, test_loss = (
        rows[-1]["test_acc"],
        rows[-1]["test_loss"],
    )  # evaluated after the last epoch
    result = {
        "name": plan.name,
        "seed": plan.seed,
        "model": plan.model.label(),
        "method": plan.method,
        "epochs": cfg.epochs,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_acc": train_acc,
        "checkpoints": list(plan.checkpoints),
        "plan": plan.fingerprint(),
    }
    io.write_json(run_dir / "result.json", result)
    state_path.unlink(missing_ok=True)
    return result


def to_cpu(obj: Any) -> Any:  # noqa: ANN401  (nested plain data and tensors)
    """``obj`` with every tensor in it (in dicts, lists and tuples) on the CPU: what is saved
    is the same file whatever device trained the run."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state dict on the CPU (:func:`to_cpu`)."""
    return to_cpu(module.state_dict())


def on_device(model: nn.Module, dev: torch.device) -> nn.Module:
    """``model`` on ``dev``: itself when it is there, else a copy (the caller's model, which
    other code may use on the CPU, stays where it is)."""
    if device.model_device(model) == dev:
        return model
    return copy.deepcopy(model).to(dev)


def _steps(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def run_steps(plan: RunPlan, n_train: int) -> int:
    """Optimiser steps of a whole run (for progress bars)."""
    return plan.train.epochs * _steps(n_train, plan.train.batch_size)


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """Where a run saves its weights after ``epoch`` epochs."""
    return Path(run_dir) / "checkpoints" / f"epoch_{epoch:03d}.pt"


def load_checkpoint(plan: RunPlan, num_classes: int, path: Path) -> nn.Module:
    """The model of ``plan`` with the weights stored at ``path``, in eval mode; a one-line
    :class:`~kdscope.io.DamagedFile` error if the file does not hold weights of that model."""
    model = plan.model.build(num_classes)
    return _load_weights(model, Path(path)).eval()


def _load_weights(model: nn.Module, path: Path) -> nn.Module:
    """``model`` with the weights stored at ``path`` (strictly: every tensor, of its shape)."""
    state = io.load_torch(path)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise io.DamagedFile(path, "it holds no model weights")
    try:
        model.load_state_dict(state)
    except RuntimeError:  # missing, unexpected or mis-shaped tensors
        raise io.DamagedFile(path, "its weights do not fit the run's model") from None
    return model


def _check_checkpoints(plan: RunPlan, num_classes: int, run_dir: Path, last: int) -> None:
    """:class:`~kdscope.io.DamagedFile` unless every checkpoint of the run up to epoch ``last``
    holds weights of its model. The model is built without drawing from the global RNG."""
    with torch.random.fork_rng(devices=[]):
        model = plan.model.build(num_classes)
    for epoch in plan.checkpoints:
        if epoch <= last:
            _load_weights(model, checkpoint_path(run_dir, epoch))


#: the metrics.csv columns that hold a number in every row (a loss term's column is empty in
#: the epochs of a phase without that term)
METRIC_NUMBERS = ("lr", "loss", "train_acc", "test_acc", "test_loss")


def read_metrics(path: Path, epochs: int) -> list[dict[str, str]]:
    """The rows of a finished run's ``metrics.csv``: one per epoch 1..``epochs``, each with its
    numbers; :class:`~kdscope.io.DamagedFile` otherwise (a file cut mid-row, a header only)."""
    rows = io.read_csv(path)
    if [r.get("epoch") for r in rows] != [str(e) for e in range(1, epochs + 1)]:
        raise io.DamagedFile(path, f"its {len(rows)} rows are not the epochs 1..{epochs}")
    try:
        for row in rows:
            for column in METRIC_NUMBERS:
                float(row[column])
    except (KeyError, ValueError):
        raise io.DamagedFile(path, f"a row lacks a number in {', '.join(METRIC_NUMBERS)}") from None
    return rows


#: the series of ``trajectory.json`` that analyses read, each with one number per epoch 0..E
TRAJECTORY_SERIES = ("cumulative_distance", "cumulative_displacement")


def read_trajectory(path: Path, plan: RunPlan) -> dict[str, Any]:
    """A finished run's ``trajectory.json``: every diagnosed layer, each logged series with one
    number per epoch 0..epochs; :class:`~kdscope.io.DamagedFile` otherwise. (A series an older
    kdscope did not log is left to its reader, which says how to retrain the run.)"""
    traj = io.read_json(path)
    layers = traj.get("layers") if isinstance(traj, dict) else None
    if not isinstance(layers, dict) or set(layers) != set(plan.layers):
        raise io.DamagedFile(path, f"it does not log the layers {list(plan.layers)}")
    n = plan.train.epochs + 1
    for name, logged in layers.items():
        if not isinstance(logged, dict):
            raise io.DamagedFile(path, f"layer {name!r} has no record")
        for key in TRAJECTORY_SERIES:
            if key in logged and not _numbers(logged[key], n):
                raise io.DamagedFile(path, f"layer {name!r} lacks {n} numbers in {key}")
            if key in logged:
                logged[key] = [_number(v) for v in logged[key]]
    return traj


def _is_number(value: Any, undefined: bool = False) -> bool:
    """Whether ``value`` is an int or a float, not a boolean; with ``undefined``, None too (a
    number that can be undefined, e.g. the loss of a diverged run, which strict JSON writes as
    ``null``: :func:`kdscope.io.strict_json`)."""
    if value is None:
        return undefined
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: int | float | None) -> float:
    """A number read from JSON as a float: ``null`` (an undefined number) is NaN."""
    return math.nan if value is None else float(value)


def _numbers(values: Any, n: int) -> bool:
    """Whether ``values`` is a list of ``n`` numbers."""
    return (
        isinstance(values, list) and len(values) == n and all(_is_number(v, True) for v in values)
    )


#: the numbers of ``result.json`` that studies and reports read
RESULT_NUMBERS = ("test_acc", "test_loss", "train_acc")
#: those that can be undefined (``null``): the loss of a run whose weights diverged
UNDEFINED_NUMBERS = ("test_loss",)


def flatten_settings(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flatten_settings(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def describe_changes(
    old: dict[str, Any],
    new: dict[str, Any],
    show: Callable[[str, Any, Any], str],
    sep: str,
) -> str:
    """The leaf settings (:func:`flatten_settings`) that differ between ``old`` and ``new``,
    at most three shown as ``show(key, old value, new value)`` (``...`` for an absent one) and
    then how many more, joined by ``sep``; "" when none differs."""
    a, b = flatten_settings(old), flatten_settings(new)
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, ...) != b.get(k, ...)]
    shown = [show(k, a.get(k, ...), b.get(k, ...)) for k in keys[:3]]
    return sep.join(shown + ([f"{len(keys) - 3} more"] if len(keys) > 3 else []))


def _differences(recorded: Any, wanted: dict[str, Any]) -> str:
    """What differs between a run's recorded plan and the one wanted (at most three settings)."""
    if not isinstance(recorded, dict):
        return "it records no settings"

    def show(key: str, was: Any, now: Any) -> str:  # noqa: ANN401  (any setting)
        return (
            f"{key} was {'unset' if was is ... else was}, is now {'unset' if now is ... else now}"
        )

    return describe_changes(recorded, wanted, show, "; ") or "its recorded settings differ"


def _check_recorded_plan(plan: RunPlan, recorded: Any, run_dir: Path) -> None:
    """A user error if a finished run's ``recorded`` plan is not ``plan`` (run folders copied
    from another study, a name leading into another run's folder): such a run is never
    adopted; the message names what differs and the command that clears it."""
    wanted = json.loads(json.dumps(plan.fingerprint()))  # as result.json stores it
    if recorded != wanted:
        raise KdscopeError(
            f"{run_dir} holds a finished run trained with other settings "
            f"({_differences(recorded, wanted)}); to train it anew, run "
            f"'rm -r {shlex.quote(str(run_dir))}' and then the same command again"
        )


def _check_state_plan(plan: RunPlan, recorded: Any, run_dir: Path) -> None:
    """A user error if an interrupted run's ``recorded`` plan (in ``state.pt``) is not ``plan``;
    the message names what differs and the command that clears it."""
    wanted = plan.fingerprint()  # as state.pt stores it
    if recorded != wanted:
        raise KdscopeError(
            f"{run_dir} holds an interrupted run trained with other settings "
            f"({_differences(recorded, wanted)}); to train it anew, run "
            f"'rm -r {shlex.quote(str(run_dir))}' and then the same command again"
        )


def check_run_plan(plan: RunPlan, run_dir: Path) -> None:
    """Refuse, before anything trains, what :func:`train_run` would refuse: a user error if
    ``run_dir`` holds a finished run (``result.json``) or, failing that, an interrupted one
    (``state.pt``) recorded with a plan other than ``plan``, naming the settings that differ.
    Nothing if it holds no run, or a damaged one (:func:`train_run` retrains that)."""
    try:
        if (run_dir / "result.json").exists():
            result = io.read_json(run_dir / "result.json")
            if isinstance(result, dict):
                _check_recorded_plan(plan, result.get("plan"), run_dir)
        elif (run_dir / "state.pt").exists():
            state = io.load_torch(run_dir / "state.pt")
            if isinstance(state, dict) and set(state) == STATE_KEYS:
                _check_state_plan(plan, state["plan"], run_dir)
    except io.DamagedFile:
        return


def _check_finished(plan: RunPlan, num_classes: int, run_dir: Path) -> dict[str, Any]:
    """The result of the finished run in ``run_dir`` once every file it leaves is checked;
    :class:`~kdscope.io.DamagedFile` naming the first damaged one, a user error if the run was
    trained with another plan (it is never adopted)."""
    path = run_dir / "result.json"
    result = io.read_json(path)
    if isinstance(result, dict):
        _check_recorded_plan(plan, result.get("plan"), run_dir)
    if (
        not isinstance(result, dict)
        or result.get("epochs") != plan.train.epochs
        or not all(_is_number(result.get(k), k in UNDEFINED_NUMBERS) for k in RESULT_NUMBERS)
    ):
        numbers = ", ".join(RESULT_NUMBERS)
        raise io.DamagedFile(path, f"it does not record {plan.train.epochs} epochs and {numbers}")
    read_metrics(run_dir / "metrics.csv", plan.train.epochs)
    read_trajectory(run_dir / "trajectory.json", plan)
    _check_checkpoints(plan, num_classes, run_dir, plan.train.epochs)
    return result | {k: _number(result[k]) for k in RESULT_NUMBERS}


def _finished_result(plan: RunPlan, num_classes: int, run_dir: Path) -> dict[str, Any] | None:
    """The result of the finished run in ``run_dir``; None if it is not finished, or damaged
    (then a warning, and the run is set to retrain from scratch)."""
    if not (run_dir / "result.json").exists():
        return None
    try:
        return _check_finished(plan, num_classes, run_dir)
    except io.DamagedFile as damage:
        _discard(damage, plan, run_dir)
        return None


#: what ``state.pt`` holds
STATE_KEYS = frozenset({"plan", "epoch", "model", "method", "optimizer", "trajectory", "metrics"})


def _resume(
    plan: RunPlan,
    num_classes: int,
    run_dir: Path,
    student: nn.Module,
    method: Method,
    opt: torch.optim.Optimizer,
    traj: PathLengthLogger,
) -> tuple[list[dict[str, Any]], int]:
    """Load ``run_dir/state.pt`` into the run's objects; returns the metric rows so far and the
    epoch to start from. A user error if it holds a run with other settings;
    :class:`~kdscope.io.DamagedFile` if it is unreadable or inconsistent (the objects may then be
    half-loaded: start over), or a checkpoint it relies on is."""
    path = run_dir / "state.pt"
    state = io.load_torch(path)
    if not isinstance(state, dict) or set(state) != STATE_KEYS:
        raise io.DamagedFile(path, "it is not a kdscope training state")
    _check_state_plan(plan, state["plan"], run_dir)
    epoch, rows, total = state["epoch"], state["metrics"], plan.train.epochs
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 1 <= epoch <= total:
        raise io.DamagedFile(path, f"its epoch {epoch!r} is outside 1..{total}")
    if not isinstance(rows, list) or [
        r.get("epoch") if isinstance(r, dict) else None for r in rows
    ] != list(range(1, epoch + 1)):
        raise io.DamagedFile(path, f"its metrics are not one row per epoch 1..{epoch}")
    try:
        student.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        opt.load_state_dict(state["optimizer"])
        traj.load_state_dict(state["trajectory"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise io.DamagedFile(path, "its saved weights or optimiser do not fit the run") from None
    if not _optimizer_fits(opt):
        raise io.DamagedFile(path, "its optimiser buffers do not fit the run's parameters")
    if not _log_fits(traj, state["trajectory"]["epoch_start"], epoch):
        raise io.DamagedFile(path, f"its trajectory log does not cover epochs 1..{epoch}")
    _check_checkpoints(plan, num_classes, run_dir, epoch)
    return rows, epoch


def _optimizer_fits(opt: torch.optim.Optimizer) -> bool:
    """Whether every loaded per-parameter buffer (momentum, Adam's moments) has its parameter's
    shape (the optimiser's own loading checks only the number of parameters)."""
    return all(
        v.shape == p.shape
        for p, buffers in opt.state.items()
        for k, v in buffers.items()
        if isinstance(v, Tensor) and k != "step"
    )


def _log_fits(traj: PathLengthLogger, epoch_start: Any, epoch: int) -> bool:
    """Whether a loaded trajectory log has every diagnosed layer, ``epoch`` entries per series
    and reference weights (``epoch_start``, as saved) of the layers' shapes."""
    layers = set(traj.weights)
    logged = (traj.per_epoch, traj.displacement, traj.initial_norm, epoch_start)
    if any(set(series) != layers for series in logged):
        return False
    return all(
        len(traj.per_epoch[k]) == len(traj.displacement[k]) == epoch
        and [w.shape for w in epoch_start[k]] == [w.shape for w in traj.weights[k]]
        for k in layers
    )


def _discard(damage: io.DamagedFile, plan: RunPlan, run_dir: Path) -> None:
    """Warn about a damaged file of the run and remove what marks it finished or resumable, so
    that it retrains from scratch (every file it writes is then rewritten)."""
    damage.warn(f"retraining {plan.name} seed {plan.seed} from scratch")
    for name in ("result.json", "state.pt"):
        (run_dir / name).unlink(missing_ok=True)
