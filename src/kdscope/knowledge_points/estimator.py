"""Information discarding per input unit: one σ per unit, learned so that the layer cannot tell
x + σ⊙ε from x (Cheng et al. 2020; Ma et al. 2019), with the authors' reference recipe.

Objective (Cheng et al. 2020; Zhang et al. 2022), for a layer output f, φ = ReLU (or identity) and
units u = 1..n::

    Loss(σ) = E_ε‖φ(f(x + σ⊙ε)) − φ(f(x))‖²_mean / σ_f − λ · mean_u H_u,
    H_u = log σ_u + ½ log(2πe),

where ‖·‖²_mean is the mean over feature elements (and samples), σ⊙ε scales every element by
the σ of its unit, and σ_f is the same distortion under uniform σ = σ₀. Noise lives in the
model's *perturbation space*: the output of its normaliser (module ``normalize``, or the module
named by a model attribute ``perturb_at``), otherwise the raw input with a scale s.

The calibrated snapshot (the estimand of ``reference`` and ``fast``): plain SGD on σ from
σ₀ = 0.01·s, learning rate η = 1e-4·s²·n/256, σ clamped to [0.001·s, s] before every step,
at most 80 steps; after step 59 the run stops if the mean entropy exceeded the target
(−2.8 + log s) at any step, else λ ← 1.5λ for steps 60..79. The returned σ is the recorded
snapshot (σ before each update) whose mean entropy is closest to the target.

Modes:

* ``reference``: the recipe itself, one input at a time, B = 96 fresh noise samples per step
  (Monte Carlo gradient by autograd).
* ``fast``: the same dynamics in expectation under the layer's linearisation at x. With
  J = ∂φ(f)/∂x at x and c_u = Σ_{j∈u} ‖J[:, j]‖², the expected distortion is
  Σ_u c_u σ_u² / M, σ_f = σ₀² C / M (C = Σ_u c_u), so the expected gradient is
  ∂Loss/∂σ_u = 2 c_u σ_u / (σ₀² C) − λ / (n σ_u). c_u comes from K vector–Jacobian products
  with (scaled, random orthonormal) directions v: E[(Jᵀv)_j²] = ‖J[:, j]‖², exact when K ≥ M
  (then the identity basis is used). The 80-step recursion is then a tensor program over all
  problems (images × checkpoints) at once, with the reference's stop/raise and snapshot rules.
  This removes the Monte Carlo noise of the reference rather than reproducing it.
* ``optimum``: the minimiser of the relaxed objective at fixed λ (Adam on log σ with fresh
  Monte Carlo samples, iterate averaging over the last quarter of the steps); analytic tests
  and ablations only: a different estimand from the snapshot.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn

from kdscope.device import model_device
from kdscope.errors import KdscopeError
from kdscope.knowledge_points.units import UnitMap
from kdscope.models.hooks import get_module, resolve_layer

HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)

Mode = Literal["reference", "fast", "optimum"]
#: raised when the estimator's numbers change (a cache of maps records it): 2 batches the
#: ``fast`` mode's backward passes, which changes its sensitivities in the last float bits
ESTIMATOR_VERSION = 2
LayerFn = Callable[[Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class EstimatorSettings:
    """Constants of the estimator; the defaults are the reference recipe's (Zhang et al. 2022).

    ``lam`` None means 7, or 6 for residual networks (a model with a ``BasicBlock``).
    ``scale`` None means 1 when noise is added after the model's normaliser, else the
    per-element standard deviation of the perturbed tensor over the given inputs.
    ``lr_unit_scaling`` multiplies η by n/256 (n = units of the problem, excluded ones not
    counted). ``projections``: K of the ``fast`` mode. ``samples``: B of ``reference`` and
    ``optimum`` (and of σ_f in both).
    """

    mode: Mode = "fast"
    lam: float | None = None
    samples: int = 96
    lr: float = 1e-4
    sigma_init: float = 0.01
    sigma_min: float = 0.001
    sigma_max: float = 1.0
    target: float = -2.8
    max_steps: int = 80
    check_step: int = 59
    lam_raise: float = 1.5
    feature_transform: Literal["relu", "identity"] = "relu"
    scale: float | None = None
    lr_unit_scaling: bool = True
    reference_units: int = 256
    projections: int = 128
    optimum_steps: int = 400
    optimum_lr: float = 0.05
    calibration_tol: float = 0.05
    chunk_rows: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("reference", "fast", "optimum"):
            raise KdscopeError(f"unknown estimator mode {self.mode!r} (reference, fast, optimum)")
        if not 0 < self.sigma_min < self.sigma_init <= self.sigma_max:
            raise KdscopeError("need 0 < sigma_min < sigma_init <= sigma_max")
        if not 0 <= self.check_step < self.max_steps:
            raise KdscopeError("need 0 <= check_step < max_steps")


@dataclass
class Discarding:
    """Per-problem results (P problems, n units); entropies of excluded units are NaN.

    ``history_*`` hold the recorded σ (T, P, n) and mean entropies (T, P) when requested.
    """

    sigma: Tensor
    entropy: Tensor
    sigma_f: Tensor
    step: Tensor
    mean_entropy: Tensor
    lam: Tensor
    calibrated: Tensor
    effective: Tensor
    valid: Tensor
    scale: float
    settings: EstimatorSettings
    history_sigma: Tensor | None = None
    history_mean: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def cat(self, other: Discarding) -> Discarding:
        """Problems of ``self`` followed by those of ``other`` (histories dropped)."""
        names = ("sigma", "entropy", "sigma_f", "step", "mean_entropy", "lam", "calibrated")
        return replace(
            self,
            **{k: torch.cat([getattr(self, k), getattr(other, k)]) for k in names},
            effective=torch.cat([self.effective, other.effective]),
            valid=torch.cat([self.valid, other.valid]),
            history_sigma=None,
            history_mean=None,
        )


class _Stop(Exception):
    """Raised by the layer hook to skip the rest of the forward pass."""


def perturbation_path(model: nn.Module) -> str | None:
    """Module whose output is perturbed: ``model.perturb_at`` if set, else a top-level
    ``normalize`` module, else None (the raw input)."""
    path = getattr(model, "perturb_at", None)
    if path is not None:
        return str(path)
    return "normalize" if isinstance(getattr(model, "normalize", None), nn.Module) else None


def default_lambda(model: nn.Module) -> float:
    """The reference's λ: 6 for residual networks, 7 otherwise (VGG, AlexNet)."""
    from kdscope.models.base import BasicBlock

    return 6.0 if any(isinstance(m, BasicBlock) for m in model.modules()) else 7.0


@contextmanager
def layer_probe(model: nn.Module, layer: str) -> Iterator[LayerFn]:
    """``fn(x, delta) -> feature``: the output of ``layer`` for inputs ``x`` with ``delta``
    added in the perturbation space (None: clean). The forward pass stops at the layer; the
    model is in eval mode inside the block and gets its mode and hook-free state back after."""
    path = resolve_layer(model, layer)
    at = perturbation_path(model)
    state: dict[str, Tensor | None] = {}

    def add(_m: nn.Module, _inp: object, out: Tensor) -> Tensor:
        d = state.get("delta")
        return out if d is None else out + d.to(out.dtype)

    def grab(_m: nn.Module, _inp: object, out: Tensor) -> None:
        state["feature"] = out
        raise _Stop

    was = model.training
    model.eval()
    handles = []
    try:
        if at is not None:
            handles.append(get_module(model, at).register_forward_hook(add))
        handles.append(get_module(model, path).register_forward_hook(grab))

        dev = model_device(model)

        def run(x: Tensor, delta: Tensor | None) -> Tensor:
            home = x.device  # the feature comes back here (differentiably)
            x = x.to(dev)
            delta = None if delta is None else delta.to(dev)
            if at is None and delta is not None:
                x = x + delta.to(x.dtype)
            else:
                state["delta"] = delta
            try:
                model(x)
            except _Stop:
                pass
            finally:
                state["delta"] = None
            feature = state.pop("feature", None)
            if feature is None:
                raise KdscopeError(f"layer {layer!r} did not run in the forward pass")
            return feature.to(home)

        yield run
    finally:
        for h in handles:
            h.remove()
        model.train(was)


def perturbed_tensor(model: nn.Module, x: Tensor) -> Tensor:
    """The tensor noise is added to for inputs ``x`` (the normaliser's output, or ``x``)."""
    at = perturbation_path(model)
    if at is None:
        return x
    with torch.no_grad(), layer_probe(model, at) as fn:
        return fn(x, None)


def estimate(
    model: nn.Module,
    layer: str,
    inputs: Tensor,
    units: UnitMap,
    settings: EstimatorSettings | None = None,
    history: bool = False,
) -> Discarding:
    """Estimate σ and entropy maps of ``inputs`` (P, ...) at ``layer`` of ``model``.

    ``units`` maps the perturbed tensor's elements of each problem to units (one shared map or
    one per problem). ``reference`` mode processes the inputs one at a time; ``fast`` batches
    them; ``optimum`` minimises the relaxed objective. Deterministic for a given
    ``settings.seed``.
    """
    settings = settings or EstimatorSettings()
    p = inputs.shape[0]
    if units.problems not in (1, p):
        raise KdscopeError(f"unit map has {units.problems} problems, inputs {p}")
    lam = settings.lam if settings.lam is not None else default_lambda(model)
    scale = resolve_scale(model, inputs, settings)
    gen = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]), layer_probe(model, layer) as fn:
        if settings.mode == "reference":
            parts = []
            for i in range(p):
                um = units if units.problems == 1 else _rows(units, i, i + 1)
                parts.append(
                    _monte_carlo(fn, inputs[i : i + 1], um, settings, lam, scale, gen, history)
                )
            out = parts[0]
            for part in parts[1:]:
                out = out.cat(part)
            if history and p == 1:
                out.history_sigma, out.history_mean = parts[0].history_sigma, parts[0].history_mean
            return out
        if settings.mode == "optimum":
            return _optimum(fn, inputs, units, settings, lam, scale, gen)
        return _linearised(fn, inputs, units, settings, lam, scale, history)


def entropy_of(sigma: Tensor) -> Tensor:
    """H = log σ + ½ log(2πe) (natural log)."""
    return torch.log(sigma) + HALF_LOG_2PIE


def resolve_scale(model: nn.Module, inputs: Tensor, settings: EstimatorSettings) -> float:
    """The scale s: ``settings.scale`` if given; else the model's own
    ``perturbation_scale(inputs)`` if it declares one (text models: the RMS of the real tokens'
    embeddings); else 1 when noise is added after the model's normaliser, otherwise the
    per-element standard deviation of ``inputs``."""
    if settings.scale is not None:
        return settings.scale
    own = getattr(model, "perturbation_scale", None)
    if callable(own):
        return float(own(inputs))
    if perturbation_path(model) is not None:
        return 1.0
    return float(inputs.double().std()) or 1.0


def _rows(units: UnitMap, a: int, b: int) -> UnitMap:
    return replace(units, assignment=units.assignment[a:b])


def _phi(settings: EstimatorSettings) -> Callable[[Tensor], Tensor]:
    return torch.relu if settings.feature_transform == "relu" else (lambda t: t)


def _mean_entropy(sigma: Tensor, valid: Tensor) -> Tensor:
    h = entropy_of(sigma)
    return torch.where(valid, h, torch.zeros_like(h)).sum(1) / valid.sum(1).clamp_min(1)


def _distortion(
    fn: LayerFn,
    x: Tensor,
    clean: Tensor,
    units: UnitMap,
    sigma: Tensor,
    settings: EstimatorSettings,
    gen: torch.Generator,
) -> Tensor:
    """Monte Carlo E‖φ(f(x + σ⊙ε)) − φ(f(x))‖²_mean per problem, B = ``settings.samples``
    fresh samples each; σ (P, n) per unit, differentiable."""
    noise_scale = units.expand(sigma).float()
    samples, phi, chunk = settings.samples, _phi(settings), settings.chunk_rows
    p = x.shape[0]
    out = []
    per = max(1, chunk // samples)
    for a in range(0, p, per):
        b = min(p, a + per)
        eps = torch.randn((b - a, samples, *noise_scale.shape[1:]), generator=gen)
        delta = (noise_scale[a:b, None] * eps).flatten(0, 1)
        xs = x[a:b].repeat_interleave(samples, 0)
        feat = phi(fn(xs, delta)).reshape(b - a, samples, -1)
        ref = phi(clean[a:b]).reshape(b - a, 1, -1)
        out.append((feat - ref).pow(2).mean((1, 2)))
    return torch.cat(out)


def _constants(
    settings: EstimatorSettings, scale: float, valid: Tensor, lam: float
) -> tuple[float, float, float, Tensor, Tensor]:
    """(σ₀, σ_min, σ_max) in perturbation units, per-problem learning rate and λ."""
    n = valid.sum(1).double()
    lr = torch.full_like(n, settings.lr * scale**2)
    if settings.lr_unit_scaling:
        lr = lr * n / settings.reference_units
    return (
        settings.sigma_init * scale,
        settings.sigma_min * scale,
        settings.sigma_max * scale,
        lr,
        torch.full_like(n, lam),
    )


def _calibrated_sgd(
    grad: Callable[[Tensor, Tensor], Tensor],
    valid: Tensor,
    effective: Tensor,
    settings: EstimatorSettings,
    scale: float,
    lam: float,
    history: bool,
) -> dict[str, Tensor]:
    """The reference's SGD on σ with the stop-or-raise rule and snapshot selection, for P
    problems at once. ``grad(σ, λ)`` returns ∂Loss/∂σ (P, n) for the current σ."""
    s0, lo, hi, lr, lam_t = _constants(settings, scale, valid, lam)
    target = settings.target + math.log(scale)
    p, n = valid.shape
    sigma = torch.full((p, n), s0, dtype=torch.float64)
    running = effective.clone()
    sig_hist, mean_hist, done_hist = [], [], []
    for t in range(settings.max_steps):
        if t > 0 and not bool(running.any()):
            break
        sigma = sigma.clamp(lo, hi)
        sig_hist.append(sigma)
        mean_hist.append(_mean_entropy(sigma, valid))
        done_hist.append(running.clone())
        g = grad(sigma, lam_t)
        step = torch.where(running[:, None] & valid, lr[:, None] * g, torch.zeros_like(g))
        sigma = sigma - step
        if t == settings.check_step:
            crossed = (torch.stack(mean_hist) > target).any(0)
            running = running & ~crossed
            lam_t = torch.where(running, lam_t * settings.lam_raise, lam_t)
    means = torch.stack(mean_hist)  # (T, P)
    best, dist = select_snapshot(means, torch.stack(done_hist), target)
    sigmas = torch.stack(sig_hist)  # (T, P, n)
    chosen = sigmas[best, torch.arange(p)]
    out = {
        "sigma": chosen,
        "step": best,
        "mean_entropy": means[best, torch.arange(p)],
        "lam": lam_t,
        "calibrated": dist <= settings.calibration_tol,
    }
    if history:
        out["history_sigma"], out["history_mean"] = sigmas, means
    return out


def select_snapshot(means: Tensor, executed: Tensor, target: float) -> tuple[Tensor, Tensor]:
    """Index of the recorded step whose mean entropy is closest to ``target`` (first on ties)
    among the executed steps (T, P) of each problem, and that distance. Step 0 always counts."""
    executed = executed.clone()
    executed[0] = True
    dist = torch.where(executed, (means - target).abs(), torch.full_like(means, math.inf))
    best = dist.argmin(0)
    return best, dist[best, torch.arange(means.shape[1])]


def _finish(
    res: dict[str, Tensor],
    valid: Tensor,
    sigma_f: Tensor,
    effective: Tensor,
    scale: float,
    settings: EstimatorSettings,
) -> Discarding:
    sigma = torch.where(valid, res["sigma"], torch.full_like(res["sigma"], math.nan))
    nan = torch.full_like(res["mean_entropy"], math.nan)
    return Discarding(
        sigma=sigma,
        entropy=entropy_of(sigma),
        sigma_f=sigma_f,
        step=res["step"],
        mean_entropy=torch.where(effective, res["mean_entropy"], nan),
        lam=res["lam"],
        calibrated=res["calibrated"] & effective,
        effective=effective,
        valid=valid,
        scale=scale,
        settings=settings,
        history_sigma=res.get("history_sigma"),
        history_mean=res.get("history_mean"),
    )


def _mc_objective(
    fn: LayerFn,
    x: Tensor,
    units: UnitMap,
    sigma0: float,
    settings: EstimatorSettings,
    gen: torch.Generator,
) -> tuple[Tensor, Callable[[Tensor, Tensor | float], Tensor]]:
    """σ_f (the Monte Carlo distortion under uniform σ₀) and the relaxed loss per problem,
    loss(σ, λ) = D(σ) / σ_f − λ · mean H(σ), with fresh samples at every call (σ_f = 0, dead
    features, is replaced by 1 so that no NaN arises)."""
    valid = units.valid.expand(x.shape[0], -1)
    with torch.no_grad():
        clean = fn(x, None)
        uniform = torch.full((x.shape[0], units.n_units), sigma0, dtype=torch.float64)
        sigma_f = _distortion(fn, x, clean, units, uniform, settings, gen).double()
    safe_f = torch.where(sigma_f > 0, sigma_f, torch.ones_like(sigma_f))

    def loss(sigma: Tensor, lam: Tensor | float) -> Tensor:
        dist = _distortion(fn, x, clean, units, sigma, settings, gen).double()
        return dist / safe_f - lam * _mean_entropy(sigma, valid)

    return sigma_f, loss


def _monte_carlo(
    fn: LayerFn,
    x: Tensor,
    units: UnitMap,
    settings: EstimatorSettings,
    lam: float,
    scale: float,
    gen: torch.Generator,
    history: bool,
) -> Discarding:
    """The reference recipe for a few problems: Monte Carlo distortion, autograd gradient."""
    valid = units.valid.expand(x.shape[0], -1)
    sigma_f, loss = _mc_objective(fn, x, units, settings.sigma_init * scale, settings, gen)
    effective = sigma_f > 0

    def grad(sigma: Tensor, lam_t: Tensor) -> Tensor:
        s = sigma.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(s, lam_t).sum(), s)
        return g

    res = _calibrated_sgd(grad, valid, effective, settings, scale, lam, history)
    return _finish(res, valid, sigma_f, effective, scale, settings)


def unit_sensitivity(
    fn: LayerFn, x: Tensor, units: UnitMap, settings: EstimatorSettings
) -> tuple[Tensor, int]:
    """c_u = Σ_{j∈u} ‖J[:, j]‖² (P, n) of J = ∂φ(f)/∂(perturbation) at x, and M (feature size).

    With K = ``settings.projections`` ≥ M the identity basis gives c exactly; otherwise K
    random orthonormal directions scaled by √(M/K) give an unbiased estimate (E[vvᵀ] = I).
    """
    phi = _phi(settings)
    p = x.shape[0]
    delta0 = torch.zeros(p, *units.shape)
    with torch.no_grad():
        feat_shape = fn(x[:1], delta0[:1]).shape[1:]
    m = math.prod(feat_shape)
    k = min(settings.projections, m)
    gen = torch.Generator().manual_seed(settings.seed + 7919)
    if k == m:
        basis = torch.eye(m)
    else:
        q, _ = torch.linalg.qr(torch.randn(m, k, generator=gen))
        basis = q.T * math.sqrt(m / k)
    sens = torch.zeros(p, math.prod(units.shape), dtype=torch.float64)
    per = max(1, settings.chunk_rows // k)
    for a in range(0, p, per):
        b = min(p, a + per)
        g = _vjps(fn, phi, x[a:b], units, basis.view(k, 1, *feat_shape))
        sens[a:b] = g.double().pow(2).reshape(k, b - a, -1).sum(0)
    return units.unit_sums(sens), m


def _vjps(
    fn: LayerFn, phi: Callable[[Tensor], Tensor], x: Tensor, units: UnitMap, v: Tensor
) -> Tensor:
    """(K, P, *units) vector–Jacobian products vᵀ ∂φ(f)/∂(perturbation) at the inputs ``x``
    (P, ...) for the K directions ``v`` (K, 1, *feature), shared by every input: one forward
    pass of the P inputs, the K backward passes batched (``is_grads_batched``). A model whose
    operations torch cannot batch backward falls back to one forward pass per direction."""
    p, k = x.shape[0], v.shape[0]
    v = v.expand(k, p, *v.shape[2:])
    d = torch.zeros(p, *units.shape, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on ops it batches by a loop
            (g,) = torch.autograd.grad(phi(fn(x, d)), d, v, is_grads_batched=True)
        return g
    except RuntimeError:
        xs = x.repeat(k, *([1] * (x.dim() - 1)))
        d = torch.zeros(k * p, *units.shape, requires_grad=True)
        (g,) = torch.autograd.grad(phi(fn(xs, d)), d, v.reshape(k * p, *v.shape[2:]))
        return g.view(k, p, *units.shape)


def _linearised(
    fn: LayerFn,
    x: Tensor,
    units: UnitMap,
    settings: EstimatorSettings,
    lam: float,
    scale: float,
    history: bool,
) -> Discarding:
    """The ``fast`` mode: expected reference dynamics under the linearisation at x."""
    p = x.shape[0]
    valid = units.valid.expand(p, -1)
    c, m = unit_sensitivity(fn, x, units, settings)
    c = torch.where(valid, c, torch.zeros_like(c))
    total = c.sum(1)
    s0 = settings.sigma_init * scale
    sigma_f = s0**2 * total / m
    effective = total > 0
    a = c / (s0**2 * torch.where(effective, total, torch.ones_like(total)))[:, None]
    n = valid.sum(1, keepdim=True).double()

    def grad(sigma: Tensor, lam_t: Tensor) -> Tensor:
        return 2 * a * sigma - lam_t[:, None] / (n * sigma)

    res = _calibrated_sgd(grad, valid, effective, settings, scale, lam, history)
    out = _finish(res, valid, sigma_f, effective, scale, settings)
    out.extra["sensitivity"] = c
    return out


def _optimum(
    fn: LayerFn,
    x: Tensor,
    units: UnitMap,
    settings: EstimatorSettings,
    lam: float,
    scale: float,
    gen: torch.Generator,
) -> Discarding:
    """Minimise the relaxed objective at fixed λ: Adam on log σ, fresh samples every step,
    log σ averaged over the last quarter of the steps."""
    p = x.shape[0]
    valid = units.valid.expand(p, -1)
    s0, lo, hi, _, _ = _constants(settings, scale, valid, lam)
    sigma_f, loss_of = _mc_objective(fn, x, units, s0, settings, gen)
    effective = sigma_f > 0
    log_s = torch.full(valid.shape, math.log(s0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_s], lr=settings.optimum_lr)
    steps = settings.optimum_steps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    avg = torch.zeros_like(log_s)
    tail = max(1, steps // 4)
    for t in range(steps):
        sigma = log_s.clamp(math.log(lo), math.log(hi)).exp()
        opt.zero_grad()
        loss_of(sigma, lam).sum().backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            log_s.clamp_(math.log(lo), math.log(hi))
            if t >= steps - tail:
                avg += log_s / tail
    sigma = avg.exp()
    res = {
        "sigma": sigma,
        "step": torch.full((p,), steps, dtype=torch.long),
        "mean_entropy": _mean_entropy(sigma, valid),
        "lam": torch.full((p,), lam, dtype=torch.float64),
        "calibrated": torch.zeros(p, dtype=torch.bool),
    }
    return _finish(res, valid, sigma_f, effective, scale, settings)
