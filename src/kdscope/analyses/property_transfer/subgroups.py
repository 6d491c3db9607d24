"""Inheritance of a harmful bias over sub-groups (Ojha et al. 2023, sub-group bias): when the
teacher is weak on one group of inputs, does a distilled student gain everywhere except there?

The dataset's ``group`` tag splits the test inputs into groups (a nuisance attribute, unrelated
to the class); the study's ``teacher_subset`` and ``student_subset`` set each role's group
composition. Per group, model and seed: accuracy. Per student: the gain over its independent
student on every group (seed k against seed k, input by input); unfairness = max − min of the
group accuracies (and their std) for every model; inheritance = Pearson(teacher's group
accuracy, student's mean gain) over the groups, and the **weak-group shortfall** = gain on the
teacher's weakest group − mean gain on the other groups, with a t interval over seeds × the
shared test inputs (its input part from jackknife pseudo-values). The bias is inherited
(verdict "transfers", on the shortfall oriented so that inheriting is up) when the shortfall's
interval lies below 0 and the student's shortfall is also below the study's soft-label
student's (no teacher; the shortfall of distilled − control accuracy), by the rule of
:func:`kdscope.verdicts.transfer` (equivalence margin ``margin``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_students,
    correctness,
    oriented,
    paired,
    premise,
    transfer_record,
)
from kdscope.correlation import pearson
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import safe_divide, summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(..., G) mean of ``values`` (..., I) over the inputs of each group (NaN if empty)."""
    onehot = groups[..., None] == np.arange(n_groups)
    return safe_divide((values[..., None] * onehot).sum(-2), onehot.sum(-2), np.nan)


def unfairness(rows: np.ndarray) -> np.ndarray:
    """max − min over groups of the mean of column 0, rows (..., I, 2) = (value, group)."""
    g = rows[..., 1].astype(np.int64)
    means = group_means(rows[..., 0], g, int(g.max()) + 1)
    return np.nanmax(means, -1) - np.nanmin(means, -1)


def shortfall_statistic(weak: int) -> Any:
    """Statistic of rows (..., I, 2) = (gain, group): mean gain on group ``weak`` − the mean over
    the other groups of their mean gains."""

    def stat(rows: np.ndarray) -> np.ndarray:
        g = rows[..., 1].astype(np.int64)
        means = group_means(rows[..., 0], g, int(g.max()) + 1)
        others = np.delete(means, weak, axis=-1)
        return means[..., weak] - np.nanmean(others, -1)

    return stat


def with_groups(per_seed: dict[int, np.ndarray], groups: np.ndarray) -> dict[int, np.ndarray]:
    """Rows (I, 2) = (value, group) per seed."""
    return {s: np.stack([v, groups.astype(np.float64)], 1) for s, v in per_seed.items()}


@register_analysis
class SubgroupsAnalysis(Analysis):
    """Bias inheritance: accuracy per sub-group (the dataset's ``group`` tag), each student's gain
    over its independent student per group, unfairness (max − min), and whether the gains
    follow the teacher's group accuracy (docs/property_transfer.md).
    """

    name = "subgroups"
    title = "Bias inheritance: accuracy per sub-group"

    def __init__(self, margin: float = 0.03) -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError("margin must be > 0")
        self.margin = margin

    def applies_to(self, study: StudyResult) -> str | None:
        if "group" not in study.data.test.tags:
            return "the test data carry no sub-group attribute (tag 'group')"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        test = study.data.test
        groups = test.tags["group"].numpy().astype(np.int64)
        n_groups = int(groups.max()) + 1
        t_correct = study.logits("teacher", study.config.teacher_seed).argmax(1) == test.labels
        t_acc = group_means(t_correct.numpy().astype(np.float64), groups, n_groups)
        weak = int(np.nanargmin(t_acc))
        acc = {
            g.name: correctness(study, g.name) for g in study.groups.values() if g.role != "teacher"
        }
        models = {
            name: {
                "per_group": [
                    summarise({s: v[groups == k] for s, v in per.items()}, shared_inputs=True)
                    for k in range(n_groups)
                ],
                "unfairness": summarise(
                    with_groups(per, groups), statistic=unfairness, shared_inputs=True
                ),
                "std": float(
                    np.mean([np.nanstd(group_means(v, groups, n_groups)) for v in per.values()])
                ),
            }
            for name, per in acc.items()
        }
        controls = control_students(study)
        students: dict[str, Any] = {}

        def shortfall(gain: dict[int, np.ndarray]) -> dict[str, Any]:
            rows = with_groups(gain, groups)
            return summarise(rows, statistic=shortfall_statistic(weak), shared_inputs=True)

        for g in study.by_role("student"):
            gain = paired(acc[g.name], acc[g.baseline])
            per_group_gain = [
                summarise({s: v[groups == k] for s, v in gain.items()}, shared_inputs=True)
                for k in range(n_groups)
            ]
            means = np.array([x["mean"] for x in per_group_gain])
            finite = np.isfinite(t_acc) & np.isfinite(means)
            students[g.name] = {
                "independent": g.baseline,
                "gain": per_group_gain,
                "inheritance_pearson": pearson(t_acc[finite], means[finite]),
                "weak_group_smallest_gain": bool(np.nanargmin(means) == weak),
                "shortfall": shortfall(gain),
            }
        premises = premise(study)
        for name, s in students.items():
            if name in controls:
                continue
            beyond = {c: shortfall(paired(acc[name], acc[c])) for c in controls}
            s["record"] = transfer_record(
                study,
                name,
                oriented(s["shortfall"], -1.0),
                {c: oriented(d, -1.0) for c, d in beyond.items()},
                self.margin,
                premises[name]["status"],
            )
        return {
            "n_groups": n_groups,
            "teacher_groups": _present(study.data.train.tags.get("group"), n_groups),
            "student_groups": _present(study.student_data.train.tags.get("group"), n_groups),
            "teacher_accuracy": [None if np.isnan(a) else float(a) for a in t_acc],
            "teacher_weakest_group": weak,
            "models": models,
            "students": students,
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {
                "weak-group shortfall (inherited bias)": {
                    n: s["record"] for n, s in students.items() if "record" in s
                }
            },
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        n = result["n_groups"]
        heads = [f"group {k}" for k in range(n)]
        t_row = (
            ["teacher"]
            + ["–" if a is None else f"{a:.3f}" for a in result["teacher_accuracy"]]
            + ["", ""]
        )
        rows = [t_row] + [
            [html.escape(name)]
            + [fmt_summary(x) for x in m["per_group"]]
            + [fmt_summary(m["unfairness"]), f"{m['std']:.3f}"]
            for name, m in result["models"].items()
        ]
        gain_rows = [
            [html.escape(name)]
            + [fmt_summary(x, sign=True) for x in s["gain"]]
            + [
                fmt_summary(s["shortfall"], sign=True),
                f"{s['inheritance_pearson']:+.2f}",
            ]
            for name, s in result["students"].items()
        ]
        counts = ", ".join(
            f"{k}: {t}/{s}"
            for k, (t, s) in enumerate(
                zip(result["teacher_groups"], result["student_groups"], strict=True)
            )
        )
        return "\n".join(
            [
                f"<p>Training examples per group (teacher/students): {counts}. The teacher's "
                f"weakest group is {result['teacher_weakest_group']}. Shortfall = gain on that "
                "group − mean gain on the others (negative: the teacher's weakness is "
                "inherited); Pearson = correlation over groups of the teacher's accuracy with "
                "the student's gain.</p>",
                table(["model", *heads, "unfairness (max − min)", "std"], rows),
                table(
                    ["student", *(f"gain {h}" for h in heads), "shortfall", "Pearson"], gain_rows
                ),
                premise_note(result["premise"]),
                verdict_table(
                    result["verdicts"], "−shortfall (inheriting is up)", result["margin"]
                ),
                _figure(result),
            ]
        )


def _present(tag: Any, n_groups: int) -> list[int]:
    if tag is None:
        return [0] * n_groups
    return np.bincount(tag.numpy().astype(np.int64), minlength=n_groups)[:n_groups].tolist()


def _figure(result: dict[str, Any]) -> str:
    n = result["n_groups"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    xs = np.arange(n)
    t = [np.nan if a is None else a for a in result["teacher_accuracy"]]
    ax.plot(xs, t, "k-o", label="teacher")
    for name, m in result["models"].items():
        ax.plot(xs, [x["mean"] for x in m["per_group"]], "-o", label=name)
    ax.set_xticks(xs, [str(k) for k in xs])
    ax.set(xlabel="group", ylabel="accuracy", title="Accuracy per sub-group")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, "accuracy per group")
