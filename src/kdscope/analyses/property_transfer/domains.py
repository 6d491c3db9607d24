"""Unseen domains (Ojha et al. 2023, unseen domains): does a student distilled from a teacher that
saw several domains do better on the domains it never saw itself?

The study's teacher trains on several domains (the dataset's ``domain`` tag) and the students on
fewer (``student_subset``). Per test domain, per model and seed: accuracy, and consensus with the
teacher (the fraction of inputs where both predict the same class, right or wrong). Per student:
the gaps to its independent student, seed k against seed k, input by input, on each domain and
pooled over the domains the students never saw. Consensus on out-of-distribution renderings of
the test images (edge, sketch, silhouette) is measured the same way. The control is the
study's soft-label student (method ``soft_label``): generic soft targets, no teacher; the
student's effect beyond it is distilled − control consensus, paired by seed and input. Verdict on
the pooled unseen-domain consensus gap and on each rendering: the rule of
:func:`kdscope.verdicts.transfer` (equivalence margin ``margin``), with the paper's premise
(the distilled student more accurate than the independent one) stated.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_differences,
    control_students,
    correctness,
    per_group,
    premise,
    student_gaps,
    transfer_record,
)
from kdscope.property_transfer.adversarial import predict_labels
from kdscope.property_transfer.renderings import RENDERINGS, render
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.analyses.study_views import PerSeed
    from kdscope.study import StudyResult


def domain_names(study: StudyResult) -> dict[int, str]:
    """Domain index -> name, as the dataset names its ``domain`` tag's values (``tag_labels``:
    e.g. the ``shapes`` backgrounds), else ``domain k``."""
    test = study.data.test
    return {int(v): test.tag_label("domain", v) for v in sorted(set(test.tags["domain"].tolist()))}


def restrict(values: dict[str, PerSeed], mask: np.ndarray) -> dict[str, PerSeed]:
    """The per-input arrays of every group and seed, kept where ``mask`` is true."""
    return {g: {s: a[mask] for s, a in per.items()} for g, per in values.items()}


def compare(study: StudyResult, values: dict[str, PerSeed]) -> dict[str, Any]:
    """Summaries per group and the students' gaps to their independent students."""
    return {
        "groups": {g: summarise(v, shared_inputs=True) for g, v in values.items()},
        "gaps": student_gaps(study, values),
    }


@register_analysis
class DomainsAnalysis(Analysis):
    """Unseen domains: accuracy and consensus with the teacher on each test domain (the dataset's
    ``domain`` tag) when the teacher saw more domains than the students, and consensus on
    edge, sketch and silhouette renderings of the test images (docs/property_transfer.md).
    """

    name = "domains"
    title = "Unseen domains: accuracy and consensus with the teacher"

    def __init__(self, renderings: tuple[str, ...] = RENDERINGS, margin: float = 0.03) -> None:
        super().__init__()
        unknown = set(renderings) - set(RENDERINGS)
        if unknown:
            raise ValueError(f"renderings must be among {', '.join(RENDERINGS)}")
        if not margin > 0:
            raise ValueError("margin must be > 0")
        self.renderings, self.margin = tuple(renderings), margin

    def applies_to(self, study: StudyResult) -> str | None:
        tags = study.data.test.tags
        if "domain" not in tags or len(set(tags["domain"].tolist())) < 2:
            return "the test data carry fewer than two domains (tag 'domain')"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        test = study.data.test
        domain = test.tags["domain"].numpy()
        seen = sorted(set(study.student_data.train.tags["domain"].tolist()))
        teacher_seen = sorted(set(study.data.train.tags["domain"].tolist()))
        names = domain_names(study)
        t_pred = study.logits("teacher", study.config.teacher_seed).argmax(1)
        t_correct = (t_pred == test.labels).numpy()
        acc = {
            g.name: correctness(study, g.name) for g in study.groups.values() if g.role != "teacher"
        }
        consensus = {
            g: {s: (study.logits(g, s).argmax(1) == t_pred).numpy().astype(np.float64) for s in per}
            for g, per in acc.items()
        }
        domains = {}
        for d, name in names.items():
            mask = domain == d
            domains[name] = {
                "seen_by_students": d in seen,
                "seen_by_teacher": d in teacher_seen,
                "n_inputs": int(mask.sum()),
                "teacher_accuracy": float(t_correct[mask].mean()),
                "accuracy": compare(study, restrict(acc, mask)),
                "consensus": compare(study, restrict(consensus, mask)),
            }
        unseen = ~np.isin(domain, seen)
        pooled = None
        measured: dict[str, dict[str, PerSeed]] = {}  # consensus values behind each verdict
        if unseen.any():
            measured["unseen domains"] = restrict(consensus, unseen)
            pooled = {
                "domains": [names[d] for d in names if d not in seen],
                "accuracy": compare(study, restrict(acc, unseen)),
                "consensus": compare(study, measured["unseen domains"]),
            }
        rendered = {}
        for kind, values in self._renderings(study).items():
            measured[f"{kind} rendering"] = values
            rendered[kind] = compare(study, values)
        premises = premise(study)
        return {
            "student_domains": [names[d] for d in seen],
            "teacher_domains": [names[d] for d in teacher_seen],
            "domains": domains,
            "unseen": pooled,
            "renderings": rendered,
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {
                where: self._verdicts(study, values, premises) for where, values in measured.items()
            },
        }

    def _renderings(self, study: StudyResult) -> dict[str, dict[str, PerSeed]]:
        """Per rendering of the test images: every model's per-input consensus with the
        teacher."""
        test, out = study.data.test, {}
        for kind in self.renderings:
            x = render(test.inputs_at(), test.foreground, kind)
            t_pred = predict_labels(study.teacher_model, x)

            def agree(model: torch.nn.Module, x: torch.Tensor = x, t: torch.Tensor = t_pred):
                return (predict_labels(model, x) == t).numpy().astype(np.float64)

            out[kind] = per_group(study, agree)
        return out

    def _verdicts(
        self, study: StudyResult, values: dict[str, PerSeed], premises: dict[str, Any]
    ) -> dict[str, Any]:
        """A transfer record per distilled student: its consensus gap and its effect beyond
        each soft-label control."""
        controls = control_students(study)
        gaps = student_gaps(study, values)
        return {
            n: transfer_record(
                study,
                n,
                gap,
                control_differences(values, n, controls),
                self.margin,
                premises[n]["status"],
            )
            for n, gap in gaps.items()
            if n not in controls
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        parts = [
            f"<p>The teacher trained on domains {', '.join(result['teacher_domains'])}; the "
            f"students on {', '.join(result['student_domains'])}. Accuracy and consensus with "
            "the teacher (same predicted class, right or wrong) per test domain; gaps are "
            "student − independent student, seed k against seed k, input by input, mean [95 % "
            "t interval over seeds × inputs].</p>"
        ]
        domains = result["domains"]
        names = list(next(iter(domains.values()))["accuracy"]["groups"])
        for metric in ("accuracy", "consensus"):
            rows = []
            if metric == "accuracy":
                rows.append(
                    ["teacher"] + [f"{d['teacher_accuracy']:.3f}" for d in domains.values()]
                )
            rows += [
                [html.escape(n)] + [fmt_summary(d[metric]["groups"][n]) for d in domains.values()]
                for n in names
            ]
            heads = [
                f"{k} ({'seen' if d['seen_by_students'] else 'unseen'})" for k, d in domains.items()
            ]
            parts += [f"<h3>{metric.capitalize()} per domain</h3>", table(["model", *heads], rows)]
        parts += [
            "<h3>Consensus gaps and verdicts</h3>",
            premise_note(result["premise"]),
            verdict_table(result["verdicts"], "consensus gap vs independent", result["margin"]),
            _figure(result, names),
        ]
        return "\n".join(parts)


def _figure(result: dict[str, Any], names: list[str]) -> str:
    domains = result["domains"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    xs = np.arange(len(domains))
    width = 0.8 / max(len(names), 1)
    for ax, metric in zip(axes, ("accuracy", "consensus"), strict=True):
        for i, n in enumerate(names):
            means = [d[metric]["groups"][n]["mean"] for d in domains.values()]
            ax.bar(xs + (i - len(names) / 2 + 0.5) * width, means, width, label=n)
        ax.set_xticks(xs, list(domains), fontsize=8)
        ax.set(ylabel=metric, title=f"{metric} per test domain")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, "accuracy and consensus per domain")
