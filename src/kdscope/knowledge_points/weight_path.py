"""The weight path of diagnosed layers in a training loop of your own, for the learning speed.

Learning speed (docs/knowledge_points.md) reads, for a layer with weight W, the distance W has
travelled by each checkpoint, normalised by its initial norm ‖W_0‖_F:

* **path length** D(e) = Σ over the optimiser steps of epochs 1..e of ‖W_after − W_before‖_F,
  over ‖W_0‖_F (the verdict basis);
* **displacement** D_epoch(e) = Σ_{e' = 1..e} ‖W_{e'} − W_{e'−1}‖_F / ‖W_0‖_F, W_e the weight at
  the end of epoch e.

By the triangle inequality D_epoch(e) ≤ D(e). :class:`WeightPathLogger` logs both in any loop
(the same numbers as kdscope's trainer, :class:`kdscope.trajectory.PathLengthLogger`), and
writes them as a ``trajectory.json`` that :func:`read_distances` reads back.
:func:`from_checkpoints` gives the displacement alone from saved checkpoints: a lower bound of
the path length, and coarser still when checkpoints skip epochs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdscope import io
from kdscope.errors import KdscopeError
from kdscope.models.hooks import layer_weight_names, resolve_layer
from kdscope.trajectory import PathLengthLogger

__all__ = ["WeightPathLogger", "from_checkpoints", "read_distances"]


class WeightPathLogger:
    """Per layer: the path length and displacement of its weight, epoch by epoch.

    Create it with the model before training, call :meth:`step` after each optimiser step and
    :meth:`end_epoch` at the end of each epoch, then :meth:`save`::

        from kdscope import knowledge_points as kp

        log = kp.WeightPathLogger(model, ["conv", "fc1"], example=x[:2])
        for epoch in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
                log.step()                       # after every optimiser step
            log.end_epoch()
        log.save("trajectory.json")              # kp.read_distances(...) reads it back
        log.path_length["conv"], log.displacement["conv"]   # per epoch, unnormalised

    ``layers`` are module paths or roles the model declares (a list, or a mapping from the name
    to log under to the path). The weight of a layer is its own conv / linear kernels, never a
    bias or a normalisation γ; a layer without weights (an activation) is measured on the
    last weighted module before it, found from one forward pass on ``example``."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | Mapping[str, str],
        example: Tensor | None = None,
    ) -> None:
        named = dict(layers) if isinstance(layers, Mapping) else {k: k for k in layers}
        paths = {name: resolve_layer(model, layer) for name, layer in named.items()}
        self._log = PathLengthLogger(model, paths, example)
        self._log.before_step()

    def step(self) -> None:
        """Add ‖W − W_previous‖_F of every layer, W_previous its weight at the last call (or
        at creation); call it after each optimiser step."""
        self._log.after_step()
        self._log.before_step()

    def end_epoch(self) -> None:
        """Close an epoch: its summed step lengths and its displacement ‖W_e − W_{e−1}‖_F."""
        self._log.end_epoch()

    @property
    def epochs(self) -> int:
        """Epochs closed so far."""
        return len(next(iter(self._log.per_epoch.values()), []))

    @property
    def path_length(self) -> dict[str, list[float]]:
        """Per layer, Σ ‖ΔW‖_F over the steps of each epoch (not normalised)."""
        return {k: list(v) for k, v in self._log.per_epoch.items()}

    @property
    def displacement(self) -> dict[str, list[float]]:
        """Per layer, ‖W_e − W_{e−1}‖_F of each epoch e (not normalised)."""
        return {k: list(v) for k, v in self._log.displacement.items()}

    @property
    def initial_norm(self) -> dict[str, float]:
        """Per layer, ‖W_0‖_F."""
        return dict(self._log.initial_norm)

    def to_json(self, checkpoints: Sequence[int] = ()) -> dict[str, Any]:
        """The content of a ``trajectory.json`` (:meth:`PathLengthLogger.to_json`), with
        ``cumulative_distance`` D(e) and ``cumulative_displacement`` D_epoch(e) for e = 0..E;
        ``checkpoints``: the epochs whose weights you saved (informative only)."""
        return self._log.to_json(list(checkpoints))

    def save(self, path: str | Path, checkpoints: Sequence[int] = ()) -> None:
        """Write :meth:`to_json` to ``path`` (atomically)."""
        io.write_json(Path(path), self.to_json(checkpoints))


def read_distances(
    path: str | Path, layer: str, epochs: Sequence[int]
) -> tuple[list[float], list[float]]:
    """D(e) and D_epoch(e) of ``layer`` at ``epochs`` from a ``trajectory.json`` written by
    :meth:`WeightPathLogger.save` (or a kdscope run): the ``distance`` and ``displacement`` of
    :func:`~kdscope.knowledge_points.entropy_trajectory` for checkpoints of those epochs."""
    logged = io.read_json(Path(path)).get("layers", {}).get(layer)
    if logged is None:
        raise KdscopeError(f"{path} has no weight path of layer {layer!r}")
    step, disp = logged["cumulative_distance"], logged["cumulative_displacement"]
    if any(not 0 <= e < len(step) for e in epochs):
        raise KdscopeError(f"{path} logs epochs 0..{len(step) - 1}, not all of {list(epochs)}")
    return [_float(step[e]) for e in epochs], [_float(disp[e]) for e in epochs]


def _float(value: float | None) -> float:
    """A number of strict JSON (``null``: NaN) as a float."""
    return math.nan if value is None else float(value)


def from_checkpoints(
    checkpoints: Sequence[Mapping[str, Tensor] | str | Path],
    layers: Sequence[str],
    model: nn.Module | None = None,
    example: Tensor | None = None,
) -> dict[str, dict[str, Any]]:
    """The displacement of each layer's weight along a checkpoint series (state dicts or paths
    of ``torch.save``-d state dicts, in training order, the first one the initial weights):

        Δ_j = ‖W_j − W_{j−1}‖_F,   D_ckpt(j) = Σ_{j' ≤ j} Δ_{j'} / ‖W_0‖_F

    This is a **lower bound** of the path length D at checkpoint j (triangle inequality): it
    equals the per-epoch displacement D_epoch of :class:`WeightPathLogger` when there is one
    checkpoint per epoch, and is smaller still when checkpoints skip epochs. Use it when only
    checkpoints were saved; log the path length with :class:`WeightPathLogger` when you can.

    The weight of a layer: with ``model`` (and ``example`` for a layer without weights), the
    names kdscope's own logger measures; without, the tensors of ≥ 2 dimensions named
    ``<layer>.…weight…`` (kernels, not biases or normalisation γ). Returns per layer the keys
    of a ``trajectory.json`` layer: ``weights``, ``initial_norm``, ``displacement_per_epoch``
    (Δ_1..Δ_{K−1}) and ``cumulative_displacement`` (D_ckpt(0..K−1), starting at 0)."""
    states = [_state(c) for c in checkpoints]
    if not states:
        raise KdscopeError("from_checkpoints needs at least one checkpoint")
    out = {}
    for layer in layers:
        names = _weight_names(states[0], layer, model, example)
        series = [[s[n].detach().double() for n in names] for s in states]
        steps = [_distance(b, a) for a, b in zip(series, series[1:], strict=False)]
        w0 = math.sqrt(sum(float(w.pow(2).sum()) for w in series[0]))
        out[layer] = {
            "weights": names,
            "initial_norm": w0,
            "displacement_per_epoch": steps,
            "cumulative_displacement": _cumulative(steps, w0),
        }
    return out


def _state(checkpoint: Mapping[str, Tensor] | str | Path) -> Mapping[str, Tensor]:
    """A state dict, loaded (weights only) when given as a path."""
    if isinstance(checkpoint, (str, Path)):
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    return checkpoint


def _weight_names(
    state: Mapping[str, Tensor], layer: str, model: nn.Module | None, example: Tensor | None
) -> list[str]:
    """The state-dict names of ``layer``'s weight (see :func:`from_checkpoints`)."""
    if model is not None:
        return layer_weight_names(model, resolve_layer(model, layer), example)
    names = [
        k
        for k, v in state.items()
        if k.startswith(layer + ".") and "weight" in k.rpartition(".")[2] and v.dim() >= 2
    ]
    if not names:
        raise KdscopeError(
            f"no weight of layer {layer!r} in the checkpoint; pass the model (and an example "
            "input) to find it"
        )
    return names


def _distance(ws: list[Tensor], ref: list[Tensor]) -> float:
    """‖W − W_ref‖_F over the concatenation of the tensors."""
    return math.sqrt(sum(float((w - r).pow(2).sum()) for w, r in zip(ws, ref, strict=True)))


def _cumulative(steps: list[float], w0: float) -> list[float]:
    """[0, s_1, s_1 + s_2, ...] / w0 (NaN when the initial norm is 0)."""
    return [c / w0 if w0 > 0 else math.nan for c in accumulate(steps, initial=0.0)]
