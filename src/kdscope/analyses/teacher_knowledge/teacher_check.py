"""Failure diagnosis: the teacher check a user runs before distilling (docs/three_levels.md, 'The
teacher check').

:func:`check_teacher` takes any teacher ``nn.Module`` and the transfer data and reports, per level
of knowledge, what the teacher's soft labels still carry, with flags:

* D1 relation-free teacher (domain level missing): relational excess at τ = 1 below the
  threshold when the data declares a class hierarchy, else a near-uniform non-GT tail;
* D2 over-confident teacher (instance level missing): most ρ¹_g above 0.99 on the transfer data;
* D3 uninformative confidence: the teacher's ρ¹_g on held-out data predicts a held-out model's
  correctness with AUROC below the threshold;
* D4 noisy tail (needs trained students): a KD-topk student beats KD beyond its interval.

In a study the analysis checks the study's teacher (held-out model: the CE baseline) and, with
``zoo: true``, a zoo of variants of it trained on the same data: a label-smoothed teacher
(ε = 0.2), an over-trained one (no weight decay, 4× the epochs) and an early-stopped one (a tenth
of the epochs). With ``zoo_students`` each zoo teacher also distils a KD student per seed (the
study's KD settings), so the report shows whether the flags predict the KD gain: its gain over the
baseline (``kd_gain``) and its difference from the study teacher's KD student (``kd_vs_teacher``),
both paired by seed and test input, with intervals over seeds. The zoo has one teacher per recipe
(the study's teacher seed), so these intervals replicate the students, not the teachers.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    correctness,
    has_role,
    paired,
    soft_target_groups,
    students_with_role,
)
from kdscope.config import StudentConfig
from kdscope.datasets.base import TensorDataset
from kdscope.evaluation import predict_logits
from kdscope.methods import build_method
from kdscope.render import fmt_summary, table
from kdscope.stats import summarise
from kdscope.study import Variant, train_variants
from kdscope.teacher_knowledge.teacher_check import Thresholds, teacher_check
from kdscope.verdicts import ABOVE, classify

if TYPE_CHECKING:
    from kdscope.study import Group, StudyResult


def check_teacher(
    teacher: nn.Module,
    train: TensorDataset,
    heldout: TensorDataset | None = None,
    tau: float = 4.0,
    lam: float = 0.7,
    heldout_correct: np.ndarray | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Run the teacher check on ``teacher`` (eval mode) over the transfer data ``train``; with
    ``heldout`` data the confidence checks (D3, ECE) run too. ``heldout_correct`` is a held-out
    model's per-input correctness on ``heldout`` (default: the teacher's own). The class
    hierarchy, when ``train.class_info`` has a ``"superclass"`` map, enables the relational
    measures. Returns a JSON-serialisable dict (levels, flags, flagged)."""
    sup = train.class_info.get("superclass")
    kwargs: dict[str, Any] = {}
    if heldout is not None:
        kwargs = {
            "heldout_logits": predict_logits(teacher, heldout).double().numpy(),
            "heldout_labels": heldout.labels.numpy(),
            "heldout_correct": heldout_correct,
        }
    return teacher_check(
        predict_logits(teacher, train).double().numpy(),
        train.labels.numpy(),
        tau,
        lam,
        superclass=None if sup is None else sup.numpy(),
        thresholds=thresholds or Thresholds(),
        **kwargs,
    )


def format_check(result: dict[str, Any], title: str = "teacher") -> str:
    """A plain-text rendering of a check for the terminal."""
    lines = [f"teacher check: {title}"]
    for level, values in result["levels"].items():
        items = ", ".join(f"{k}={_short(v)}" for k, v in values.items() if not isinstance(v, dict))
        lines.append(f"  {level}: {items}")
    for name, flag in result["flags"].items():
        state = {True: "FLAGGED", False: "ok", None: "not checked"}[flag["flagged"]]
        lines.append(
            f"  {name} [{state}] value={_short(flag['value'])} threshold={_short(flag['threshold'])}"
        )
        if flag["flagged"]:
            lines.append(f"      {flag['message']}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def distillation_settings(study: StudyResult) -> tuple[float, float, Group | None]:
    """τ and λ of the study's KD student (else of its first soft-target student; else 4, 0.7)."""
    groups = soft_target_groups(study)
    kd = next((g for g in groups if has_role(g, "logit_kd")), groups[0] if groups else None)
    if kd is None:
        return 4.0, 0.7, None

    m = build_method(kd.method, **kd.method_params)
    total = m.ce_weight + m.soft_weight  # type: ignore[attr-defined]
    return float(m.tau), float(m.soft_weight / total), kd  # type: ignore[attr-defined]


ZOO = {
    "label_smoothed": "label smoothing ε = 0.2",
    "over_trained": "no weight decay, 4× the epochs",
    "early_stopped": "a tenth of the epochs",
}


@register_analysis
class TeacherCheckAnalysis(Analysis):
    """Why distillation may fail, read from the teacher: relation-free soft labels (D1),
    over-confidence (D2), uninformative confidence (D3) and a noisy tail (D4), with what each
    knowledge level still carries; ``zoo: true`` also trains degraded teachers and a KD student
    from each through the study service (docs/three_levels.md).
    """

    name = "teacher_check"
    trains = (
        "teachers of the teacher's architecture (label-smoothed, over-trained, "
        "early-stopped) and a KD student from each (the students' recipe)"
    )
    title = "Failure diagnosis: the teacher check"
    requires = ("accuracy",)

    def __init__(
        self,
        zoo: bool = False,
        zoo_students: bool = True,
        relational_excess: float = 0.15,
        tail_entropy: float = 0.95,
        overconfident_fraction: float = 0.9,
        auroc: float = 0.6,
    ) -> None:
        super().__init__()
        self.zoo, self.zoo_students = zoo, zoo_students
        self.thresholds = Thresholds(
            relational_excess=relational_excess,
            tail_entropy=tail_entropy,
            overconfident_fraction=overconfident_fraction,
            auroc=auroc,
        )

    def run(self, study: StudyResult) -> dict[str, Any]:
        tau, lam, kd = distillation_settings(study)
        baseline = next(iter(study.by_role("baseline")), None)
        heldout_correct = None
        if baseline is not None:
            first = min(baseline.runs)
            heldout_correct = correctness(study, baseline.name)[first]
        teachers: dict[str, Any] = {
            "teacher": self._check(study, study.teacher_model, tau, lam, heldout_correct)
        }
        if kd is not None and baseline is not None:
            teachers["teacher"]["kd_gain"] = summarise(
                paired(correctness(study, kd.name), correctness(study, baseline.name)),
                shared_inputs=True,
            )
        if self.zoo:
            for name in ZOO:
                teachers[name] = self._zoo_member(
                    study, name, tau, lam, heldout_correct, kd, baseline
                )
        return {
            "tau": tau,
            "lam": lam,
            "held_out_model": baseline.name if baseline is not None else "the teacher itself",
            "thresholds": vars(self.thresholds),
            "teachers": teachers,
            "noisy_tail": _noisy_tail(study),
        }

    def _check(
        self,
        study: StudyResult,
        teacher: nn.Module,
        tau: float,
        lam: float,
        correct: np.ndarray | None,
    ) -> dict[str, Any]:
        return check_teacher(
            teacher, study.student_data.train, study.data.test, tau, lam, correct, self.thresholds
        )

    def extra_models(self) -> str:
        return self.trains if self.zoo else ""

    def applies_to(self, study: StudyResult) -> str | None:
        if self.zoo and study.config.teacher.model is None:
            return (
                "the zoo retrains the teacher's architecture, which a TorchScript teacher does "
                "not give (set zoo: false, or give the teacher as a checkpoint with its model)"
            )
        return None

    def _zoo_member(
        self,
        study: StudyResult,
        name: str,
        tau: float,
        lam: float,
        heldout_correct: np.ndarray | None,
        kd: Group | None,
        baseline: Group | None,
    ) -> dict[str, Any]:

        cfg = study.config
        train = cfg.teacher.train
        method, params = "ce", {}
        if name == "label_smoothed":
            method, params = "label_smoothing", {"eps": 0.2}
        elif name == "over_trained":
            train = train.model_copy(update={"weight_decay": 0.0, "epochs": 4 * train.epochs})
        else:
            train = train.model_copy(update={"epochs": max(1, train.epochs // 10)})
        root = study.out_dir / "analyses" / "teacher_check" / "zoo" / name
        teacher_cfg = StudentConfig(
            method=method, name=f"zoo-{name}", model=cfg.teacher.model, **params
        )
        (zoo_teacher,) = train_variants(
            study, [Variant(teacher_cfg, train, cfg.teacher_seed, root / "teacher")], self.quiet
        )
        teacher = zoo_teacher.load()
        out = {"recipe": ZOO[name], **self._check(study, teacher, tau, lam, heldout_correct)}
        if self.zoo_students and kd is not None and baseline is not None:
            student_cfg = StudentConfig(
                method=kd.method, name=f"kd-from-{name}", **kd.method_params
            )
            correct = {}
            seeds = sorted(kd.runs)
            variants = [
                Variant(student_cfg, kd.train, s, root / f"kd_seed{s}", zoo_teacher, kd.model)
                for s in seeds
            ]
            for seed, run in zip(seeds, train_variants(study, variants, self.quiet), strict=True):
                pred = predict_logits(run.load(), study.data.test).argmax(1)
                correct[seed] = (pred == study.data.test.labels).numpy().astype(np.float64)
            out["kd_gain"] = summarise(
                paired(correct, correctness(study, baseline.name)), shared_inputs=True
            )
            out["kd_vs_teacher"] = summarise(
                paired(correct, correctness(study, kd.name)), shared_inputs=True
            )
        return out

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        headers, rows = check_table(result["teachers"])
        messages = "".join(
            f"<li><b>{html.escape(name)}</b>, {html.escape(f)}: {html.escape(flag['message'])}</li>"
            for name, t in result["teachers"].items()
            for f, flag in t["flags"].items()
            if flag["flagged"]
        )
        nt = result["noisy_tail"]
        tail = (
            "<p>D4 (noisy tail): no KD-topk and KD students to compare.</p>"
            if nt is None
            else "<p>D4 (noisy tail): KD-topk − KD accuracy, paired: "
            + "; ".join(
                f"{html.escape(k)} {fmt_summary(v, sign=True)}" for k, v in nt["gains"].items()
            )
            + (
                " — <b>flagged</b>: some κ &lt; 1 beats KD beyond its interval"
                if nt["flagged"]
                else " — not flagged"
            )
            + ".</p>"
        )
        return (
            f"<p>Soft labels at the distillation τ = {result['tau']:g} (λ = {result['lam']:g}) on the "
            f"transfer data; held-out confidence checks on the test split against "
            f"{html.escape(result['held_out_model'])}'s correctness. Thresholds: "
            + ", ".join(f"{k} = {v:g}" for k, v in result["thresholds"].items())
            + " (defaults to be validated on the teacher zoo, not paper constants).</p>"
            + table(headers, rows)
            + (f"<ul>{messages}</ul>" if messages else "<p>No teacher is flagged.</p>")
            + tail
        )


# (header, level, key) of the per-level columns of the report's table, in order
LEVEL_COLUMNS = (
    ("(a) non-GT mass at τ", "universe", "non_gt_mass"),
    ("(b) relational excess at τ", "domain", "relational_excess"),
    ("(b) relational excess τ=1", "domain", "relational_excess_tau1"),
    ("(b) tail entropy at τ", "domain", "tail_entropy"),
    ("(c) mean ρ¹_g", "instance", "rho_g_mean"),
    ("(c) share ρ¹_g > 0.99", "instance", "frac_above_0.99"),
    ("(c) AUROC", "instance", "auroc"),
)


def check_table(teachers: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows (HTML cells) of the report's teacher table: name, recipe, the
    :data:`LEVEL_COLUMNS`, one column per flag, and the zoo's KD students (gain over the baseline;
    difference from the study teacher's KD student). Headers and cells come from one column list,
    so every row has as many cells as there are headers."""
    flag_names = list(next(iter(teachers.values()))["flags"]) if teachers else []
    headers = [
        "teacher",
        "recipe",
        *(h for h, _, _ in LEVEL_COLUMNS),
        *flag_names,
        "KD student − baseline",
        "KD student − study teacher's KD student",
    ]
    rows = [
        [html.escape(name), html.escape(t.get("recipe", "the study's teacher"))]
        + [_get(t["levels"], level, key) for _, level, key in LEVEL_COLUMNS]
        + [_flag_cell(t["flags"][f]) for f in flag_names]
        + [_summary_cell(t, "kd_gain"), _summary_cell(t, "kd_vs_teacher")]
        for name, t in teachers.items()
    ]
    return headers, rows


def _summary_cell(teacher: dict[str, Any], key: str) -> str:
    return fmt_summary(teacher[key], sign=True) if key in teacher else "–"


def _get(levels: dict[str, Any], level: str, key: str) -> str:
    v = levels.get(level, {}).get(key)
    return "–" if v is None else f"{v:.3f}"


def _flag_cell(flag: dict[str, Any]) -> str:
    state = flag["flagged"]
    if state is None:
        return "<span class='note'>not checked</span>"
    return "<span class='worse'>flagged</span>" if state else "<span class='better'>ok</span>"


def _noisy_tail(study: StudyResult) -> dict[str, Any] | None:
    kd = students_with_role(study, "logit_kd")
    topk = students_with_role(study, "topk_target")
    if not kd or not topk:
        return None
    ref = correctness(study, kd[0].name)
    gains = {
        g.name: summarise(paired(correctness(study, g.name), ref), shared_inputs=True) for g in topk
    }
    return {
        "kd": kd[0].name,
        "gains": gains,
        "flagged": any(classify(v) == ABOVE for v in gains.values()),
    }


__all__ = ["TeacherCheckAnalysis", "check_table", "check_teacher", "format_check"]
