"""The teacher check (docs/three_levels.md, 'The teacher check'): what a teacher still carries, per
level, from its logits alone, and flags D1-D3 naming a missing level and remedies to test.

Teacher logits v on the transfer (training) set, ρ^τ = softmax(v/τ), ρ¹ = softmax(v).

* (a) universe: mean non-GT mass 1 − ρ^τ_g (and at τ = 1).
* (b) domain: relational mass / excess at τ = 1 and τ, hierarchy score and Pearson of the class-mean
  matrix M^τ (off-diagonal) when a superclass map is given; tail concentration of ρ^τ.
* (c) instance: distribution of ρ¹_g (mean, std, IQR, fractions above 0.99 and 0.999), std of ρ^τ_g,
  std of the closed-form rescaling factor at initialisation w = 1 − λ (1 − ρ¹_g)/(1 − 1/K); on
  held-out data, AUROC of ρ¹_g for predicting correctness and the teacher's ECE.

Flags (thresholds are kdscope defaults, parameters of :class:`Thresholds`):

* D1 relation-free: relational excess at the distillation τ < 0.15 (superclass map given), else
  mean normalised tail entropy at τ ≥ 0.95. Both are read at the τ the student will see: tempering
  flattens the tail, so a teacher whose relations only show at τ = 1 gives a student at τ almost
  none (the τ = 1 value is reported beside it).
* D2 over-confident: fraction of training examples with ρ¹_g > 0.99 ≥ 0.9.
* D3 uninformative confidence: held-out AUROC < 0.6 (skipped without held-out data).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kdscope.correlation import auroc
from kdscope.teacher_knowledge.calibration import ece
from kdscope.teacher_knowledge.rescaling import _gt, _probs_labels, softmax
from kdscope.teacher_knowledge.soft_labels import (
    class_mean_matrix,
    non_gt_mass,
    offdiag_hierarchy,
    relational_mass,
    tail_concentration,
)

__all__ = ["DEFAULT_THRESHOLDS", "Thresholds", "teacher_check"]


@dataclass(frozen=True)
class Thresholds:
    """Flag thresholds of the teacher check (kdscope defaults, to be validated on a teacher zoo)."""

    relational_excess: float = 0.15
    tail_entropy: float = 0.95
    overconfident_fraction: float = 0.9
    overconfident_level: float = 0.99
    auroc: float = 0.6


DEFAULT_THRESHOLDS = Thresholds()


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python scalars, nan/inf → None, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _flag(
    flagged: bool | None, value: float, threshold: float, level: str, measure: str, message: str
) -> dict[str, Any]:
    return {
        "flagged": flagged,
        "value": value,
        "threshold": threshold,
        "level": level,
        "measure": measure,
        "message": message,
    }


def _universe(rho1: np.ndarray, rhot: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"non_gt_mass": non_gt_mass(rhot, y), "non_gt_mass_tau1": non_gt_mass(rho1, y)}


def _domain(
    rho1: np.ndarray, rhot: np.ndarray, y: np.ndarray, superclass: np.ndarray | None
) -> dict[str, float]:
    tail = tail_concentration(rhot, y)
    out: dict[str, float] = {
        "tail_entropy": tail["normalised_entropy"],
        "tail_top5_mass": tail["top5_mass"],
    }
    if superclass is None:
        return out
    rel1 = relational_mass(rho1, y, superclass)
    relt = relational_mass(rhot, y, superclass)
    hier = offdiag_hierarchy(class_mean_matrix(rhot, y, rhot.shape[1]), superclass)
    out.update(
        relational_chance=rel1["chance"],
        relational_mass_tau1=rel1["mass"],
        relational_excess_tau1=rel1["excess"],
        relational_mass=relt["mass"],
        relational_excess=relt["excess"],
        class_mean_hierarchy_score=hier["score"],
        class_mean_hierarchy_pearson=hier["pearson"],
    )
    return out


def _instance(rho1: np.ndarray, rhot: np.ndarray, y: np.ndarray, lam: float) -> dict[str, float]:
    g1 = _gt(rho1, y)
    k = rho1.shape[1]
    q25, q75 = np.quantile(g1, [0.25, 0.75])
    w_init = 1.0 - lam * (1.0 - g1) / (1.0 - 1.0 / k)
    return {
        "rho_g_mean": float(g1.mean()),
        "rho_g_std": float(g1.std()),
        "rho_g_iqr": float(q75 - q25),
        "frac_above_0.99": float((g1 > 0.99).mean()),
        "frac_above_0.999": float((g1 > 0.999).mean()),
        "rho_tau_g_std": float(_gt(rhot, y).std()),
        "w_init_std": float(w_init.std()),
    }


def _heldout(
    logits: np.ndarray | None, labels: np.ndarray | None, correct: np.ndarray | None
) -> dict[str, Any]:
    if logits is None:
        if correct is not None or labels is not None:
            raise ValueError("held-out labels / correctness need heldout_logits")
        return {"auroc": float("nan"), "auroc_target": None, "heldout_ece": float("nan")}
    if labels is None:
        raise ValueError("heldout_logits need heldout_labels")
    p, y = _probs_labels(softmax(logits), labels, name="heldout_logits")
    own = p.argmax(axis=1) == y
    target = own if correct is None else np.asarray(correct).reshape(-1).astype(bool)
    if target.shape != y.shape:
        raise ValueError(f"heldout_correct must have shape {y.shape}, got {target.shape}")
    # for the teacher's own correctness ρ_g is nearly a restatement of it (the argmax is right
    # exactly when ρ_g is the largest entry), so its top-1 confidence is scored instead: the
    # usual misclassification-detection AUROC
    score = p.max(axis=1) if correct is None else _gt(p, y)
    return {
        "auroc": auroc(score, target),
        "auroc_target": "teacher_correct (score: top-1 confidence)"
        if correct is None
        else "heldout_correct (score: ρ¹_g)",
        "heldout_ece": ece(p.max(axis=1), own),
        "heldout_accuracy": float(own.mean()),
    }


_REMEDY_D1 = (
    "test a lower τ (tempering flattens the tail), a teacher trained without label smoothing, "
    "or an early-stopped teacher"
)
_REMEDY_D2 = (
    "test an early-stopped or less over-fitted teacher, cross-fitted teacher predictions, "
    "or a higher τ"
)
_REMEDY_D3 = "test cross-fitted teacher predictions or an early-stopped, less over-fitted teacher"


def _flag_d1(domain: dict[str, float], hierarchy: bool, th: Thresholds) -> dict[str, Any]:
    if hierarchy:
        measure, value, thr = "relational_excess", domain["relational_excess"], th.relational_excess
        flagged = None if math.isnan(value) else value < thr
        what = (
            f"relational excess at τ is {value:.3g} < {thr}; at τ = 1 it is "
            f"{domain['relational_excess_tau1']:.3g}"
        )
    else:
        measure, value, thr = "tail_entropy", domain["tail_entropy"], th.tail_entropy
        flagged = None if math.isnan(value) else value >= thr
        what = f"normalised tail entropy at τ is {value:.3g} ≥ {thr}"
    if flagged:
        msg = f"Domain level missing: the teacher's wrong-class mass carries almost no class relations ({what}); {_REMEDY_D1}."
    elif flagged is None:
        msg = "Domain level undetermined: no example has wrong-class mass."
    else:
        msg = f"Domain level present: the teacher's wrong-class mass is structured ({measure} = {value:.3g})."
    return _flag(flagged, value, thr, "domain", measure, msg)


def _flag_d2(rho1: np.ndarray, y: np.ndarray, th: Thresholds) -> dict[str, Any]:
    level, thr = th.overconfident_level, th.overconfident_fraction
    value = float((_gt(rho1, y) > level).mean()) if y.size else float("nan")
    flagged = None if math.isnan(value) else value >= thr
    measure = f"frac_above_{level:g}"
    if flagged:
        msg = f"Instance level missing: {value:.1%} of training examples have ρ¹_g > {level:g}, so the teacher's confidence no longer re-weights examples; {_REMEDY_D2}."
    else:
        msg = (
            f"Instance level present: only {value:.1%} of training examples have ρ¹_g > {level:g}."
        )
    return _flag(flagged, value, thr, "instance", measure, msg)


def _flag_d3(held: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    value, thr = held["auroc"], th.auroc
    if math.isnan(value):
        msg = "D3 skipped: needs held-out teacher logits and labels with both correct and wrong examples."
        return _flag(None, value, thr, "instance", "auroc", msg)
    if value < thr:
        msg = f"Instance level uninformative: the teacher's ground-truth confidence barely predicts held-out correctness (AUROC {value:.3g} < {thr}); {_REMEDY_D3}."
        return _flag(True, value, thr, "instance", "auroc", msg)
    msg = f"Instance level informative: the teacher's confidence predicts held-out correctness (AUROC {value:.3g})."
    return _flag(False, value, thr, "instance", "auroc", msg)


def teacher_check(
    train_logits: np.ndarray,
    train_labels: np.ndarray,
    tau: float,
    lam: float,
    superclass: np.ndarray | None = None,
    heldout_logits: np.ndarray | None = None,
    heldout_labels: np.ndarray | None = None,
    heldout_correct: np.ndarray | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Run the teacher check on teacher logits (eval mode, transfer set).

    Keys without a suffix are at the distillation τ, '_tau1' at τ = 1:
    universe: non_gt_mass, non_gt_mass_tau1; domain: tail_entropy, tail_top5_mass and, with a
    superclass map, relational_chance, relational_mass(_tau1), relational_excess(_tau1),
    class_mean_hierarchy_score, class_mean_hierarchy_pearson; instance: rho_g_mean, rho_g_std,
    rho_g_iqr, frac_above_0.99, frac_above_0.999 (of ρ¹_g), rho_tau_g_std, w_init_std, auroc,
    auroc_target, heldout_ece (and heldout_accuracy with held-out data).

    heldout_correct: correctness of a held-out model on the held-out examples (the AUROC target);
    None uses the teacher's own correctness argmax ρ = g. Returns a JSON-serialisable dict with
    'settings' (tau, lam, K, n_train, n_heldout, thresholds), 'levels' ('universe', 'domain',
    'instance'), 'flags' ('D1_relation_free', 'D2_over_confident', 'D3_uninformative_confidence':
    flagged, value, threshold, level, measure, message) and 'flagged' (names of raised flags).
    Undefined quantities (nan) are None; a flag that cannot be evaluated has flagged = None.
    """
    v, y = _probs_labels(train_logits, train_labels, name="train_logits")
    if y.size == 0:
        raise ValueError("teacher_check needs at least one training example")
    rho1, rhot = softmax(v), softmax(v, tau)
    domain = _domain(rho1, rhot, y, superclass)
    held = _heldout(heldout_logits, heldout_labels, heldout_correct)
    instance = _instance(rho1, rhot, y, lam)
    instance.update(held)
    flags = {
        "D1_relation_free": _flag_d1(domain, superclass is not None, thresholds),
        "D2_over_confident": _flag_d2(rho1, y, thresholds),
        "D3_uninformative_confidence": _flag_d3(held, thresholds),
    }
    result = {
        "settings": {
            "tau": tau,
            "lam": lam,
            "K": v.shape[1],
            "n_train": y.size,
            "n_heldout": 0 if heldout_logits is None else len(heldout_logits),
            "thresholds": asdict(thresholds),
        },
        "levels": {"universe": _universe(rho1, rhot, y), "domain": domain, "instance": instance},
        "flags": flags,
        "flagged": [name for name, f in flags.items() if f["flagged"]],
    }
    return _clean(result)
