"""Adversarial-vulnerability transfer (Ojha et al. 2023, adversarial vulnerability).

White-box iterative FGSM under L∞ on inputs in [0, 1], crafted on a *source* network (the teacher,
or a foreign network F for the control):

    I_0 = I,
    I_{t+1} = clip_[0,1]( clip_{I,ε}( I_t + a · sign(∇_{I_t} CE(f(I_t), y)) ) ),   t = 0 … k−1,

with clip_{I,ε}(J) = I + clamp(J − I, −ε, ε) the projection onto the L∞ ball of radius ε around the
clean input, k = 5 steps, a = ε/4 (k·a = 1.25 ε), the gradient at the current iterate, no random
start, and y the attack label (the true label by default; the source's clean prediction as option —
the caller passes whichever it reports).

Implementation: captum's :class:`captum.robust.PGD` (0.9.0) with ``lower_bound=0``,
``upper_bound=1``, ``norm="Linf"``, ``random_start=False`` performs exactly this update (FGSM step,
then ε-ball projection, then [0, 1] clamp, gradient at the current iterate) with one exception that
is switched off here: its FGSM step leaves a coordinate unchanged when |∂J/∂I_j| ≤ 1e-6
(``FGSM.zero_thresh``), which would stall the attack on confidently classified inputs whose
cross-entropy gradient is tiny; ``zero_thresh`` is set to 0, so the step is ``a · sign(g)`` exactly
(sign(0) = 0). The loss is the per-input cross-entropy, whose sum captum differentiates, so every
input's gradient is its own (no 1/N batch scaling).

Fooling: a source is fooled on I when argmax f(I_adv) ≠ argmax f(I). ε is calibrated by bisection
on a calibration subset so that the source fooling rate lies in 85 % ± 2 % (:func:`calibrate_eps`).
Only adversarial inputs that fool the source are kept; on them :func:`transfer_rates` gives the
student's fooling rate (its adversarial prediction differs from its own clean prediction), the
same-wrong-class rate and the accuracy drop, with per-input 0/1 arrays for bootstrapping.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope import device

__all__ = [
    "calibrate_eps",
    "fooled",
    "fooling_rate",
    "ifgsm",
    "predict_labels",
    "transfer_rates",
]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module of ``model`` in eval mode; restore each module's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _ce_per_input(logits: Tensor, target: Tensor) -> Tensor:
    """J_i = CE(f(I_i), y_i), one value per input (captum differentiates Σ_i J_i)."""
    return F.cross_entropy(logits, target, reduction="none")


def _targets(target: Tensor | int, n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1 and n != 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target has {t.numel()} labels for {n} inputs")
    return t


def ifgsm(
    model: nn.Module,
    x: Tensor,
    target: Tensor | int,
    eps: float,
    steps: int = 5,
    step_size: float | None = None,
    *,
    batch_size: int = 256,
) -> Tensor:
    """I-FGSM adversarial inputs of ``x`` (in [0, 1]) against ``model`` under ‖I_adv − I‖_∞ ≤ ε.

        I_0 = I,  I_{t+1} = clip_[0,1]( clip_{I,ε}( I_t + a · sign(∇_{I_t} CE(model(I_t), y)) ) )

    for t = 0 … steps − 1, a = ``step_size`` (default ε/4), y = ``target`` (one label per input, or
    one label for all). Runs through captum's PGD (see the module docstring) in eval mode; every
    module's train/eval flag is restored, no hook is left and no gradient is accumulated in the
    model's parameters (only ∂J/∂I is computed). Deterministic for a deterministic model. ε = 0,
    steps = 0 or a = 0 return a copy of ``x``. Processed in chunks of ``batch_size``, each moved
    (with its labels) to the model's device; the adversarial inputs are returned on the CPU.
    """
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    a = eps / 4.0 if step_size is None else float(step_size)
    if a < 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    x = x.detach()
    if eps == 0 or steps == 0 or a == 0 or x.shape[0] == 0:
        return x.cpu().clone()
    dev = device.model_device(model)
    y = _targets(target, x.shape[0], dev)

    from captum.robust import PGD  # captum takes ~0.6 s to import: only when attacking

    pgd = PGD(model, loss_func=_ce_per_input, lower_bound=0.0, upper_bound=1.0)
    pgd.fgsm.zero_thresh = 0.0  # sign(g) exactly, no dead zone around g = 0
    out = []
    with _eval_mode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Input Tensor \d+ did not already require")
        for i in range(0, x.shape[0], batch_size):
            xc = x[i : i + batch_size].to(dev).clone()
            adv = pgd.perturb(
                xc,
                radius=float(eps),
                step_size=a,
                step_num=int(steps),
                target=y[i : i + batch_size],
                targeted=False,
                random_start=False,
                norm="Linf",
            )
            out.append(adv.detach().cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_labels(model: nn.Module, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """argmax_c model(x)_c per input, in eval mode (flags restored), without gradients; computed
    on the model's device in chunks of ``batch_size``, returned on the CPU."""
    dev = device.model_device(model)
    with _eval_mode(model):
        return torch.cat(
            [
                model(x[i : i + batch_size].to(dev)).argmax(1).cpu()
                for i in range(0, x.shape[0], batch_size)
            ]
        )


def fooled(model: nn.Module, x_clean: Tensor, x_adv: Tensor, *, batch_size: int = 500) -> Tensor:
    """Bool per input: argmax model(x_adv) ≠ argmax model(x_clean) (eval mode, no grad; on the
    CPU, :func:`predict_labels`)."""
    if x_clean.shape != x_adv.shape:
        raise ValueError(f"shapes differ: {tuple(x_clean.shape)} vs {tuple(x_adv.shape)}")
    return predict_labels(model, x_adv, batch_size=batch_size) != predict_labels(
        model, x_clean, batch_size=batch_size
    )


def fooling_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor | int,
    eps: float,
    steps: int = 5,
    *,
    batch_size: int = 256,
    clean_pred: Tensor | None = None,
) -> float:
    """Fraction of inputs on which I-FGSM(ε, a = ε/4) against ``model`` changes its prediction:

        rate(ε) = (1/n) Σ_i 1[argmax f(I_adv,i) ≠ argmax f(I_i)].

    ``clean_pred`` (the model's clean predictions, :func:`predict_labels`: on the CPU) may be
    passed to avoid recomputing them.
    """
    if x.shape[0] == 0:
        return float("nan")
    if clean_pred is None:
        clean_pred = predict_labels(model, x, batch_size=batch_size)
    adv = ifgsm(model, x, y, eps, steps, batch_size=batch_size)
    adv_pred = predict_labels(model, adv, batch_size=batch_size)
    return float((adv_pred != clean_pred).double().mean())


def calibrate_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor | int,
    target_rate: float = 0.85,
    tol: float = 0.02,
    low: float = 0.0,
    high: float = 0.3,
    max_iter: int = 12,
    steps: int = 5,
    *,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Bisection on ε so that the fooling rate of ``model`` on (x, y) lies in target_rate ± tol.

    The rate r(ε) (:func:`fooling_rate`, a = ε/4) is non-decreasing in ε in expectation. First r(high)
    is evaluated: if r(high) < target − tol, ``high`` is returned with ``converged`` False (and if it
    is already within the band, ``high`` is returned converged). When low > 0, r(low) is checked the
    same way (above target + tol → ``low``, not converged). Then, for at most ``max_iter`` steps,
    m = (lo + hi)/2: |r(m) − target| ≤ tol stops (converged); r(m) < target sets lo = m, else hi = m.
    Without convergence, the evaluated ε whose rate is closest to the target (smaller ε on a tie) is
    returned. Deterministic (no random start; fixed evaluation order).

    Returns ``{"eps": float, "rate": float, "iterations": int (bisection midpoints evaluated),
    "converged": bool, "history": [[eps, rate], ...] (every evaluation, in order)}``.
    """
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target_rate must be in (0, 1), got {target_rate}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if not 0.0 <= low < high:
        raise ValueError(f"need 0 <= low < high, got low={low}, high={high}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if x.shape[0] == 0:
        raise ValueError("calibration set is empty")

    clean_pred = predict_labels(model, x, batch_size=batch_size)
    history: list[list[float]] = []

    def rate(eps: float) -> float:
        r = fooling_rate(model, x, y, eps, steps, batch_size=batch_size, clean_pred=clean_pred)
        history.append([float(eps), r])
        return r

    def result(eps: float, r: float, iterations: int, converged: bool) -> dict[str, Any]:
        return {
            "eps": float(eps),
            "rate": float(r),
            "iterations": int(iterations),
            "converged": bool(converged),
            "history": history,
        }

    def within(r: float) -> bool:
        return abs(r - target_rate) <= tol

    r_high = rate(high)
    if r_high < target_rate - tol or within(r_high):
        return result(high, r_high, 0, within(r_high))
    if low > 0:
        r_low = rate(low)
        if r_low > target_rate + tol or within(r_low):
            return result(low, r_low, 0, within(r_low))

    lo, hi = float(low), float(high)
    for it in range(1, max_iter + 1):
        mid = 0.5 * (lo + hi)
        r_mid = rate(mid)
        if within(r_mid):
            return result(mid, r_mid, it, True)
        if r_mid < target_rate:
            lo = mid
        else:
            hi = mid
    best_eps, best_rate = min(history, key=lambda h: (abs(h[1] - target_rate), h[0]))
    return result(best_eps, best_rate, max_iter, False)


def _np1d(a: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    out = np.asarray(a).reshape(-1)
    if out.size and not (np.issubdtype(out.dtype, np.integer) or out.dtype == np.bool_):
        raise ValueError(f"{name} must hold integer labels or booleans, got {out.dtype}")
    return out


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else float("nan")


def transfer_rates(
    source_fooled: Tensor | np.ndarray,
    clean_pred_student: Tensor | np.ndarray,
    adv_pred_student: Tensor | np.ndarray,
    adv_pred_source: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
) -> dict[str, Any]:
    """Transfer of a source's adversarial inputs to a student (Ojha et al. 2023).

    All arguments are per input over the attacked set (length n): ``source_fooled`` (bool, the
    source's adversarial prediction ≠ its clean prediction), the student's clean and adversarial
    predictions, the source's adversarial prediction and optionally the true labels. Only the kept
    set K = {i : source_fooled_i} is scored:

        fooled_i     = 1[ŝ_adv,i ≠ ŝ_clean,i]          rate            = mean_{i∈K} fooled_i
        same_class_i = 1[ŝ_adv,i = t̂_adv,i]            same_class_rate = mean_{i∈K} same_class_i
        clean_correct_i = 1[ŝ_clean,i = y_i],  adv_correct_i = 1[ŝ_adv,i = y_i]   (labels given)
        accuracy_drop = mean_K clean_correct − mean_K adv_correct

    (same_class counts every kept input, fooled or not, as Ojha et al. 2023 define the rate over the
    kept set.) Returns per-input 0/1 float64 arrays over K (``fooled``, ``same_class`` and, with
    labels, ``clean_correct``, ``adv_correct``) for bootstrapping, their means, ``kept`` (indices of
    K into the attacked set, to pair students attacked by the same source), ``n_kept`` and
    ``source_rate`` (mean of ``source_fooled`` over all n). Rates over an empty K are nan.
    """
    keep = _np1d(source_fooled, "source_fooled").astype(bool)
    s_clean = _np1d(clean_pred_student, "clean_pred_student")
    s_adv = _np1d(adv_pred_student, "adv_pred_student")
    t_adv = _np1d(adv_pred_source, "adv_pred_source")
    arrays = {"clean_pred_student": s_clean, "adv_pred_student": s_adv, "adv_pred_source": t_adv}
    lab = None if labels is None else _np1d(labels, "labels")
    if lab is not None:
        arrays["labels"] = lab
    for name, arr in arrays.items():
        if arr.shape != keep.shape:
            raise ValueError(f"{name} has {arr.size} entries, source_fooled has {keep.size}")

    fooled_k = (s_adv[keep] != s_clean[keep]).astype(np.float64)
    same_k = (s_adv[keep] == t_adv[keep]).astype(np.float64)
    out: dict[str, Any] = {
        "kept": np.flatnonzero(keep),
        "n_kept": int(keep.sum()),
        "source_rate": _mean(keep.astype(np.float64)),
        "fooled": fooled_k,
        "same_class": same_k,
        "rate": _mean(fooled_k),
        "same_class_rate": _mean(same_k),
    }
    if lab is not None:
        clean_ok = (s_clean[keep] == lab[keep]).astype(np.float64)
        adv_ok = (s_adv[keep] == lab[keep]).astype(np.float64)
        out.update(
            clean_correct=clean_ok,
            adv_correct=adv_ok,
            clean_accuracy=_mean(clean_ok),
            adv_accuracy=_mean(adv_ok),
            accuracy_drop=_mean(clean_ok) - _mean(adv_ok),
        )
    return out
