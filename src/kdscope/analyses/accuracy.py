"""Accuracy of every model with intervals, and each distilled student against its baseline.

Per model group: test accuracy per seed, mean, std and a 95 % hierarchical-bootstrap interval
(seeds, then test inputs). Per distilled student: the paired difference student − baseline on
the same test inputs, seed k against seed k, with its interval; the verdict is ``better`` /
``worse`` when the interval excludes 0, ``inconclusive`` otherwise.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import correctness, paired
from kdscope.report import table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def verdict(ci: list[float]) -> str:
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "inconclusive"


@register_analysis
class AccuracyAnalysis(Analysis):
    name = "accuracy"
    title = "Accuracy: distilled students against the baseline"

    def run(self, study: StudyResult) -> dict[str, Any]:
        correct = {g.name: correctness(study, g.name) for g in study.groups.values()}
        groups = {name: summarise(per_seed) for name, per_seed in correct.items()}
        comparisons = {}
        for g in study.by_role("student"):
            diff = summarise(paired(correct[g.name], correct[g.baseline]))
            comparisons[g.name] = {"baseline": g.baseline, **diff, "verdict": verdict(diff["ci95"])}
        return {
            "n_test": len(study.data.test),
            "groups": groups,
            "student_minus_baseline": comparisons,
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = [
            [
                html.escape(name),
                f"{s['mean']:.4f}",
                f"{s['std']:.4f}",
                f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]",
                ", ".join(f"{v:.3f}" for v in s["per_seed"].values()),
            ]
            for name, s in result["groups"].items()
        ]
        cmp_rows = [
            [
                html.escape(name),
                html.escape(c["baseline"]),
                f"{c['mean']:+.4f}",
                f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]",
                f"<span class='{c['verdict']}'>{c['verdict']}</span>",
            ]
            for name, c in result["student_minus_baseline"].items()
        ]
        return (
            f"<p>Test accuracy on {result['n_test']} inputs; intervals are 95 % hierarchical "
            "bootstrap intervals (seeds, then inputs; 2,000 resamples).</p>"
            + table(["model", "mean", "std over seeds", "95 % interval", "per seed"], rows)
            + "<h3>Distilled − baseline (paired by seed and input)</h3>"
            + table(
                ["student", "baseline", "mean difference", "95 % interval", "verdict"], cmp_rows
            )
        )
