"""Invariance transfer (Ojha et al. 2023, invariances): does a student become invariant to a
transformation its teacher was trained with, although it never saw the transformation itself?

For each transform (``colour`` jitter, random ``crop``s, ``shift``s) and strength, every model
predicts on the same transformed pairs (:mod:`kdscope.property_transfer.invariance`); its
agreement is the fraction of pairs with equal predictions. Per student: agreement − its
independent student's, seed k against seed k, paired input by input. Controls: with
``control_teacher`` a teacher T* is trained with the teacher's recipe minus the augmentations
the students do not use, and each student whose method is in ``control_methods`` is distilled
from T* the same way (S*, under ``DIR/analyses/invariance/``): a gain that S* keeps is generic
regularisation, not the teacher's invariance: the student's effect beyond it is S − S*
(agreement, paired by seed and input). The study's soft-label students (method ``soft_label``)
are a second control (S − soft-label). Verdict per student at the headline strength of each
transform: the rule of :func:`kdscope.verdicts.transfer` over both controls (equivalence margin
``margin``), with the paper's premise stated.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    PerSeed,
    control_differences,
    control_students,
    paired,
    per_group,
    premise,
    student_gaps,
    test_subset,
    transfer_record,
)
from kdscope.config import StudentConfig
from kdscope.property_transfer.invariance import HEADLINE, STRENGTHS, agreement, transformed_pair
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise
from kdscope.study import Variant, train_variants

if TYPE_CHECKING:
    from torch import Tensor

    from kdscope.study import StudyResult

STAR = "*"  # suffix of the models distilled from the control teacher T*


@register_analysis
class InvarianceAnalysis(Analysis):
    """Whether students inherit the teacher's augmentation invariances: agreement of each model's
    predictions on pairs of transformed test inputs (colour jitter, crops, shifts), against the
    independent student, a teacher trained without those augmentations (T*, distilled the same
    way) and the soft-label control (docs/property_transfer.md).
    """

    name = "invariance"
    trains = (
        "the control teacher T* (the teacher's architecture and recipe without the augmentations "
        "the students lack) and its students (the students' recipe)"
    )
    title = "Invariance: do students inherit the teacher's augmentation invariances?"

    def __init__(
        self,
        transforms: tuple[str, ...] = ("colour", "crop", "shift"),
        n_inputs: int = 1000,
        control_teacher: bool = True,
        control_methods: tuple[str, ...] = ("kd",),
        margin: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = set(transforms) - set(STRENGTHS)
        if unknown or not transforms:
            raise ValueError(
                f"transforms must be among {', '.join(STRENGTHS)}; got {', '.join(transforms)}"
            )
        if n_inputs < 1 or not margin > 0:
            raise ValueError("n_inputs must be >= 1 and margin > 0")
        self.transforms, self.n_inputs, self.seed = tuple(transforms), n_inputs, seed
        self.margin = margin
        self.control_teacher, self.control_methods = control_teacher, tuple(control_methods)

    def applies_to(self, study: StudyResult) -> str | None:
        data = study.data.test
        if data.modality != "image" or data.inputs.dim() != 4 or data.inputs.shape[1] != 3:
            return f"the transforms act on RGB images; the data are {data.modality}"
        if self.control_teacher and study.config.teacher.model is None:
            return (
                "the T* control retrains the teacher's architecture, which a TorchScript teacher "
                "does not give (set control_teacher: false, or give the teacher as a checkpoint "
                "with its model)"
            )
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        x = study.data.test.inputs_at(test_subset(study, self.n_inputs, self.seed))
        star = self._control_models(study) if self.control_teacher else {}
        teacher_aug = list(study.config.teacher.train.augment)
        student_aug = list(study.config.student.train.augment)
        out: dict[str, Any] = {
            "n_inputs": len(x),
            "teacher_augment": teacher_aug,
            "student_augment": student_aug,
            "control_teacher": bool(star),
            "transforms": {},
            "margin": self.margin,
            "verdicts": {},
        }
        premises = premise(study)
        out["premise"] = {n: p["status"] for n, p in premises.items()}
        for transform in self.transforms:
            sweep, values = {}, {}
            for strength in STRENGTHS[transform]:
                x1, x2 = transformed_pair(x, transform, strength, self.seed)
                sweep[str(strength)], values[str(strength)] = self._measure(study, star, x1, x2)
            out["transforms"][transform] = {
                "headline": str(HEADLINE[transform]),
                "teacher_trained_on_it": transform in teacher_aug,
                "strengths": sweep,
            }
            at = values[str(HEADLINE[transform])]
            out["verdicts"][f"{transform} invariance"] = self._verdicts(study, at, premises)
        return out

    def _measure(
        self, study: StudyResult, star: dict[str, Any], x1: Tensor, x2: Tensor
    ) -> tuple[dict[str, Any], dict[str, PerSeed]]:
        """Agreement of every model on the pairs, the students' gaps and the S* gaps; and the
        per-input agreements behind them (S* under the student's name + ``*``)."""

        def measure(model: nn.Module) -> np.ndarray:
            return agreement(model, x1, x2)

        values = per_group(study, measure)
        res: dict[str, Any] = {
            "teacher": float(measure(study.teacher_model).mean()),
            "groups": {n: summarise(v, shared_inputs=True) for n, v in values.items()},
            "gaps": student_gaps(study, values),
        }
        if star:
            res["teacher_star"] = float(measure(star["teacher"]).mean())
            res["star_gaps"] = {}
            for name, (baseline, models) in star["students"].items():
                v = {s: measure(m) for s, m in models.items()}
                values[name + STAR] = v
                res["groups"][name + STAR] = summarise(v, shared_inputs=True)
                res["star_gaps"][name] = summarise(paired(v, values[baseline]), shared_inputs=True)
        return res, values

    def _verdicts(
        self, study: StudyResult, values: dict[str, PerSeed], premises: dict[str, Any]
    ) -> dict[str, Any]:
        """Per distilled student: its agreement gap and its effect beyond S* (when trained)
        and beyond every soft-label control."""
        controls = control_students(study)
        out = {}
        for name, gap in student_gaps(study, values).items():
            if name in controls:
                continue
            beyond = control_differences(values, name, controls)
            if name + STAR in values:
                beyond[name + STAR] = summarise(
                    paired(values[name], values[name + STAR]), shared_inputs=True
                )
            out[name] = transfer_record(
                study, name, gap, beyond, self.margin, premises[name]["status"]
            )
        return out

    def _control_models(self, study: StudyResult) -> dict[str, Any]:
        """T* (the teacher's recipe without the students' missing augmentations) and the S*
        students distilled from it, trained or resumed under ``DIR/analyses/invariance``."""
        cfg = study.config
        kept = tuple(a for a in cfg.teacher.train.augment if a in cfg.student.train.augment)
        recipe = cfg.teacher.train.model_copy(update={"augment": kept})
        root = study.out_dir / "analyses" / "invariance"
        spec = StudentConfig(method="ce", name="teacher" + STAR, model=cfg.teacher.model)
        (teacher,) = train_variants(
            study, [Variant(spec, recipe, cfg.teacher_seed, root / "teacher_star")], self.quiet
        )
        controlled = [g for g in study.by_role("student") if g.method in self.control_methods]
        variants = [
            Variant(
                StudentConfig(method=g.method, name=g.name + STAR, **g.method_params),
                g.train,
                seed,
                root / f"{g.name}_star" / f"seed{seed}",
                teacher,
                g.model,
            )
            for g in controlled
            for seed in sorted(g.runs)
        ]
        runs = iter(train_variants(study, variants, self.quiet))
        students: dict[str, tuple[str, dict[int, nn.Module]]] = {
            g.name: (g.baseline or "", {seed: next(runs).load() for seed in sorted(g.runs)})
            for g in controlled
        }
        return {"teacher": teacher.load(), "students": students}

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        parts = [
            f"<p>Agreement of each model's predictions on {result['n_inputs']} test inputs and "
            "their transformed versions (the same transformed inputs for every model). The "
            f"teacher trained with augmentations {result['teacher_augment'] or 'none'}, the "
            f"students with {result['student_augment'] or 'none'}. Gaps: student − independent "
            "student, seed k against seed k, input by input, mean [95 % t interval over seeds × "
            "inputs]. "
            + (
                "Control T*: a teacher trained without the students' missing augmentations, "
                "distilled the same way (S*)."
                if result["control_teacher"]
                else "No T* control was trained."
            )
            + "</p>"
        ]
        for transform, res in result["transforms"].items():
            parts.append(f"<h3>{transform} (headline strength {res['headline']})</h3>")
            if not res["teacher_trained_on_it"]:
                parts.append(
                    "<p class='note'>The teacher did not train with this transform: no transfer "
                    "is expected beyond generic effects.</p>"
                )
            strengths = list(res["strengths"])
            names = list(res["strengths"][strengths[0]]["groups"])
            rows = [["teacher"] + [f"{res['strengths'][s]['teacher']:.3f}" for s in strengths]]
            if "teacher_star" in res["strengths"][strengths[0]]:
                rows.append(
                    ["teacher" + STAR]
                    + [f"{res['strengths'][s]['teacher_star']:.3f}" for s in strengths]
                )
            rows += [
                [html.escape(n)]
                + [fmt_summary(res["strengths"][s]["groups"][n]) for s in strengths]
                for n in names
            ]
            parts.append(table(["model", *(f"agreement at {s}" for s in strengths)], rows))
            key = f"{transform} invariance"
            parts.append(
                verdict_table(
                    {f"{transform} at {res['headline']}": result["verdicts"][key]},
                    "agreement gap vs independent",
                    result["margin"],
                )
            )
            parts.append(_figure(transform, res))
        parts.insert(1, premise_note(result["premise"]))
        return "\n".join(parts)


def _figure(transform: str, res: dict[str, Any]) -> str:
    strengths = list(res["strengths"])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = np.arange(len(strengths))
    ax.plot(xs, [res["strengths"][s]["teacher"] for s in strengths], "k-o", label="teacher")
    for name in res["strengths"][strengths[0]]["groups"]:
        ax.plot(
            xs, [res["strengths"][s]["groups"][name]["mean"] for s in strengths], "-o", label=name
        )
    ax.set_xticks(xs, strengths)
    ax.set(xlabel="strength", ylabel="agreement", title=f"{transform} invariance")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, f"{transform} agreement by strength")
