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
        rows = []
        for name, s in result["groups"].items():
            seeds = ", ".join(f"{v:.3f}" for v in s["per_seed"].values())
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{s['mean']:.4f}</td><td>{s['std']:.4f}</td>"
                f"<td>[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]</td><td>{seeds}</td></tr>"
            )
        cmp_rows = []
        for name, c in result["student_minus_baseline"].items():
            cmp_rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(c['baseline'])}</td>"
                f"<td>{c['mean']:+.4f}</td><td>[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]</td>"
                f"<td class='{c['verdict']}'>{c['verdict']}</td></tr>"
            )
        return (
            f"<p>Test accuracy on {result['n_test']} inputs; intervals are 95 % hierarchical "
            "bootstrap intervals (seeds, then inputs; 2,000 resamples).</p>"
            "<table><tr><th>model</th><th>mean</th><th>std over seeds</th><th>95 % interval</th>"
            "<th>per seed</th></tr>" + "".join(rows) + "</table>"
            "<h3>Distilled − baseline (paired by seed and input)</h3>"
            "<table><tr><th>student</th><th>baseline</th><th>mean difference</th>"
            "<th>95 % interval</th><th>verdict</th></tr>" + "".join(cmp_rows) + "</table>"
        )
