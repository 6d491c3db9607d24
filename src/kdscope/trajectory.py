"""Training trajectories: checkpoint epoch lists and how far each diagnosed layer's weights move.

The learning-speed metric of the knowledge-point papers needs, for every diagnosed layer, the
distance its weight W travelled, normalised by its initial norm ‖W_0‖_F. W is the layer's own
weight (:func:`kdscope.models.hooks.layer_weight_names`: the conv or linear kernels, never a bias
nor a normalisation module's γ). :class:`PathLengthLogger` is a trainer callback that logs it in
two forms, both cumulative from D(0) = 0:

* **per-step path length** (the verdict basis): D(e) = Σ over the optimiser steps of epochs
  1..e of ‖W_after − W_before‖_F, over ‖W_0‖_F;
* **per-epoch displacement**: D_epoch(e) = Σ_{e' = 1..e} ‖W_{e'} − W_{e'−1}‖_F / ‖W_0‖_F, with
  W_e the weight at the end of epoch e.

By the triangle inequality D_epoch(e) ≤ D(e); they are equal when every step of an epoch moves
W in the same direction, and D_epoch counts an epoch's back-and-forth moves only by their net.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from kdscope.errors import KdscopeError
from kdscope.models.hooks import layer_weight_names

REFERENCE_CHECKPOINTS = (0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 70, 90, 110, 130, 150)


def auto_checkpoints(epochs: int) -> list[int]:
    """The reference checkpoint list of a 150-epoch run mapped to ``epochs`` epochs:
    the distinct values of round_half_up(k·epochs/150) over the reference list."""
    return sorted({math.floor(k * epochs / 150 + 0.5) for k in REFERENCE_CHECKPOINTS})


def checkpoint_epochs(spec: str | tuple[int, ...], epochs: int) -> list[int]:
    """Epochs at which to save weights: ``"auto"`` or an explicit list; epochs past the end are
    dropped and the final epoch is always included."""
    wanted = auto_checkpoints(epochs) if spec == "auto" else [e for e in spec if e <= epochs]
    return sorted(set(wanted) | {epochs})


class PathLengthLogger:
    """Per diagnosed layer: ‖ΔW‖_F of every optimiser step, summed per epoch, and
    ‖W_e − W_{e−1}‖_F at every epoch end (see the module docstring)."""

    def __init__(self, model: nn.Module, layers: Mapping[str, str], example: Tensor) -> None:
        self.paths = dict(layers)
        self.names = {
            name: layer_weight_names(model, path, example) for name, path in layers.items()
        }
        params = dict(model.named_parameters())
        self.weights = {name: [params[n] for n in ns] for name, ns in self.names.items()}
        self.initial_norm = {name: _norm(ws) for name, ws in self.weights.items()}
        self.per_epoch: dict[str, list[float]] = {name: [] for name in layers}
        self.displacement: dict[str, list[float]] = {name: [] for name in layers}
        self._epoch_start = self._snapshot()
        self._running = dict.fromkeys(layers, 0.0)
        self._before: dict[str, list[Tensor]] = {}

    def _snapshot(self) -> dict[str, list[Tensor]]:
        return {n: [w.detach().clone() for w in ws] for n, ws in self.weights.items()}

    def before_step(self) -> None:
        self._before = self._snapshot()

    def after_step(self) -> None:
        for name, ws in self.weights.items():
            self._running[name] += _distance(ws, self._before[name])

    def end_epoch(self) -> None:
        """Close the epoch: its summed step lengths, and the displacement since its start."""
        for name, ws in self.weights.items():
            self.per_epoch[name].append(self._running[name])
            self.displacement[name].append(_distance(ws, self._epoch_start[name]))
            self._running[name] = 0.0
        self._epoch_start = self._snapshot()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to log the same numbers, including the weights at the
        start of the next epoch (the reference of its displacement)."""
        return {
            "initial_norm": dict(self.initial_norm),
            "per_epoch": {k: list(v) for k, v in self.per_epoch.items()},
            "displacement": {k: list(v) for k, v in self.displacement.items()},
            "epoch_start": {k: [w.clone() for w in ws] for k, ws in self._epoch_start.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "displacement" not in state:
            raise KdscopeError(
                "the saved training state predates the per-epoch displacement log; delete the "
                "run's state.pt to restart the run from scratch"
            )
        self.initial_norm = dict(state["initial_norm"])
        self.per_epoch = {k: list(v) for k, v in state["per_epoch"].items()}
        self.displacement = {k: list(v) for k, v in state["displacement"].items()}
        self._epoch_start = {k: [w.clone() for w in ws] for k, ws in state["epoch_start"].items()}

    def to_json(self, checkpoints: list[int]) -> dict[str, Any]:
        """The ``trajectory.json`` content: per layer, its path, the parameters measured, the
        initial norm, and both distances per epoch with their cumulative normalised series
        ``cumulative_distance`` (per-step path length) and ``cumulative_displacement``
        (per-epoch displacement), each for e = 0..epochs."""
        layers = {}
        for name, steps in self.per_epoch.items():
            w0 = self.initial_norm[name]
            layers[name] = {
                "path": self.paths[name],
                "weights": self.names[name],
                "initial_norm": w0,
                "path_length_per_epoch": steps,
                "cumulative_distance": _cumulative(steps, w0),
                "displacement_per_epoch": self.displacement[name],
                "cumulative_displacement": _cumulative(self.displacement[name], w0),
            }
        return {
            "checkpoints": checkpoints,
            "epochs_done": len(next(iter(self.per_epoch.values()), [])),
            "layers": layers,
        }


def _cumulative(per_epoch: list[float], w0: float) -> list[float]:
    """[0, s_1, s_1 + s_2, ...] / w0 (NaN when the initial norm is 0)."""
    cum = [0.0]
    for s in per_epoch:
        cum.append(cum[-1] + s)
    return [c / w0 if w0 > 0 else float("nan") for c in cum]


def _distance(ws: list[Tensor], ref: list[Tensor]) -> float:
    """‖W − W_ref‖_F over the concatenation of the tensors, in double precision."""
    sq = sum(float((w.detach() - r).double().pow(2).sum()) for w, r in zip(ws, ref, strict=True))
    return math.sqrt(sq)


def _norm(ws: list[Tensor]) -> float:
    return math.sqrt(sum(float(w.detach().double().pow(2).sum()) for w in ws))
