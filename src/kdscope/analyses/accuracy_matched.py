"""The accuracy-matched control (property-transfer spec §3.11): a distilled student that is no
more accurate than the independent one may still have inherited the teacher's vulnerability.

For each student whose method is in ``methods`` and whose mean accuracy beats its independent
student's by more than ``tolerance``, the distillation weight (the method's ``distill_weight``:
``kd``/``soft_label`` alpha, ``hint``/``crd`` beta) is multiplied by each of ``factors`` in turn; every seed is retrained
(under ``DIR/analyses/accuracy_matched/``) until the mean accuracy is within ``tolerance`` of the
independent student's or below it. The adversarial test is then rerun on that matched student:
the teacher's iterative-FGSM attacks at the ε the ``adversarial`` analysis calibrated, kept where
they fool the teacher; fooling-rate gap = matched student − independent, seed k against seed k,
input by input. Verdict: **still transfers** when the gap's interval lies above 0 (the paper's
lesson: no accuracy gain does not mean nothing transferred), **no transfer** otherwise,
**not matched** when no factor brought the accuracy down.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses import register_analysis
from kdscope.analyses.adversarial import source_attacks
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import correctness, paired, test_subset
from kdscope.config import StudentConfig
from kdscope.evaluation import predict_logits
from kdscope.methods import distillation_weight
from kdscope.property_transfer.attacks import predict_labels, transfer_rates
from kdscope.report import fmt_summary, table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from torch import nn

    from kdscope.study import Group, StudyResult


@register_analysis
class AccuracyMatchedAnalysis(Analysis):
    name = "accuracy_matched"
    title = "Accuracy-matched control: lower distillation weight, same vulnerability?"
    requires = ("adversarial",)

    def __init__(
        self,
        methods: tuple[str, ...] = ("kd",),
        factors: tuple[float, ...] = (0.5, 0.25, 0.1),
        tolerance: float = 0.005,
        n_inputs: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from kdscope.methods import METHODS

        weighted = [m for m in METHODS.names() if METHODS.get(m).distill_weight is not None]
        if set(methods) - set(weighted):
            raise ValueError(f"methods must be among {', '.join(weighted)}")
        if not factors or any(not 0 < f < 1 for f in factors):
            raise ValueError("factors must be in (0, 1)")
        self.methods, self.factors, self.tolerance = tuple(methods), tuple(factors), tolerance
        self.n_inputs, self.seed = n_inputs, seed

    def applies_to(self, study: StudyResult) -> str | None:
        if not any(g.method in self.methods for g in study.by_role("student")):
            return f"no student uses {', '.join(self.methods)}"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        eps = float(study.results["adversarial"]["calibration"]["eps"])
        idx = test_subset(study, self.n_inputs, self.seed + 1)
        x, y = study.data.test.inputs[idx], study.data.test.labels[idx]
        adv, fooled_t, adv_pred = source_attacks(study.teacher_model, x, y, eps)
        out: dict[str, Any] = {"eps": eps, "n_inputs": len(idx), "n_kept": int(fooled_t.sum())}

        def fooling(model: nn.Module) -> np.ndarray:
            r = transfer_rates(
                fooled_t, predict_labels(model, x), predict_labels(model, adv), adv_pred
            )
            return r["fooled"]

        students: dict[str, Any] = {}
        for g in study.by_role("student"):
            if g.method not in self.methods or g.baseline is None:
                continue
            ind_acc = correctness(study, g.baseline)
            ind_mean = float(np.mean([v.mean() for v in ind_acc.values()]))
            acc = correctness(study, g.name)
            key, weight = distillation_weight(g.method, g.method_params)
            entry: dict[str, Any] = {
                "independent": g.baseline,
                "weight": key,
                "original_weight": weight,
                "independent_accuracy": ind_mean,
                "original_accuracy": float(np.mean([v.mean() for v in acc.values()])),
                "tried": [],
            }
            models: dict[int, nn.Module] = {}
            if entry["original_accuracy"] <= ind_mean + self.tolerance:
                entry["tried"].append({"factor": 1.0, "accuracy": entry["original_accuracy"]})
                models = {s: run.load() for s, run in g.runs.items()}
            for factor in self.factors if not models else ():
                models = self._train(study, g, factor)
                test = study.data.test
                acc = {
                    s: (predict_logits(m, test).argmax(1) == test.labels).numpy().astype(float)
                    for s, m in models.items()
                }
                mean = float(np.mean([v.mean() for v in acc.values()]))
                entry["tried"].append({"factor": factor, "accuracy": mean})
                if mean <= ind_mean + self.tolerance:
                    break
            last = entry["tried"][-1]
            entry["matched"] = last["accuracy"] <= ind_mean + self.tolerance
            entry["accuracy_gap"] = summarise(paired(acc, ind_acc))
            ind_fool = {s: fooling(run.load()) for s, run in study.groups[g.baseline].runs.items()}
            gap = summarise(paired({s: fooling(m) for s, m in models.items()}, ind_fool))
            entry["fooling_gap"] = gap
            entry["verdict"] = (
                "not matched"
                if not entry["matched"]
                else ("still transfers" if gap["ci95"][0] > 0 else "no transfer")
            )
            students[g.name] = entry
        out["students"] = students
        return out

    def _train(self, study: StudyResult, g: Group, factor: float) -> dict[int, nn.Module]:
        from kdscope.study import train_variant

        key, weight = distillation_weight(g.method, g.method_params)
        params = {**g.method_params, key: weight * factor}
        spec = StudentConfig(method=g.method, name=f"{g.name}-x{factor:g}", **params)
        root = study.out_dir / "analyses" / "accuracy_matched" / f"{g.name}_x{factor:g}"
        return {
            seed: train_variant(
                study, spec, g.train, seed, root / f"seed{seed}", study.teacher_model, g.model
            )
            for seed in sorted(g.runs)
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = []
        for name, s in result["students"].items():
            tried = ", ".join(f"×{t['factor']:g}: {t['accuracy']:.3f}" for t in s["tried"])
            rows.append(
                [
                    html.escape(name),
                    f"{s['weight']} = {s['original_weight']:g}",
                    f"{s['original_accuracy']:.3f} vs {s['independent_accuracy']:.3f}",
                    tried,
                    fmt_summary(s["accuracy_gap"], sign=True),
                    fmt_summary(s["fooling_gap"], sign=True),
                    f"<b>{s['verdict']}</b>",
                ]
            )
        return "\n".join(
            [
                f"<p>Distillation weights lowered until a student's mean accuracy is within "
                f"{self.tolerance:.3f} of the independent student's; then the teacher's attacks "
                f"(ε = {result['eps']:.4f}, {result['n_kept']} of {result['n_inputs']} inputs "
                "fool the teacher) are replayed. Gaps: matched student − independent, seed k "
                "against seed k.</p>",
                table(
                    [
                        "student",
                        "weight",
                        "accuracy (original vs independent)",
                        "accuracy per factor",
                        "accuracy gap (matched)",
                        "fooling gap (matched)",
                        "verdict",
                    ],
                    rows,
                ),
            ]
        )
