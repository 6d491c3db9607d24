"""Instance-specific knowledge: the gradient rescaling factor against the teacher's confidence
(Tang et al. 2020; docs/three_levels.md).

For a student trained on the soft-target loss L(q) = a H(e_g, p) + b τ² H(q, p^τ), the logit
gradient of one example is ∇_z L = a (p − e_g) + b τ (p^τ − q) and the plain cross-entropy
gradient has L1 norm ‖p − e_g‖₁ = 2 (1 − p_g). The rescaling factor

    w(x) = ‖∇_z L‖₁ / (2 (1 − p_g)),        w_g(x) = [∂L/∂z_g] / (p_g − 1)

tells how much of its hard-label gradient an example keeps. The paper's claim: w grows with the
teacher's ground-truth confidence ρ¹_g (easy examples keep more, hard ones are down-weighted),
most clearly early in training. Protocol: every soft-target student's checkpoints nearest
to 0, 10, 25, 50 and 100 % of training, evaluated on its training data in eval mode without
augmentation; per checkpoint the Pearson and Spearman correlations of w and w_g with ρ¹_g, a
decile curve, and the fraction of examples where the closed form w = w_g fails (the student is
sharper than b·q on some wrong class). With ``counterfactual``, the CE baseline's checkpoints
are scored with the KD target too: the rescaling KD *would* apply to a student that never saw
it. Spearman correlations rank-transform each seed's values once and take the Pearson
correlation of the ranks; intervals are t intervals over the per-seed correlations.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    bound_method,
    has_role,
    soft_target_groups,
    teacher_logits,
)
from kdscope.correlation import average_ranks, rank_residual, spearman
from kdscope.methods.controlled_targets import SoftTargets
from kdscope.render import figure_html, fmt_summary, plt, table
from kdscope.stats import pearson_statistic, summarise
from kdscope.teacher_knowledge.rescaling import (
    decile_curve,
    rescaling_factors,
    softmax,
)

if TYPE_CHECKING:
    from kdscope.study import Group, StudyResult

FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)


def nearest_checkpoints(
    available: list[int], epochs: int, fractions: tuple[float, ...]
) -> list[int]:
    """The distinct available checkpoint epochs nearest to each fraction of ``epochs``."""
    return sorted({min(available, key=lambda e: (abs(e - f * epochs), e)) for f in fractions})


def _correlations(
    rho_g: dict[int, np.ndarray], w: dict[int, np.ndarray], p_g: dict[int, np.ndarray]
) -> dict[str, Any]:
    """Pearson, Spearman and partial Spearman (given the student's own p_g) of w with rho_g per
    seed, mean and t interval over seeds (inputs differ by seed); examples with an undefined w (p_g = 1) are left out.

    The partial correlation answers the paper's statement "at equal student confidence": a
    student that fits the teacher's easy examples first has p_g, hence w, tracking rho_g even
    under a target with no per-example weighting."""
    keep = {s: np.isfinite(w[s]) for s in w}
    pearson = {s: np.stack([rho_g[s][keep[s]], w[s][keep[s]]], 1) for s in w}
    ranked = {
        s: np.stack([average_ranks(v[:, 0]), average_ranks(v[:, 1])], 1) for s, v in pearson.items()
    }
    partial = {
        s: np.stack(
            [rank_residual(v[:, 0], p_g[s][keep[s]]), rank_residual(v[:, 1], p_g[s][keep[s]])], 1
        )
        for s, v in pearson.items()
    }
    out = {
        "pearson": summarise(pearson, statistic=pearson_statistic),
        "spearman": summarise(ranked, statistic=pearson_statistic),
        "partial_spearman": summarise(partial, statistic=pearson_statistic),
    }
    out["spearman"]["per_seed"] = {
        str(s): spearman(v[:, 0], v[:, 1]) for s, v in sorted(pearson.items())
    }
    return out


@register_analysis
class RescalingAnalysis(Analysis):
    """Instance-specific knowledge: the gradient rescaling w(x) = ‖∇_z L(q)‖₁ / 2(1 − p_g) a soft
    target applies to each training input at checkpoints across training, correlated (Pearson,
    Spearman) with the teacher's confidence in the true class; the cross-entropy baseline scored
    with KD's target as a counterfactual (docs/three_levels.md).
    """

    name = "rescaling"
    title = "Instance-specific knowledge: gradient rescaling by the teacher's confidence"

    def __init__(self, fractions: tuple[float, ...] = FRACTIONS, counterfactual: bool = True):
        super().__init__()
        if not fractions or any(not 0 <= f <= 1 for f in fractions):
            raise ValueError("fractions must be a non-empty list of numbers in [0, 1]")
        self.fractions = tuple(fractions)
        self.counterfactual = counterfactual

    def applies_to(self, study: StudyResult) -> str | None:
        if not soft_target_groups(study):
            return (
                "no student trains on a soft target (kd, kd_pt, kd_sim, kd_topk, ls_matched, ...)"
            )
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        labels = study.student_data.train.labels
        v = teacher_logits(study, "train")
        rho1 = softmax(v)
        rho_g = rho1[np.arange(len(labels)), labels.numpy()]
        students = {g.name: self._group(study, g, g, v, rho_g) for g in soft_target_groups(study)}
        counterfactual = {}
        if self.counterfactual:
            for g in soft_target_groups(study):
                if has_role(g, "logit_kd") and g.baseline in study.groups:
                    base = study.groups[g.baseline]
                    counterfactual[f"{g.baseline} scored with {g.name}'s target"] = self._group(
                        study, base, g, v, rho_g
                    )
        return {
            "n_train": len(labels),
            "fractions": list(self.fractions),
            "teacher_confidence": _quantiles(rho_g),
            "difficulty": _difficulty(study, rho_g),
            "students": students,
            "counterfactual": counterfactual,
        }

    def _group(
        self, study: StudyResult, scored: Group, target: Group, v: np.ndarray, rho_g: np.ndarray
    ) -> dict[str, Any]:
        """Rescaling of ``scored``'s checkpoints under ``target``'s soft-target loss."""
        labels = study.student_data.train.labels
        y = labels.numpy()
        seeds = sorted(set(scored.runs) & set(target.runs))
        run = scored.runs[seeds[0]]
        epochs = nearest_checkpoints(
            list(run.plan.checkpoints), run.plan.train.epochs, self.fractions
        )
        method = bound_method(study, target, seeds[0])
        assert isinstance(method, SoftTargets)
        q = method.soft_target(torch.from_numpy(v).float(), labels).double().numpy()
        out: dict[str, Any] = {
            "method": target.method,
            "tau": method.tau,
            "ce_weight": method.ce_weight,
            "soft_weight": method.soft_weight,
            "checkpoints": {},
        }
        for epoch in epochs:
            w: dict[int, np.ndarray] = {}
            wg: dict[int, np.ndarray] = {}
            pg: dict[int, np.ndarray] = {}
            fails: dict[str, float] = {}
            curves = []
            for seed in seeds:
                z = study.logits(scored.name, seed, "train", epoch).double().numpy()
                r = rescaling_factors(z, q, y, method.tau, method.ce_weight, method.soft_weight)
                w[seed], wg[seed], pg[seed] = r.w, r.w_g, r.p_g
                fails[str(seed)] = float(1 - np.mean(r.condition))
                curves.append(decile_curve(rho_g[np.isfinite(r.w)], r.w[np.isfinite(r.w)]))
            rho = dict.fromkeys(seeds, rho_g)
            out["checkpoints"][str(epoch)] = {
                "w": _correlations(rho, w, pg),
                "w_g": _correlations(rho, wg, pg),
                "median_w": float(np.nanmedian(np.concatenate(list(w.values())))),
                "condition_fails": fails,
                "deciles": _mean_curve(curves),
            }
        return out

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        tc = result["teacher_confidence"]
        parts = [
            f"<p>On the students' {result['n_train']} training inputs (eval mode, no "
            "augmentation). x: the teacher's ground-truth probability ρ¹_g (quantiles 10/50/90 %: "
            f"{tc['q10']:.3f} / {tc['q50']:.3f} / {tc['q90']:.3f}); y: the exact L1 rescaling "
            "factor w and the ground-truth component ratio w_g at the student's own τ and "
            "weights. Correlations: mean over seeds [95 % t interval over seeds]. The "
            "paper expects a positive correlation, strongest early in training. w is heavy-"
            "tailed: once the student fits an example (p_g → 1) its hard-label gradient vanishes "
            "while the soft one need not, so tables and figures give the median w (per decile "
            "of ρ¹_g, log scale). The partial Spearman correlation holds the student's own "
            "confidence p_g fixed (ranks residualised on p_g's ranks): a student that fits the "
            "teacher's easy examples first shows a plain correlation even under a target with "
            "no per-example weighting (compare the label-smoothing controls).</p>"
        ]
        d = result["difficulty"]
        if d is not None:
            parts.append(
                "<p>The dataset plants each example's difficulty a (the fraction of the way to "
                f"a sibling class): Spearman(ρ¹_g, −a) = {d['spearman']:+.3f} on the training "
                "inputs, so the teacher's confidence "
                + ("tracks" if d["spearman"] > 0.1 else "barely tracks")
                + " the true difficulty.</p>"
            )
        for title, groups in [
            ("Students", result["students"]),
            ("Counterfactual", result["counterfactual"]),
        ]:
            if not groups:
                continue
            rows = []
            for name, g in groups.items():
                for epoch, c in g["checkpoints"].items():
                    fails = np.mean(list(c["condition_fails"].values()))
                    rows.append(
                        [html.escape(name), epoch, f"{c['median_w']:.3f}"]
                        + [
                            fmt_summary(c[k][m], sign=True)
                            for k in ("w", "w_g")
                            for m in ("pearson", "spearman", "partial_spearman")
                        ]
                        + [f"{fails:.1%}"]
                    )
            parts.append(f"<h3>{title}</h3>")
            parts.append(
                table(
                    [
                        "student",
                        "epoch",
                        "median w",
                        "Pearson(w, ρ_g)",
                        "Spearman(w, ρ_g)",
                        "partial Spearman(w, ρ_g | p_g)",
                        "Pearson(w_g, ρ_g)",
                        "Spearman(w_g, ρ_g)",
                        "partial Spearman(w_g, ρ_g | p_g)",
                        "closed form fails",
                    ],
                    rows,
                )
            )
        parts.append(_figure({**result["students"], **result["counterfactual"]}))
        return "\n".join(parts)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    q = np.quantile(x, [0.1, 0.5, 0.9])
    return {"q10": float(q[0]), "q50": float(q[1]), "q90": float(q[2]), "mean": float(x.mean())}


def _difficulty(study: StudyResult, rho_g: np.ndarray) -> dict[str, float] | None:
    a = study.student_data.train.tags.get("difficulty")
    if a is None or float(a.std()) == 0:
        return None
    return {"spearman": spearman(rho_g, -a.double().numpy())}


def _mean_curve(curves: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Seed-averaged decile curve (the teacher, hence the bins, is the same for every seed)."""
    n = min(len(c["x"]) for c in curves)
    return {
        k: [float(np.mean([c[k][i] for c in curves])) for i in range(n)]
        for k in ("x", "y", "median")
    }


def _figure(groups: dict[str, Any]) -> str:
    if not groups:
        return ""
    n = len(groups)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, g) in zip(axes.flat, groups.items(), strict=False):
        for i, (epoch, c) in enumerate(g["checkpoints"].items()):
            ax.plot(
                c["deciles"]["x"],
                c["deciles"]["median"],
                marker="o",
                ms=3,
                color=f"C{i}",
                label=f"epoch {epoch}",
            )
        ax.set(title=name, xlabel="teacher ρ¹_g (decile mean)", ylabel="median w (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return figure_html(fig, "rescaling factor against teacher confidence")
