"""Adversarial vulnerability transfer (Ojha et al. 2023, adversarial vulnerability): do inputs
crafted to fool the teacher also fool the distilled students more often than the independent
student?

Iterative FGSM on the teacher (5 steps of a = ε/4 under L∞, pixels kept in [0, 1], true label),
with ε calibrated by bisection on ``calibration`` test inputs so that the teacher is fooled on
85 % ± 2 % of them; then the evaluation inputs (other test inputs) are attacked at ε and at
ε × each ``eps_factors``, and only those that fool the teacher (the kept set K_T) are scored.
Per model and seed: the fooling rate (its prediction on the attack differs from its clean
prediction) and the same-wrong-class rate (it predicts the teacher's adversarial class). Every
model is measured on the same kept inputs, so summaries and gaps use the crossed seeds × inputs
design; gaps are student − independent, seed k against seed k, input by input.

Verdict per distilled student S on the fooling gap at ε (teacher-ward = more fooled), by the
rule of :func:`kdscope.verdicts.transfer` with equivalence margin ``margin`` (fooling-rate scale,
default 0.03) and the paper's premise (S more accurate than Ind) stated. Its effect beyond each
control must lie above 0:

* **foreign source**: with ``foreign`` (a model name or ``{name, ...parameters}``), a network of
  another architecture is trained with cross-entropy on the teacher's recipe and attacked the
  same way at the same ε on the same inputs; its kept set K_F differs from K_T. A teacher-specific
  vulnerability shows a gap on the teacher's attacks and none on the foreign ones. Per seed k,
  with d_k = fooled_S,k − fooled_Ind,k on each source's kept inputs, the effect beyond this
  control is mean_{K_T} d_k − mean_{K_F} d_k, one value per seed, summarised over seeds by
  :func:`source_contrast` (which adds the input part the seeds share);
* **soft-label control** C (``Method.role == "control"``: generic soft targets, no teacher):
  fooled_S − fooled_C on the teacher's attacks, paired by seed and input.

Descriptive only: the gaps at ε × ``eps_factors`` and on the foreign attacks, and the spread
between independent seeds (fooled_Ind,i − fooled_Ind,j on the kept inputs, per pair i < j).
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_differences,
    control_students,
    paired,
    premise,
    seed_pairs,
    student_gaps,
    test_subset,
    transfer_record,
)
from kdscope.config import ModelConfig, StudentConfig
from kdscope.property_transfer.adversarial import (
    calibrate_eps,
    ifgsm,
    predict_labels,
    transfer_rates,
)
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise
from kdscope.study import Variant, train_variants

if TYPE_CHECKING:
    from kdscope.analyses.study_views import PerSeed
    from kdscope.study import StudyResult

WHAT = "adversarial vulnerability"
MAIN = "teacher, ε×1"
FOREIGN = "foreign, ε×1"
RATES = ("fooled", "same_class")


class Attacks(NamedTuple):
    """One source's attacks on the evaluation inputs: the adversarial inputs, whether each
    fools the source (the kept set) and the source's adversarial predictions."""

    adv: Tensor
    kept: Tensor
    adv_pred: Tensor


def source_attacks(source: nn.Module, x: Tensor, y: Tensor, eps: float) -> Attacks:
    """Iterative FGSM on ``source`` at ``eps`` (true labels ``y``)."""
    adv = ifgsm(source, x, y, eps)
    clean, adv_pred = predict_labels(source, x), predict_labels(source, adv)
    return Attacks(adv, clean != adv_pred, adv_pred)


def model_rates(model: nn.Module, x: Tensor, attacks: Attacks) -> dict[str, np.ndarray]:
    """Per kept input: ``fooled`` (the model's prediction changes) and ``same_class`` (it
    predicts the source's adversarial class), 0/1."""
    r = transfer_rates(
        attacks.kept, predict_labels(model, x), predict_labels(model, attacks.adv), attacks.adv_pred
    )
    return {k: r[k] for k in RATES}


def foreign_model(
    study: StudyResult, foreign: str | dict[str, Any], quiet: bool = False
) -> nn.Module:
    """The foreign attack source: ``foreign`` (a model name or ``{name, ...parameters}``)
    trained with cross-entropy on the teacher's recipe and seed into
    ``DIR/analyses/adversarial/foreign_NAME…`` (resumed, not retrained, when it exists)."""
    model = ModelConfig.model_validate(foreign)
    spec = StudentConfig(method="ce", name="foreign", model=model)
    suffix = "".join(f"_{k}{v}" for k, v in sorted(model.params.items()))
    stem = model.name or re.sub(r"\W+", "_", str(model.factory))  # a factory path: a safe name
    root = study.out_dir / "analyses" / "adversarial" / f"foreign_{stem}{suffix}"
    variant = Variant(spec, study.config.teacher.train, study.config.teacher_seed, root)
    return train_variants(study, [variant], quiet)[0].load()


def contrast_statistic(rows: np.ndarray) -> np.ndarray:
    """Σ_n a_n / Σ_n k1_n − Σ_n b_n / Σ_n k2_n over the inputs axis of rows (..., N, 4) with
    columns (a = 1[n ∈ K₁]·first, k1 = 1[n ∈ K₁], b = 1[n ∈ K₂]·second, k2 = 1[n ∈ K₂]): the
    difference of two means over two kept sets, as a statistic for
    :func:`kdscope.stats.summarise`; NaN where a kept set is empty."""
    s = rows.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s[..., 0] / s[..., 1] - s[..., 2] / s[..., 3]


def source_contrast(
    first: PerSeed, first_kept: np.ndarray, second: PerSeed, second_kept: np.ndarray
) -> dict[str, Any] | None:
    """The summary over seeds of mean_{K₁} first[k] − mean_{K₂} second[k], where first[k] and
    second[k] hold seed k's per-input values on two different kept sets K₁, K₂ (boolean masks)
    of the same N attacked inputs, in input order.

    Every seed has the same N inputs in the same order, so the per-seed contrasts (the rows of
    :func:`contrast_statistic` over the N inputs) are summarised with ``shared_inputs``: the
    seed part is the t interval over the per-seed contrasts, and the input-specific part shared
    by every seed is added from the statistic's jackknife pseudo-values (a contrast of two
    ratios, so its input terms are not the raw values). None when a kept set is empty."""
    k1, k2 = np.asarray(first_kept, bool), np.asarray(second_kept, bool)
    if not k1.any() or not k2.any():
        return None
    rows = {}
    for s in sorted(set(first) & set(second)):
        r = np.zeros((len(k1), 4))
        r[k1, 0], r[:, 1] = first[s], k1
        r[k2, 2], r[:, 3] = second[s], k2
        rows[s] = r
    return summarise(rows, contrast_statistic, shared_inputs=True)


def group_rates(study: StudyResult, x: Tensor, attacks: Attacks) -> dict[str, dict[str, PerSeed]]:
    """Per rate (``fooled``, ``same_class``), model group and seed: the per-input indicators on
    the source's kept inputs."""
    out: dict[str, dict[str, PerSeed]] = {k: {} for k in RATES}
    for g in study.groups.values():
        if g.role == "teacher":
            continue
        for seed, run in sorted(g.runs.items()):
            r = model_rates(run.load(), x, attacks)
            for k in RATES:
                out[k].setdefault(g.name, {})[seed] = r[k]
    return out


def summarise_source(study: StudyResult, rates: dict[str, dict[str, PerSeed]]) -> dict[str, Any]:
    """Rates per group and student − independent per student (seeds × shared kept inputs), and
    the descriptive spread between independent seeds (mean fooled_Ind,i − fooled_Ind,j)."""
    fooled = rates["fooled"]
    baselines = sorted({g.baseline or "" for g in study.by_role("student")})
    gaps = {k: student_gaps(study, rates[k]) for k in RATES}
    return {
        "groups": {
            n: {k: summarise(rates[k][n], shared_inputs=True) for k in RATES} for n in fooled
        },
        "gaps": {n: {k: gaps[k][n] for k in RATES} for n in gaps["fooled"]},
        "independent_spread": {
            b: {
                f"{i}-{j}": float((fooled[b][i] - fooled[b][j]).mean())
                for i, j in seed_pairs(sorted(fooled[b]), sorted(fooled[b]), distinct=True)
                if fooled[b][i].size
            }
            for b in baselines
        },
    }


@register_analysis
class AdversarialAnalysis(Analysis):
    """Adversarial vulnerability: iterative FGSM attacks on the teacher with ε calibrated to a
    target fooling rate, replayed on every model; each student's fooling and same-wrong-class
    gaps over its independent student, against a foreign-source attack and the soft-label
    control (docs/property_transfer.md).
    """

    name = "adversarial"
    trains = "the foreign attack source (cross-entropy, the teacher's recipe and seed)"
    title = "Adversarial vulnerability: do the teacher's attacks fool the students?"

    def __init__(
        self,
        n_inputs: int = 1000,
        calibration: int = 256,
        target_rate: float = 0.85,
        eps_factors: tuple[float, ...] = (0.5, 2.0),
        foreign: str | dict[str, Any] | None = "vgg_small",
        margin: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_inputs < 1 or calibration < 1 or not 0 < target_rate < 1:
            raise ValueError("n_inputs and calibration must be >= 1, target_rate in (0, 1)")
        if not margin > 0:
            raise ValueError("margin must be > 0")
        if any(not f > 0 for f in eps_factors):
            raise ValueError("eps_factors must be positive")
        if foreign is not None:
            try:
                ModelConfig.model_validate(foreign)
            except ValidationError as e:
                message = e.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"foreign: {message}") from None
        self.n_inputs, self.calibration, self.target_rate = n_inputs, calibration, target_rate
        self.eps_factors, self.foreign, self.seed = tuple(eps_factors), foreign, seed
        self.margin = margin

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
        cal_result = calibrate_eps(teacher, test.inputs_at(cal), test.labels[cal], self.target_rate)
        eps = float(cal_result["eps"])
        x, y = test.inputs_at(ev), test.labels[ev]
        sources: dict[str, Any] = {}
        measured: dict[str, tuple[dict[str, dict[str, PerSeed]], np.ndarray]] = {}
        runs = [(f"teacher, ε×{f:g}", teacher, eps * f) for f in (1.0, *self.eps_factors)]
        if self.foreign is not None:
            runs.append((FOREIGN, foreign_model(study, self.foreign, self.quiet), eps))
        for name, source, e in runs:
            attacks = source_attacks(source, x, y, e)
            rates = group_rates(study, x, attacks)
            measured[name] = rates, attacks.kept.numpy()
            sources[name] = {
                "eps": e,
                "source_rate": float(attacks.kept.float().mean()),
                "n_kept": int(attacks.kept.sum()),
                **summarise_source(study, rates),
            }
        premises = premise(study)
        return {
            "n_inputs": len(ev),
            "calibration": {k: v for k, v in cal_result.items() if k != "history"},
            "foreign": self.foreign,
            "foreign_model": (
                None if self.foreign is None else ModelConfig.model_validate(self.foreign).label()
            ),
            "sources": sources,
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {WHAT: self._verdicts(study, measured, premises)},
        }

    def _verdicts(
        self,
        study: StudyResult,
        measured: dict[str, tuple[dict[str, dict[str, PerSeed]], np.ndarray]],
        premises: dict[str, Any],
    ) -> dict[str, Any]:
        """A transfer record per distilled student: the fooling gap on the teacher's attacks at
        ε, its excess over the gap on the foreign attacks, and its excess over each soft-label
        control."""
        (rates, kept), foreign = measured[MAIN], measured.get(FOREIGN)
        fooled = rates["fooled"]
        controls = control_students(study)
        out = {}
        for n, gap in student_gaps(study, fooled).items():
            if n in controls:
                continue
            ind = study.groups[n].baseline or ""
            beyond: dict[str, Any] = {}
            if foreign is not None:
                contrast = source_contrast(
                    paired(fooled[n], fooled[ind]),
                    kept,
                    paired(foreign[0]["fooled"][n], foreign[0]["fooled"][ind]),
                    foreign[1],
                )
                if contrast is not None:
                    beyond["foreign source"] = contrast
            beyond.update(control_differences(fooled, n, controls))
            out[n] = transfer_record(study, n, gap, beyond, self.margin, premises[n]["status"])
        return out

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        c = result["calibration"]
        foreign = (
            f" Foreign source: {html.escape(result['foreign_model'])}, trained with "
            "cross-entropy on the teacher's recipe and attacked the same way; the student's "
            "effect beyond it is (gap on the teacher's attacks) − (gap on the foreign attacks), "
            "per seed."
            if result["foreign_model"]
            else " No foreign source was configured."
        )
        parts = [
            f"<p>Iterative FGSM (5 steps, a = ε/4, L∞, pixels in [0, 1], true labels) on the "
            f"teacher; ε = {c['eps']:.4f} calibrated on held-out test inputs to a teacher fooling "
            f"rate of {c['rate']:.1%} ({'converged' if c['converged'] else 'not converged'}). "
            f"{result['n_inputs']} evaluation inputs; only attacks that fool the source are kept. "
            "Fooling rate: the model's prediction changes; same class: it predicts the source's "
            "adversarial class. Gaps are student − independent, seed k against seed k, input by "
            f"input; mean [95 % t interval, seeds × inputs].{foreign}</p>",
            premise_note(result["premise"]),
            verdict_table(
                result["verdicts"], "fooling gap vs independent (teacher, ε×1)", result["margin"]
            ),
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
                for g, r in src["gaps"].items()
            ]
            spread = "; ".join(
                f"{html.escape(b)} seeds {k}: {v:+.3f}"
                for b, pairs in src["independent_spread"].items()
                for k, v in pairs.items()
            )
            parts += [
                f"<h3>Source: {html.escape(name)} (ε = {src['eps']:.4f}; source fooled on "
                f"{src['source_rate']:.1%}, {src['n_kept']} kept)</h3>",
                table(["model", "fooling rate", "same wrong class"], rows),
                table(["student", "fooling gap vs independent", "same-class gap"], gap_rows),
                "<p class='note'>Independent vs independent' (descriptive, fooling-rate "
                f"difference per pair of seeds): {spread or 'one seed'}.</p>",
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
