"""Calibration and prediction entropy of the teacher and every model (docs/three_levels.md).

Per model group and seed, on the test split: accuracy, expected calibration error (15 equal-width
confidence bins), negative log-likelihood, Brier score and mean prediction entropy
−Σ_i p_i log p_i, with t intervals over seeds × the shared test inputs (:mod:`kdscope.stats`);
ECE is not a mean over inputs, so its input part comes from jackknife pseudo-values. The reliability
diagram shows accuracy against confidence per bin, pooled over seeds.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import split_labels
from kdscope.render import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise
from kdscope.teacher_knowledge.calibration import (
    brier_per_example,
    ece_batched,
    entropy_rows,
    nll_per_example,
    reliability,
)
from kdscope.teacher_knowledge.rescaling import softmax

if TYPE_CHECKING:
    from kdscope.study import StudyResult

N_BINS = 15


def _ece_statistic(rows: np.ndarray) -> np.ndarray:
    """ECE of resampled rows (..., I, 2) holding (confidence, correct)."""
    return ece_batched(rows[..., 0], rows[..., 1], N_BINS)


@register_analysis
class CalibrationAnalysis(Analysis):
    """Calibration of every model on the test set: expected calibration error (15 bins), negative
    log-likelihood, Brier score and prediction entropy, per seed and over seeds, with a
    reliability diagram (docs/three_levels.md).
    """

    name = "calibration"
    title = "Calibration and prediction entropy"

    def run(self, study: StudyResult) -> dict[str, Any]:
        labels = split_labels(study)
        groups: dict[str, Any] = {}
        bins: dict[str, Any] = {}
        for g in study.groups.values():
            per: dict[str, dict[int, np.ndarray]] = {k: {} for k in ("nll", "brier", "entropy")}
            conf_correct: dict[int, np.ndarray] = {}
            for seed in sorted(g.runs):
                p = softmax(study.logits(g.name, seed).double().numpy())
                correct = (p.argmax(1) == labels).astype(np.float64)
                conf = p.max(1)
                per["nll"][seed] = nll_per_example(p, labels)
                per["brier"][seed] = brier_per_example(p, labels)
                per["entropy"][seed] = entropy_rows(p)
                conf_correct[seed] = np.stack([conf, correct], axis=1)
            groups[g.name] = {
                "role": g.role,
                "ece": summarise(conf_correct, statistic=_ece_statistic, shared_inputs=True),
                **{k: summarise(v, shared_inputs=True) for k, v in per.items()},
            }
            pooled = np.concatenate(list(conf_correct.values()))
            bins[g.name] = reliability(pooled[:, 0], pooled[:, 1], N_BINS)
        return {"n_test": len(labels), "n_bins": N_BINS, "groups": groups, "reliability": bins}

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = [
            [html.escape(name), g["role"]]
            + [fmt_summary(g[k], 4) for k in ("ece", "nll", "brier", "entropy")]
            for name, g in result["groups"].items()
        ]
        return (
            f"<p>On {result['n_test']} test inputs. ECE: {result['n_bins']} equal-width bins of "
            "the top-1 confidence, Σ_b (n_b/n)|acc_b − conf_b|. Entropy in nats. Mean over seeds "
            "[95 % t interval over seeds × inputs].</p>"
            + table(["model", "role", "ECE", "NLL", "Brier", "entropy"], rows)
            + _reliability_figure(result["reliability"])
        )


def _reliability_figure(bins: dict[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for i, (name, b) in enumerate(bins.items()):
        keep = [j for j, n in enumerate(b["count"]) if n > 0]
        ax.plot(
            [b["confidence"][j] for j in keep],
            [b["accuracy"][j] for j in keep],
            marker="o",
            ms=3,
            color=f"C{i % 10}",
            label=name,
        )
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability (all seeds pooled)")
    ax.legend(fontsize=7)
    return figure_html(fig, "reliability diagram")
