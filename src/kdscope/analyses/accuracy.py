"""Accuracy of every model with intervals, and each distilled student against its baseline.

Per model group: test accuracy per seed, mean, std and a 95 % t interval with seeds as the unit
of replication (seeds × shared test inputs; :mod:`kdscope.stats`). Per distilled student: the
paired difference student − baseline on the same test inputs, seed k against seed k, with its
interval; the verdict (:func:`kdscope.verdicts.comparison`) is ``better`` / ``worse`` when the
interval excludes 0, ``inconclusive`` otherwise, ``too few seeds`` below two seeds.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import correctness, paired
from kdscope.render import fmt_interval, table
from kdscope.stats import summarise
from kdscope.verdicts import comparison, css

if TYPE_CHECKING:
    from kdscope.study import StudyResult


@register_analysis
class AccuracyAnalysis(Analysis):
    """Test accuracy of the teacher, the baseline and every student, per seed, and each student
    minus the baseline paired by seed, with a 95 % interval and a verdict (better / worse /
    equivalent / inconclusive / too few seeds; docs/statistics.md).
    """

    name = "accuracy"
    title = "Accuracy: distilled students against the baseline"

    def run(self, study: StudyResult) -> dict[str, Any]:
        correct = {g.name: correctness(study, g.name) for g in study.groups.values()}
        groups = {
            name: summarise(per_seed, shared_inputs=True) for name, per_seed in correct.items()
        }
        comparisons = {}
        for g in study.by_role("student"):
            diff = summarise(paired(correct[g.name], correct[g.baseline]), shared_inputs=True)
            comparisons[g.name] = {"baseline": g.baseline, **diff, "verdict": comparison(diff)}
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
                f"{s['std']:.4f}" if s["std"] == s["std"] else "n/a (1 seed)",  # NaN: one seed
                fmt_interval(s, 4),
                ", ".join(f"{v:.3f}" for v in s["per_seed"].values()),
            ]
            for name, s in result["groups"].items()
        ]
        cmp_rows = [
            [
                html.escape(name),
                html.escape(c["baseline"]),
                f"{c['mean']:+.4f}",
                fmt_interval(c, 4, sign=True),
                f"<span class='{css(c['verdict'])}'>{c['verdict']}</span>",
            ]
            for name, c in result["student_minus_baseline"].items()
        ]
        return (
            f"<p>Test accuracy on {result['n_test']} inputs; intervals are 95 % t intervals with "
            "seeds as the unit of replication (the test inputs shared by every seed enter as a "
            "crossed factor; none with a single seed). Std over seeds with ddof 1.</p>"
            + table(["model", "mean", "std over seeds", "95 % interval", "per seed"], rows)
            + "<h3>Distilled − baseline (paired by seed and input)</h3>"
            + table(
                ["student", "baseline", "mean difference", "95 % interval", "verdict"], cmp_rows
            )
        )
