"""Knowledge points of one network over its checkpoint trajectory, and two networks compared.

:func:`entropy_trajectory` estimates the entropy maps of candidate inputs at every checkpoint
(in chunks, stopping once ``target`` inputs are effective); :func:`network_metrics`
turns maps into the papers' metrics on a set of inputs; :func:`compare` pairs a student with its
baseline on the intersection of their effective inputs. None of this needs a study: any
``nn.Module`` checkpoints, layer path, inputs and foreground masks will do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdscope.errors import KdscopeError
from kdscope.knowledge_points import metrics
from kdscope.knowledge_points.estimator import (
    EstimatorSettings,
    default_lambda,
    estimate,
    perturbation_path,
    resolve_scale,
)
from kdscope.knowledge_points.modalities import UNIT_MAPS
from kdscope.knowledge_points.modalities import image_units as image_units  # re-exported
from kdscope.knowledge_points.units import UnitMap

# Metric name -> direction expected for a distilled student against its baseline (Zhang et al.
# 2022).
EXPECTED: dict[str, str] = {
    "n_fg": "higher",
    "n_bg": "lower",
    "quality": "higher",
    "d_mean": "lower",
    "d_std": "lower",
    "rho": "higher",
}
HYPOTHESES: dict[str, tuple[str, ...]] = {
    "quantity_quality": ("n_fg", "n_bg", "quality"),
    "learning_speed": ("d_mean", "d_std"),
    "stability": ("rho",),
}
# The learning-speed metrics from the per-epoch displacement instead of the per-step path
# length: reported beside the verdict metrics (same expected direction), never in a verdict.
DISPLACEMENT: dict[str, str] = {"d_epoch_mean": "lower", "d_epoch_std": "lower"}


@dataclass
class EntropyTrajectory:
    """Entropy maps of I analysed candidates at K checkpoints (n units each).

    ``candidates`` are the inputs' indices in the caller's candidate list; ``effective`` the
    effective-input filter (σ_f > 0 at every checkpoint, and background mean entropy ≥ foreground
    mean entropy at every checkpoint in the later part of training). ``distance`` and
    ``displacement`` are the diagnosed layer's cumulative normalised per-step path length and
    per-epoch displacement at each checkpoint (:mod:`kdscope.trajectory`); they are not part
    of :meth:`arrays` (the cached maps), so a cache never holds stale distances.
    """

    entropy: np.ndarray  # (I, K, n) float32
    sigma_f: np.ndarray  # (I, K)
    calibrated: np.ndarray  # (I, K) bool
    foreground: np.ndarray  # (I, n) bool
    valid: np.ndarray  # (I, n) bool
    candidates: np.ndarray  # (I,) int
    effective: np.ndarray  # (I,) bool
    epochs: np.ndarray  # (K,) int
    distance: np.ndarray  # (K,) cumulative normalised per-step path length at each checkpoint
    displacement: np.ndarray  # (K,) cumulative normalised per-epoch displacement
    info: dict[str, Any]

    def arrays(self) -> dict[str, np.ndarray]:
        """The entropy maps and their bookkeeping, without the distances."""
        return {k: getattr(self, k) for k in _ARRAYS}

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        info: dict[str, Any],
        distance: Sequence[float] | None = None,
        displacement: Sequence[float] | None = None,
    ) -> EntropyTrajectory:
        """Maps stored by :meth:`arrays`, with the distances of the run (NaN if not given)."""
        k = len(arrays["epochs"])
        return cls(
            **{key: arrays[key] for key in _ARRAYS},
            distance=_series(distance, k),
            displacement=_series(displacement, k),
            info=info,
        )

    def rows(self, candidates: np.ndarray) -> EntropyTrajectory:
        """The trajectory restricted to the given candidate indices (in that order)."""
        pos = {int(c): i for i, c in enumerate(self.candidates)}
        idx = np.array([pos[int(c)] for c in candidates], dtype=np.int64)
        return EntropyTrajectory(
            self.entropy[idx],
            self.sigma_f[idx],
            self.calibrated[idx],
            self.foreground[idx],
            self.valid[idx],
            self.candidates[idx],
            self.effective[idx],
            self.epochs,
            self.distance,
            self.displacement,
            self.info,
        )

    def effective_candidates(self, use_filter: bool = True) -> np.ndarray:
        return self.candidates[self.effective] if use_filter else self.candidates


_ARRAYS = (
    "entropy",
    "sigma_f",
    "calibrated",
    "foreground",
    "valid",
    "candidates",
    "effective",
    "epochs",
)


def _series(values: Sequence[float] | None, k: int) -> np.ndarray:
    """A (K,) float series, or NaN everywhere when ``values`` is None."""
    if values is None:
        return np.full(k, np.nan)
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (k,):
        raise ValueError(f"need one distance per checkpoint ({k}), got shape {out.shape}")
    return out


def input_units(
    modality: str, model: nn.Module, inputs: Tensor, grid: int | None = None
) -> UnitMap:
    """The unit map of a modality's perturbed tensor, from the builder registered for it in
    :data:`~kdscope.knowledge_points.modalities.UNIT_MAPS`: image grid cells
    (:func:`image_units`), one unit per point of (N, P, 3) clouds (σ shared over x, y, z) or
    one unit per token of (N, L) ids (σ shared over the embedding dimensions of the model's
    ``embed`` output; padding and ``<sep>`` excluded)."""
    if modality not in UNIT_MAPS:
        raise KdscopeError(f"the {modality} modality has no unit map yet")
    return UNIT_MAPS.get(modality).build(model, inputs, grid)


def entropy_trajectory(
    checkpoints: Sequence[nn.Module],
    layer: str,
    inputs: Tensor,
    foreground: Tensor,
    units: UnitMap,
    epochs: Sequence[int],
    distance: Sequence[float] | None = None,
    settings: EstimatorSettings | None = None,
    target: int | None = None,
    late_fraction: float = 4 / 15,
    mask_rule: str = "majority",
    chunk: int = 16,
    progress: Callable[[int], None] | None = None,
    counted: Tensor | None = None,
    displacement: Sequence[float] | None = None,
) -> EntropyTrajectory:
    """Entropy maps of ``inputs`` (candidates, in order) at ``layer`` of every checkpoint.

    ``distance`` and ``displacement`` (optional, NaN if not given: no learning speed) are the
    layer's cumulative normalised per-step path length and per-epoch displacement at each
    checkpoint (:class:`~kdscope.knowledge_points.WeightPathLogger` logs them in a training
    loop of your own). One network without checkpoints: :func:`single`.

    Candidates are processed in chunks of ``chunk``; with ``target`` set, processing stops once
    that many are effective (the reference analyses inputs one at a time until 50 are). An
    input whose foreground or background is empty is never effective. ``progress`` is called
    with the number of (input, checkpoint) problems done. ``counted`` (I, n) bool restricts
    the units that are counted as foreground or background (a QA question's tokens are
    perturbed and enter the mean entropy, but only context tokens are counted);
    default: every unit. The scale s of each checkpoint is resolved once over all ``inputs``,
    so the maps do not depend on ``chunk``.
    """
    settings = settings or EstimatorSettings()
    k = len(checkpoints)
    if len(epochs) != k:
        raise ValueError("need one epoch per checkpoint")
    fg_units = units.foreground(foreground, mask_rule).numpy()
    valid_all = units.valid.expand(inputs.shape[0], -1).numpy()
    if counted is not None:
        valid_all = valid_all & counted.numpy()
    per_checkpoint = [
        replace(settings, scale=resolve_scale(m, inputs, settings)) for m in checkpoints
    ]
    late = np.asarray(epochs) >= late_fraction * max(epochs)
    parts: list[dict[str, np.ndarray]] = []
    n_effective = 0
    for a in range(0, inputs.shape[0], chunk):
        b = min(inputs.shape[0], a + chunk)
        um = (
            units
            if units.problems == 1
            else UnitMap(units.assignment[a:b], units.n_units, units.shape, units.grid)
        )
        maps = [
            estimate(m, layer, inputs[a:b], um, st)
            for m, st in zip(checkpoints, per_checkpoint, strict=True)
        ]
        if progress is not None:
            progress((b - a) * k)
        ent = torch.stack([r.entropy for r in maps], 1).numpy().astype(np.float32)
        sf = torch.stack([r.sigma_f for r in maps], 1).numpy()
        part = {
            "entropy": ent,
            "sigma_f": sf,
            "calibrated": torch.stack([r.calibrated for r in maps], 1).numpy(),
            "foreground": fg_units[a:b],
            "valid": valid_all[a:b],
            "candidates": np.arange(a, b),
        }
        part["effective"] = _effective(ent, sf, fg_units[a:b], valid_all[a:b], late)
        parts.append(part)
        n_effective += int(part["effective"].sum())
        if target is not None and n_effective >= target:
            break
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    if target is not None:  # keep the first `target` effective inputs, as the reference does
        keep = np.cumsum(out["effective"]) <= target
        out["effective"] = out["effective"] & keep
    model = checkpoints[-1]
    info = estimator_info(model, units, per_checkpoint[-1], inputs)  # its s already resolved
    return EntropyTrajectory(
        **out,
        epochs=np.asarray(epochs, dtype=np.int64),
        distance=_series(distance, k),
        displacement=_series(displacement, k),
        info=info,
    )


def _effective(
    entropy: np.ndarray,
    sigma_f: np.ndarray,
    fg: np.ndarray,
    valid: np.ndarray,
    late: np.ndarray,
) -> np.ndarray:
    """σ_f > 0 everywhere, both regions non-empty, and mean H(bg) − mean H(fg) ≥ 0 (not NaN)
    at every late checkpoint."""
    bg = valid & ~fg
    fgv = valid & fg
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.nan_to_num(entropy, nan=0.0)
        mean_bg = (h * bg[:, None]).sum(-1) / bg.sum(-1)[:, None]
        mean_fg = (h * fgv[:, None]).sum(-1) / fgv.sum(-1)[:, None]
        gap = mean_bg - mean_fg
    ok_gap = np.where(late[None, :], gap >= 0, True).all(1)  # NaN compares False
    return (sigma_f > 0).all(1) & bg.any(1) & fgv.any(1) & ok_gap


def estimator_info(
    model: nn.Module, units: UnitMap, settings: EstimatorSettings, inputs: Tensor
) -> dict[str, Any]:
    """The constants actually used (the report states s, n, λ, η and the target);
    where inputs differ in n (texts), n is their mean (and range) and η the one at that n."""
    scale = resolve_scale(model, inputs, settings)
    counts = units.valid.sum(1)
    n = float(counts.double().mean())  # inputs of texts have their own n (their real tokens)
    lr = settings.lr * scale**2 * (n / settings.reference_units if settings.lr_unit_scaling else 1)
    return {
        "mode": settings.mode,
        "perturbation_space": perturbation_path(model) or "input",
        "scale_s": scale,
        "units_n": int(n) if n.is_integer() else round(n, 1),
        "units_n_range": [int(counts.min()), int(counts.max())],
        "lambda": settings.lam if settings.lam is not None else default_lambda(model),
        "lr": lr,
        "target_mean_entropy": settings.target + math.log(scale),
        "samples": settings.samples if settings.mode != "fast" else None,
        "projections": settings.projections if settings.mode == "fast" else None,
        "feature_transform": settings.feature_transform,
    }


def network_metrics(
    traj: EntropyTrajectory,
    b: float = metrics.B_DEFAULT,
    per_input_level: bool = False,
    rho_include_initial: bool = True,
) -> dict[str, Any]:
    """The papers' metrics of one network on all inputs of ``traj``.

    Returns per-input arrays at the final checkpoint (``n_fg``, ``n_bg``, ``quality``), the
    peak distance per input in both forms (``d``: per-step path length D[m̂(x)], the verdict
    basis; ``d_epoch``: per-epoch displacement D_epoch[m̂(x)], same m̂), stability ``rho`` per
    input, the per-checkpoint means (curves) and the background level H̄ per checkpoint.

    With one checkpoint (K = 1) there is no learning speed and no stability: m̂ would be that
    checkpoint whatever the counts, and ρ = |S_0| / |S_0| is 1 by construction. ``d``,
    ``d_epoch`` and ``rho`` are then NaN and ``absent`` says why (:data:`ABSENT`); otherwise
    ``absent`` is None.
    """
    level = metrics.background_level(
        traj.entropy, traj.foreground, traj.valid, per_input=per_input_level
    )
    pts = metrics.knowledge_points(traj.entropy, level, b, traj.valid)
    counts = metrics.point_counts(pts, traj.foreground, traj.valid)
    speed = metrics.learning_speed(counts["n_fg"], traj.distance)
    by_epoch = metrics.learning_speed(counts["n_fg"], traj.displacement)
    rho = metrics.stability(pts, traj.foreground, rho_include_initial, "fg", traj.valid)
    series = len(traj.epochs) > 1
    undefined = np.full(len(rho), np.nan)
    return {
        "n_fg": counts["n_fg"][:, -1].astype(np.float64),
        "n_bg": counts["n_bg"][:, -1].astype(np.float64),
        "quality": counts["quality"][:, -1],
        "d": np.asarray(speed["d"], dtype=np.float64) if series else undefined,
        "d_epoch": np.asarray(by_epoch["d"], dtype=np.float64) if series else undefined.copy(),
        "rho": rho if series else undefined.copy(),
        "absent": None if series else ABSENT,
        "curve_n_fg": counts["n_fg"].mean(0),
        "curve_n_bg": counts["n_bg"].mean(0),
        "curve_quality": counts["quality"].mean(0),
        "level": np.asarray(level),
        "points": pts,
    }


ABSENT = (
    "learning speed and stability need a series of checkpoints of one training run (the "
    "distance the layer's weights travel until the most foreground points are encoded, and the "
    "points kept from checkpoint to checkpoint); one network has neither: use "
    "entropy_trajectory over checkpoints with the logged path length (WeightPathLogger)"
)
"""Why one network (one checkpoint) has no learning speed and no stability."""


@dataclass(frozen=True)
class NetworkPoints:
    """The knowledge points of one network at one layer, on I inputs of n units.

    ``entropy`` holds H_i(x) (the entropies of the estimated σ maps), ``level`` the background
    level H̄ (a scalar, or (I,) per input), ``points`` the mask H̄ − H_i(x) > b, and ``n_fg``,
    ``n_bg``, ``quality`` = n_fg / (n_fg + n_bg), ``fg_ratio`` = n_fg / |fg|, ``bg_ratio`` =
    n_bg / |bg| the per-input counts (docs/knowledge_points.md, 'Formulas'). ``effective`` marks
    the effective inputs (σ_f > 0, both regions non-empty, mean H(bg) ≥ mean H(fg)).
    ``learning_speed`` and ``stability`` are always None: they need a checkpoint series
    (``absent`` says why)."""

    entropy: np.ndarray  # (I, n)
    sigma_f: np.ndarray  # (I,)
    foreground: np.ndarray  # (I, n) bool
    valid: np.ndarray  # (I, n) bool
    candidates: np.ndarray  # (I,) int: positions in the inputs given
    effective: np.ndarray  # (I,) bool
    level: np.ndarray  # () or (I,)
    points: np.ndarray  # (I, n) bool
    n_fg: np.ndarray  # (I,)
    n_bg: np.ndarray  # (I,)
    quality: np.ndarray  # (I,)
    fg_ratio: np.ndarray  # (I,)
    bg_ratio: np.ndarray  # (I,)
    info: dict[str, Any]
    learning_speed: None = None
    stability: None = None
    absent: str = ABSENT

    def summary(self) -> dict[str, float | None]:
        """Means over the inputs of n_fg, n_bg and quality; ``d_mean``, ``d_std`` and ``rho``
        are None (see ``absent``)."""
        means = {k: float(np.mean(getattr(self, k))) for k in ("n_fg", "n_bg", "quality")}
        return {**means, "d_mean": None, "d_std": None, "rho": None}


def single(
    model: nn.Module,
    layer: str,
    inputs: Tensor,
    foreground: Tensor,
    units: UnitMap,
    settings: EstimatorSettings | None = None,
    b: float = metrics.B_DEFAULT,
    per_input_level: bool = False,
    effective_filter: bool = False,
    mask_rule: str = "majority",
    chunk: int = 16,
    counted: Tensor | None = None,
) -> NetworkPoints:
    """Knowledge points of one network ``model`` at ``layer``: no checkpoints, epochs or
    distances. The numbers equal those :func:`entropy_trajectory` and :func:`network_metrics`
    give at the same checkpoint of a series (its background level is per checkpoint).

    With ``effective_filter`` the metrics are computed on the effective inputs only (the
    background level too), as :func:`compare` does; by default on every input, with
    ``effective`` saying which are effective. ``foreground``, ``units``, ``settings``,
    ``mask_rule``, ``chunk`` and ``counted`` are those of :func:`entropy_trajectory`."""
    traj = entropy_trajectory(
        [model],
        layer,
        inputs,
        foreground,
        units,
        [0],
        settings=settings,
        mask_rule=mask_rule,
        chunk=chunk,
        counted=counted,
    )
    if effective_filter:
        traj = traj.rows(traj.effective_candidates())
    return _network_points(traj, b, per_input_level)


def _network_points(traj: EntropyTrajectory, b: float, per_input_level: bool) -> NetworkPoints:
    """The :class:`NetworkPoints` of the last checkpoint of ``traj``."""
    last = traj.rows(traj.candidates)
    entropy = last.entropy[:, -1:]
    level = metrics.background_level(entropy, last.foreground, last.valid, per_input_level)
    pts = metrics.knowledge_points(entropy, level, b, last.valid)
    counts = metrics.point_counts(pts, last.foreground, last.valid)
    return NetworkPoints(
        entropy=entropy[:, 0],
        sigma_f=last.sigma_f[:, -1],
        foreground=last.foreground,
        valid=last.valid,
        candidates=last.candidates,
        effective=last.effective,
        level=np.asarray(level)[..., 0],
        points=pts[:, 0],
        **{k: counts[k][:, 0].astype(np.float64) for k in _COUNTS},
        info=traj.info,
    )


_COUNTS = ("n_fg", "n_bg", "quality", "fg_ratio", "bg_ratio")


def per_input_table(m: dict[str, Any]) -> np.ndarray:
    """(I, 6) columns n_fg, n_bg, quality, d, rho, d_epoch: the rows the bootstrap resamples."""
    return np.stack([m["n_fg"], m["n_bg"], m["quality"], m["d"], m["rho"], m["d_epoch"]], 1)


COLUMNS = {
    "n_fg": 0,
    "n_bg": 1,
    "quality": 2,
    "d_mean": 3,
    "d_std": 3,
    "rho": 4,
    "d_epoch_mean": 5,
    "d_epoch_std": 5,
}
WIDTH = len(set(COLUMNS.values()))


def statistic(metric: str, paired: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """Bootstrap statistic of resampled rows (n_boot, k, I, C): the mean of the metric's column
    (population std for ``d_std`` and ``d_epoch_std``); ``paired`` rows hold student columns
    then baseline columns and the statistic is student − baseline."""
    col = COLUMNS[metric]
    reduce = np.std if metric.endswith("_std") else np.mean

    def one(rows: np.ndarray) -> np.ndarray:
        return reduce(rows[..., col], axis=-1)

    def diff(rows: np.ndarray) -> np.ndarray:
        return reduce(rows[..., col], axis=-1) - reduce(rows[..., WIDTH + col], axis=-1)

    return diff if paired else one


def compare(
    student: EntropyTrajectory,
    baseline: EntropyTrajectory,
    effective_filter: bool = True,
    **metric_options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired per-input rows (I, 2·WIDTH: student columns, then baseline columns; see
    :func:`per_input_table`) on the intersection of both networks' effective inputs, and those
    inputs' candidate indices. Each network's background level is computed on that set."""
    common = np.intersect1d(
        student.effective_candidates(effective_filter),
        baseline.effective_candidates(effective_filter),
    )
    if len(common) == 0:
        return np.zeros((0, 2 * WIDTH)), common
    ms = network_metrics(student.rows(common), **metric_options)
    mb = network_metrics(baseline.rows(common), **metric_options)
    return np.concatenate([per_input_table(ms), per_input_table(mb)], 1), common
