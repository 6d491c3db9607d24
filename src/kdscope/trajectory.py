"""Training trajectories: checkpoint epoch lists and the per-layer weight path length.

The learning-speed metric of the knowledge-point papers needs, for every diagnosed layer, the
path length of its weights: D(e) = (Σ over optimiser steps up to epoch e of ‖W_after − W_before‖_F)
/ ‖W_0‖_F, where W is the layer's weight (biases excluded; a container layer concatenates all its
weight tensors). :class:`PathLengthLogger` is a trainer callback that accumulates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from kdscope.models.hooks import layer_weights

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
    """Accumulates ‖ΔW‖_F of every optimiser step for the named layers, summed per epoch."""

    def __init__(self, model: nn.Module, layers: Mapping[str, str], example: Tensor) -> None:
        self.paths = dict(layers)
        self.weights = {name: layer_weights(model, path, example) for name, path in layers.items()}
        self.initial_norm = {name: _norm(ws) for name, ws in self.weights.items()}
        self.per_epoch: dict[str, list[float]] = {name: [] for name in layers}
        self._running = dict.fromkeys(layers, 0.0)
        self._before: dict[str, list[Tensor]] = {}

    def before_step(self) -> None:
        self._before = {n: [w.detach().clone() for w in ws] for n, ws in self.weights.items()}

    def after_step(self) -> None:
        for name, ws in self.weights.items():
            sq = sum(
                float((w.detach() - b).double().pow(2).sum())
                for w, b in zip(ws, self._before[name], strict=True)
            )
            self._running[name] += math.sqrt(sq)

    def end_epoch(self) -> None:
        for name in self.weights:
            self.per_epoch[name].append(self._running[name])
            self._running[name] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_norm": dict(self.initial_norm),
            "per_epoch": {k: list(v) for k, v in self.per_epoch.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.initial_norm = dict(state["initial_norm"])
        self.per_epoch = {k: list(v) for k, v in state["per_epoch"].items()}

    def to_json(self, checkpoints: list[int]) -> dict[str, Any]:
        """The ``trajectory.json`` content: per layer, its path, initial norm, per-epoch path
        length and the cumulative normalised distance D(e) for e = 0..epochs."""
        layers = {}
        for name, steps in self.per_epoch.items():
            cum = [0.0]
            for s in steps:
                cum.append(cum[-1] + s)
            w0 = self.initial_norm[name]
            layers[name] = {
                "path": self.paths[name],
                "initial_norm": w0,
                "path_length_per_epoch": steps,
                "cumulative_distance": [c / w0 if w0 > 0 else float("nan") for c in cum],
            }
        return {
            "checkpoints": checkpoints,
            "epochs_done": len(next(iter(self.per_epoch.values()), [])),
            "layers": layers,
        }


def _norm(ws: list[Tensor]) -> float:
    return math.sqrt(sum(float(w.detach().double().pow(2).sum()) for w in ws))
