"""The device a study's jobs compute on: ``auto`` (the first CUDA GPU when torch sees one, else
the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

Each process has one current device (:func:`use`, :func:`current`): a job sets it from its study
before it runs, and the trainer, the knowledge-point estimator and the evaluation helpers put
their models and batches on it. A study's models load onto it (:meth:`kdscope.study.Run.load`),
so the analyses compute there too: every helper that runs a model moves its inputs to the
model's device (:func:`model_device`) and returns its results on the CPU. Models are built,
initialised and saved on the CPU, so a checkpoint is the same file whatever device trained it,
and it loads on any machine.

Determinism (docs/scaling.md): on the CPU a study is bit-identical at the same thread count per
job. On a GPU it is bit-identical from run to run on the same GPU model, driver and torch version
only with ``deterministic: true`` semantics, which kdscope asks of torch
(``torch.use_deterministic_algorithms(True, warn_only=True)`` and cuDNN's deterministic mode);
the numbers differ from the CPU's in the last bits, and an operation torch cannot make
deterministic is named in a warning.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from kdscope.errors import KdscopeError

_current = torch.device("cpu")


def resolve(name: str | None) -> torch.device:
    """The device ``name`` means here (None: ``auto``); a user error naming the problem when it
    is a CUDA device this machine does not have."""
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise KdscopeError(
                f"device {name!r}: torch {torch.__version__} ({build}) sees no CUDA GPU; "
                "use device: cpu (or auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise KdscopeError(f"device {name!r}: this machine has {count} CUDA GPU(s)")
    return device


def use(name: str | None) -> torch.device:
    """Make the device ``name`` (:func:`resolve`) this process's current one; returns it. On
    CUDA, torch is asked for deterministic algorithms (module docstring)."""
    global _current  # noqa: PLW0603  (the process's one current device)
    _current = resolve(name)
    if _current.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        if _current.index is not None:
            torch.cuda.set_device(_current)
    return _current


def current() -> torch.device:
    """This process's current device (the CPU until :func:`use` names another)."""
    return _current


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for one with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")
