"""Accuracy by difficulty (Tang et al. 2020): where do the soft targets help?

Test inputs are binned into ``n_bins`` equal-count bins of the teacher's ground-truth probability
ρ¹_g on them (bin 1 = hardest, lowest teacher confidence; ties are split by input order). Per
bin: every model's accuracy (mean over seeds with t intervals over seeds × inputs) and every
student's gain over the label-smoothing reference (``ls_matched`` when the study has it, else
``label_smoothing``, else the CE baseline), paired by seed and input. The paper's reading:
instance-specific re-weighting (KD, KD-pt) should help differently across difficulty, whereas
uniform smoothing cannot. When the dataset plants each input's true difficulty (tag
``difficulty``), the same table is also computed over bins of the true difficulty.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    correctness,
    first_with_role,
    paired,
    split_labels,
    teacher_logits,
)
from kdscope.render import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise
from kdscope.teacher_knowledge.rescaling import softmax

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def equal_count_bins(score: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index 0..n_bins−1 of each value: bin = floor(rank · n_bins / n), ranks from a stable
    ascending sort (so ties go by position and every bin holds n/n_bins values ± 1)."""
    ranks = np.empty(len(score), dtype=np.int64)
    ranks[np.argsort(score, kind="stable")] = np.arange(len(score))
    return ranks * n_bins // len(score)


def reference_group(study: StudyResult) -> str:
    """The label-smoothing control students are compared with."""
    name = first_with_role(study, "label_smoothing_matched", "label_smoothing")
    return name if name is not None else next(g.name for g in study.by_role("baseline"))


def binned(study: StudyResult, bins: np.ndarray, n_bins: int, reference: str) -> dict[str, Any]:
    """Per-bin accuracy of every model and gain of every student over ``reference``."""
    correct = {g.name: correctness(study, g.name) for g in study.groups.values()}
    acc = {
        name: [
            summarise({s: v[bins == b] for s, v in per.items()}, shared_inputs=True)
            for b in range(n_bins)
        ]
        for name, per in correct.items()
    }
    gains = {}
    for g in study.by_role("student"):
        if g.name == reference:
            continue
        diff = paired(correct[g.name], correct[reference])
        gains[g.name] = [
            summarise({s: v[bins == b] for s, v in diff.items()}, shared_inputs=True)
            for b in range(n_bins)
        ]
    return {"accuracy": acc, "gain_over_reference": gains}


@register_analysis
class DifficultyAnalysis(Analysis):
    """Accuracy of every model in quintiles of the teacher's confidence on the test inputs (and of
    the dataset's planted difficulty when it has one), and each student's gain over the
    label-smoothing control per bin (docs/three_levels.md).
    """

    name = "difficulty"
    title = "Accuracy by difficulty (teacher confidence bins)"

    def __init__(self, n_bins: int = 5) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError("n_bins must be >= 2")
        self.n_bins = n_bins

    def run(self, study: StudyResult) -> dict[str, Any]:
        y = split_labels(study)
        rho_g = softmax(teacher_logits(study))[np.arange(len(y)), y]
        bins = equal_count_bins(rho_g, self.n_bins)
        reference = reference_group(study)
        out: dict[str, Any] = {
            "n_test": len(y),
            "n_bins": self.n_bins,
            "reference": reference,
            "teacher_confidence": {
                "bin_mean": [float(rho_g[bins == b].mean()) for b in range(self.n_bins)],
                **binned(study, bins, self.n_bins, reference),
            },
            "true_difficulty": None,
        }
        a = study.data.test.tags.get("difficulty")
        if a is not None and float(a.std()) > 0:
            a_np = a.double().numpy()
            # bin 1 = hardest: sort by decreasing true difficulty
            tbins = equal_count_bins(-a_np, self.n_bins)
            out["true_difficulty"] = {
                "bin_mean": [float(a_np[tbins == b].mean()) for b in range(self.n_bins)],
                **binned(study, tbins, self.n_bins, reference),
            }
        return out

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        parts = [
            f"<p>{result['n_test']} test inputs in {result['n_bins']} equal-count bins, bin 1 "
            f"the hardest. Gains are paired differences against <b>{html.escape(result['reference'])}"
            "</b> (the label-smoothing control), seed by seed and input by input: mean "
            "[95 % t interval over seeds × inputs].</p>"
        ]
        for key, label, fmt in [
            ("teacher_confidence", "teacher ρ¹_g", "{:.3f}"),
            ("true_difficulty", "planted difficulty a", "{:.3f}"),
        ]:
            r = result[key]
            if r is None:
                continue
            cols = [f"bin {b + 1} ({label} {fmt.format(m)})" for b, m in enumerate(r["bin_mean"])]
            acc_rows = [
                [html.escape(n)] + [fmt_summary(s) for s in bins]
                for n, bins in r["accuracy"].items()
            ]
            gain_rows = [
                [html.escape(n)] + [fmt_summary(s, sign=True) for s in bins]
                for n, bins in r["gain_over_reference"].items()
            ]
            parts += [
                f"<h3>Bins of {label}: accuracy</h3>",
                table(["model", *cols], acc_rows),
                f"<h3>Bins of {label}: gain over {html.escape(result['reference'])}</h3>",
                table(["student", *cols], gain_rows),
                _figure(r, label, result["reference"]),
            ]
        return "\n".join(parts)


def _figure(r: dict[str, Any], label: str, reference: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(1, len(r["bin_mean"]) + 1)
    for i, (name, bins) in enumerate(r["accuracy"].items()):
        axes[0].plot(x, [b["mean"] for b in bins], marker="o", ms=3, color=f"C{i % 10}", label=name)
    names = list(r["gain_over_reference"])
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        bins = r["gain_over_reference"][name]
        mean = np.array([b["mean"] for b in bins])
        err = np.array([[b["mean"] - b["ci95"][0], b["ci95"][1] - b["mean"]] for b in bins]).T
        axes[1].bar(
            x + (i - len(names) / 2 + 0.5) * width, mean, width, yerr=err, label=name, capsize=2
        )
    axes[1].axhline(0, color="grey", lw=1)
    axes[0].set(xlabel=f"bin of {label} (1 = hardest)", ylabel="accuracy", title="Accuracy per bin")
    axes[1].set(
        xlabel=f"bin of {label} (1 = hardest)",
        ylabel=f"accuracy − {reference}",
        title=f"Gain over {reference}",
    )
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, f"accuracy by {label}")
