"""Models trained elsewhere: a teacher, baseline or student given as a checkpoint of a known
architecture or as a TorchScript file, adopted into a study instead of trained.

A **checkpoint** is a state dict, read with ``torch.load(weights_only=True)`` (a file that holds
anything but tensors and plain data is refused without running it). The common wrappers are
unwrapped: ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}``,
``{"net": ...}``, and the key prefixes ``module.`` (DataParallel, DistributedDataParallel) and
``_orig_mod.`` (``torch.compile``). The weights must fit the architecture exactly; otherwise
one line names the file and the keys that are missing, unexpected or of another shape.

A **TorchScript** file (``torch.jit.save`` of a scripted or traced model) needs no Python
class. Its layers are addressed by the same module paths as in the original model.

Adopting a given model evaluates it once on the study's data into its run folder
(``result.json``: accuracies and loss as for a trained run, plus the source file, its size and
modification time, so that a changed file is evaluated again). Nothing is copied: the study
reads the user's file each time it loads the model. A given model has no training trajectory,
so analyses that need one skip it and say so.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdscope import io
from kdscope.config import Given, ModelConfig
from kdscope.datasets import DataSplits
from kdscope.errors import KdscopeError
from kdscope.evaluation import accuracy_and_loss
from kdscope.runs import check_inside, writing
from kdscope.trainer import RunPlan, check_model_io

#: the keys under which training scripts commonly store the model's state dict
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "network")
#: key prefixes added by wrappers of the model (DataParallel / DDP, torch.compile)
PREFIXES = ("module.", "_orig_mod.")


def unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:  # noqa: ANN401  (any file)
    """The state dict inside a loaded checkpoint: ``obj`` itself or the first of
    :data:`WRAPPERS` that holds one, with the :data:`PREFIXES` removed from keys that all
    carry them; a user error naming ``path`` when there is none."""
    for _ in range(3):  # {"checkpoint": {"state_dict": ...}} at most two wrappers deep
        if _is_state_dict(obj):
            break
        inner = [obj[k] for k in WRAPPERS if isinstance(obj, Mapping) and k in obj]
        if not inner:
            break
        obj = inner[0]
    if not _is_state_dict(obj):
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else ""
        what = f"a mapping with keys {keys}" if keys else type(obj).__name__
        raise KdscopeError(
            f"{path}: holds {what}, not a state dict (tensors by parameter name, or one under "
            f"{'/'.join(WRAPPERS)})"
        )
    state = dict(obj)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:  # noqa: ANN401
    """A non-empty mapping of names to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def _names(keys: list[str], limit: int = 4) -> str:
    """The first ``limit`` keys, and how many more."""
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state(model: nn.Module, path: Path, label: str) -> nn.Module:
    """``model`` with the checkpoint at ``path`` loaded strictly; a user error naming the file
    and the missing, unexpected and mis-shaped keys when the weights do not fit ``label``."""
    state = unwrap_state_dict(io.load_torch(path), path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{n} missing ({_names(missing)})" if (n := len(missing)) else "",
        f"{n} unexpected ({_names(unexpected)})" if (n := len(unexpected)) else "",
        f"{n} of another shape ({_names(shapes, 2)})" if (n := len(shapes)) else "",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise KdscopeError(
            f"{path}: the weights do not fit model {label}: keys {'; '.join(problems)}"
        )
    model.load_state_dict(state)
    return model


def load_given(
    given: Given, model: ModelConfig | None, num_classes: int, epoch: int | None = None
) -> nn.Module:
    """The given model in eval mode: the checkpoint loaded into ``model`` built for
    ``num_classes`` classes (at ``epoch`` of its series; default: the final one), or the
    TorchScript file loaded on the CPU."""
    if given.kind == "torchscript":
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; users still have it
                warnings.simplefilter("ignore", DeprecationWarning)
                loaded = torch.jit.load(str(given.path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KdscopeError(f"{given.path}: not a TorchScript model: {first}") from None
        return loaded.eval()
    if model is None:
        raise KdscopeError(f"{given.path}: a checkpoint needs a 'model' to load it into")
    path = dict(given.series).get(epoch, given.path) if epoch is not None else given.path
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the RNG
        built = model.build(num_classes)
    return load_state(built, path, model.label()).eval()


def adopt(
    out_dir: Path,
    plan: RunPlan,
    given: Given,
    data: DataSplits,
    run_dir: Path,
) -> dict[str, Any]:
    """The result of the given model of ``plan`` (a run folder of the study in ``out_dir``):
    read back when ``run_dir/result.json`` records the same plan and the same file, else
    measured (accuracy and loss on both splits) and written there."""
    check_inside(out_dir, run_dir)
    identity = given.identity()
    recorded = run_dir / "result.json"
    if recorded.exists():
        try:
            result = io.read_json(recorded)
        except io.DamagedFile:
            result = None
        if (
            isinstance(result, dict)
            and result.get("given") == identity
            and result.get("plan") == plan.fingerprint()
        ):
            return result
    model = load_given(given, plan.model, data.num_classes)
    where = f"given model {given.path}"
    example = data.train.batch(torch.arange(min(2, len(data.train)))).input
    check_model_io(model, example, data.num_classes, where)
    with torch.no_grad():
        train_acc, train_loss = accuracy_and_loss(model, data.train)
        test_acc, test_loss = accuracy_and_loss(model, data.test)
    result = {
        "name": plan.name,
        "seed": plan.seed,
        "model": plan.model.label() if plan.model is not None else "torchscript",
        "method": plan.method,
        "epochs": plan.train.epochs,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "train_acc": train_acc,
        "train_loss": train_loss,
        "checkpoints": list(plan.checkpoints),
        "plan": plan.fingerprint(),
        "given": identity,
    }
    with writing(run_dir):
        os.makedirs(run_dir, exist_ok=True)
        io.write_json(recorded, result)
    return result
