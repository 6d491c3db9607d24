"""Adversarial vulnerability transfer (property-transfer spec §3.2): do inputs crafted to fool the
teacher also fool the distilled students more often than the independent student?

Iterative FGSM on the teacher (5 steps of a = ε/4 under L∞, pixels kept in [0, 1], true label),
with ε calibrated by bisection on ``calibration`` test inputs so that the teacher is fooled on
85 % ± 2 % of them; then the evaluation inputs (other test inputs) are attacked at ε and at
ε × each ``eps_factors``, and only those that fool the teacher are kept. Per model and seed: the
fooling rate (its prediction on the attack differs from its clean prediction) and the
same-wrong-class rate (it predicts the teacher's adversarial class). Comparisons, paired input by
input on the same attacks: distilled − independent (seed k against seed k), and the control
independent − independent' (different seeds). With ``foreign`` a model of another architecture
(a model name or ``{name, ...parameters}``; CE only, the teacher's recipe) is trained as the
source of a second set of attacks: a teacher-specific vulnerability shows a gap on the
teacher's attacks and none on the foreign ones. Verdict: the rule of
:func:`kdscope.analyses.study_views.transfer_verdict` with the foreign-source gap as control
(**confounded** when it lies above 0 with at least half the teacher-source effect).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import paired, seed_pairs, test_subset, transfer_verdict
from kdscope.config import ModelConfig, StudentConfig
from kdscope.property_transfer.attacks import calibrate_eps, ifgsm, predict_labels, transfer_rates
from kdscope.report import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def source_attacks(
    source: nn.Module, x: Tensor, y: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Attacks on ``source`` at ``eps``: (adversarial inputs, source fooled, source's
    adversarial predictions)."""
    adv = ifgsm(source, x, y, eps)
    clean, adv_pred = predict_labels(source, x), predict_labels(source, adv)
    return adv, clean != adv_pred, adv_pred


def group_rates(
    study: StudyResult, x: Tensor, adv: Tensor, src_fooled: Tensor, src_adv: Tensor
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Per model group and seed: per-input fooled / same-class indicators on the kept inputs."""
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for g in study.groups.values():
        if g.role == "teacher":
            continue
        out[g.name] = {}
        for seed, run in sorted(g.runs.items()):
            model = run.load()
            r = transfer_rates(
                src_fooled, predict_labels(model, x), predict_labels(model, adv), src_adv
            )
            out[g.name][seed] = {"fooled": r["fooled"], "same_class": r["same_class"]}
    return out


def summarise_source(
    study: StudyResult, rates: dict[str, dict[int, dict[str, np.ndarray]]]
) -> dict[str, Any]:
    """Rates per group, distilled − independent per student, and the Ind − Ind' control."""
    groups = {
        name: {k: summarise({s: v[k] for s, v in per.items()}) for k in ("fooled", "same_class")}
        for name, per in rates.items()
    }
    gaps, controls = {}, {}
    for g in study.by_role("student"):
        ind = rates[g.baseline]
        gaps[g.name] = {
            k: summarise(
                paired(
                    {s: v[k] for s, v in rates[g.name].items()}, {s: v[k] for s, v in ind.items()}
                )
            )
            for k in ("fooled", "same_class")
        }
        if g.baseline not in controls:
            pairs = seed_pairs(sorted(ind), sorted(ind), distinct=True)
            diffs = {n: ind[i]["fooled"] - ind[j]["fooled"] for n, (i, j) in enumerate(pairs)}
            controls[g.baseline] = summarise(diffs) if diffs else None
    return {"groups": groups, "gaps": gaps, "controls": controls}


@register_analysis
class AdversarialAnalysis(Analysis):
    name = "adversarial"
    title = "Adversarial vulnerability: do the teacher's attacks fool the students?"

    def __init__(
        self,
        n_inputs: int = 1000,
        calibration: int = 256,
        target_rate: float = 0.85,
        eps_factors: tuple[float, ...] = (0.5, 2.0),
        foreign: str | dict[str, Any] | None = "vgg_small",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_inputs < 1 or calibration < 1 or not 0 < target_rate < 1:
            raise ValueError("n_inputs and calibration must be >= 1, target_rate in (0, 1)")
        self.n_inputs, self.calibration, self.target_rate = n_inputs, calibration, target_rate
        self.eps_factors, self.foreign, self.seed = tuple(eps_factors), foreign, seed

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.test.modality != "image":
            return f"the attack works in pixel space; the data are {study.data.test.modality}"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        idx = test_subset(study, self.n_inputs + self.calibration, self.seed)
        perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(self.seed))
        n_cal = min(self.calibration, len(idx) // 2)  # a small test split is shared half/half
        cal, ev = idx[perm[:n_cal]], idx[perm[n_cal:]]
        test = study.data.test
        teacher = study.teacher_model
        cal_result = calibrate_eps(teacher, test.inputs[cal], test.labels[cal], self.target_rate)
        eps = float(cal_result["eps"])
        x, y = test.inputs[ev], test.labels[ev]
        sources: dict[str, Any] = {}
        for factor in (1.0, *self.eps_factors):
            adv, fooled_t, adv_pred = source_attacks(teacher, x, y, eps * factor)
            rates = group_rates(study, x, adv, fooled_t, adv_pred)
            sources[f"teacher, ε×{factor:g}"] = {
                "eps": eps * factor,
                "source_rate": float(fooled_t.float().mean()),
                "n_kept": int(fooled_t.sum()),
                **summarise_source(study, rates),
            }
        foreign = None
        if self.foreign is not None:
            foreign = self._foreign_model(study)
            adv, fooled_f, adv_pred = source_attacks(foreign, x, y, eps)
            rates = group_rates(study, x, adv, fooled_f, adv_pred)
            sources["foreign, ε×1"] = {
                "eps": eps,
                "source_rate": float(fooled_f.float().mean()),
                "n_kept": int(fooled_f.sum()),
                **summarise_source(study, rates),
            }
        main = sources["teacher, ε×1"]
        verdicts = {
            name: transfer_verdict(
                gap["fooled"],
                sources["foreign, ε×1"]["gaps"][name]["fooled"] if foreign is not None else None,
            )
            for name, gap in main["gaps"].items()
        }
        return {
            "n_inputs": len(ev),
            "calibration": {k: v for k, v in cal_result.items() if k != "history"},
            "foreign_model": (
                None if self.foreign is None else ModelConfig.model_validate(self.foreign).label()
            ),
            "sources": sources,
            "verdicts": verdicts,
        }

    def _foreign_model(self, study: StudyResult) -> nn.Module:
        from kdscope.study import train_variant

        model = ModelConfig.model_validate(self.foreign)
        spec = StudentConfig(method="ce", name="foreign", model=model)
        suffix = "".join(f"_{k}{v}" for k, v in sorted(model.params.items()))
        root = study.out_dir / "analyses" / "adversarial" / f"foreign_{model.name}{suffix}"
        return train_variant(
            study, spec, study.config.teacher.train, study.config.teacher_seed, root, None
        )

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        c = result["calibration"]
        parts = [
            f"<p>Iterative FGSM (5 steps, a = ε/4, L∞, pixels in [0, 1], true labels) on the "
            f"teacher; ε = {c['eps']:.4f} calibrated on held-out test inputs to a teacher fooling "
            f"rate of {c['rate']:.1%} ({'converged' if c['converged'] else 'not converged'}). "
            f"{result['n_inputs']} evaluation inputs; only attacks that fool the source are kept. "
            "Fooling rate: the model's prediction changes; same class: it predicts the source's "
            "adversarial class. Gaps are paired input by input, seed k against seed k; mean "
            "[95 % hierarchical-bootstrap interval].</p>"
        ]
        for name, src in result["sources"].items():
            rows = [
                [html.escape(g), fmt_summary(r["fooled"]), fmt_summary(r["same_class"])]
                for g, r in src["groups"].items()
            ]
            gap_rows = [
                [
                    html.escape(g),
                    fmt_summary(r["fooled"], sign=True),
                    fmt_summary(r["same_class"], sign=True),
                ]
                + ([f"<b>{result['verdicts'][g]}</b>"] if name == "teacher, ε×1" else [])
                for g, r in src["gaps"].items()
            ]
            ctrl = "; ".join(
                f"{html.escape(k)} − {html.escape(k)}': "
                + (fmt_summary(v, sign=True) if v else "one seed")
                for k, v in src["controls"].items()
            )
            parts += [
                f"<h3>Source: {html.escape(name)} (ε = {src['eps']:.4f}; source fooled on "
                f"{src['source_rate']:.1%}, {src['n_kept']} kept)</h3>",
                table(["model", "fooling rate", "same wrong class"], rows),
                table(
                    ["student", "fooling gap vs independent", "same-class gap"]
                    + (["verdict"] if name == "teacher, ε×1" else []),
                    gap_rows,
                ),
                f"<p>Control (independent seeds): {ctrl}.</p>",
            ]
        parts.append(_figure(result))
        return "\n".join(parts)


def _figure(result: dict[str, Any]) -> str:
    sources = result["sources"]
    names = list(next(iter(sources.values()))["groups"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.6))
    width = 0.8 / len(sources)
    for i, (src, s) in enumerate(sources.items()):
        means = [s["groups"][n]["fooled"]["mean"] for n in names]
        ax.bar(
            np.arange(len(names)) + (i - len(sources) / 2 + 0.5) * width, means, width, label=src
        )
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set(ylabel="fooling rate on kept attacks", title="Transfer of the source's attacks")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, "adversarial fooling rates")
