"""Decision-boundary similarity (property-transfer spec §3.7, the dbViz method): do a distilled
student's decision regions coincide with the teacher's more than an independent student's do?

Per test domain (the dataset's ``domain`` tag, else the whole test split): ``triplets`` random
test inputs with pairwise distinct labels span planes; on each plane an R × R grid (R =
``resolution``, margin 0.1 of each axis' extent, not clipped to [0, 1] unless ``clip``) is
classified by every model. Similarity of two models = the fraction of grid points where their
predictions agree, per triplet. Per student: similarity to the teacher − its independent
student's, seed k against seed k, paired triplet by triplet. Controls: the similarity of two
independent students of different seeds (how alike two boundaries are without a teacher), and the
study's soft-label student. Verdict per student and domain: the rule of
:func:`kdscope.analyses.study_views.transfer_verdict`.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.domains import domain_names
from kdscope.analyses.study_views import (
    control_students,
    seed_pairs,
    student_gaps,
    transfer_verdict,
)
from kdscope.property_transfer.boundary import (
    boundary_similarity,
    plane_predictions,
    planes_from_triplets,
    sample_triplets,
)
from kdscope.report import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from torch import nn

    from kdscope.study import StudyResult


@register_analysis
class DecisionBoundaryAnalysis(Analysis):
    name = "decision_boundary"
    title = "Decision boundaries: similarity to the teacher on planes through input triplets"

    def __init__(
        self,
        triplets: int = 50,
        resolution: int = 50,
        margin: float = 0.1,
        clip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if triplets < 1 or resolution < 2 or margin < 0:
            raise ValueError("triplets must be >= 1, resolution >= 2 and margin >= 0")
        self.triplets, self.resolution, self.margin = triplets, resolution, margin
        self.clip, self.seed = clip, seed

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.test.num_classes < 3:
            return "triplets with three distinct labels need at least three classes"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        test = study.data.test
        out: dict[str, Any] = {}
        if "domain" not in test.tags:
            out["all"] = self._domain(study, torch.arange(len(test)))
        seen = set(study.student_data.train.tags.get("domain", torch.empty(0)).tolist())
        for d, name in (domain_names(study) if "domain" in test.tags else {}).items():
            out[name] = self._domain(study, torch.nonzero(test.tags["domain"] == d).flatten())
            out[name]["seen_by_students"] = d in seen
        return {
            "triplets": self.triplets,
            "resolution": self.resolution,
            "margin": self.margin,
            "clip": self.clip,
            "domains": out,
        }

    def _domain(self, study: StudyResult, idx: torch.Tensor) -> dict[str, Any]:
        test = study.data.test
        gen = torch.Generator().manual_seed(self.seed)
        trip = idx[sample_triplets(test.labels[idx], self.triplets, gen)]
        planes = planes_from_triplets(test.inputs, trip, self.resolution, self.margin)

        def predict(model: nn.Module) -> torch.Tensor:
            return plane_predictions(model, planes, clip=self.clip)

        t_pred = predict(study.teacher_model)
        preds: dict[str, dict[int, torch.Tensor]] = {}

        sims: dict[str, dict[int, np.ndarray]] = {}
        for g in study.groups.values():
            if g.role == "teacher":
                continue
            for seed, run in sorted(g.runs.items()):
                p = predict(run.load())
                preds.setdefault(g.name, {})[seed] = p
                sims.setdefault(g.name, {})[seed] = boundary_similarity(t_pred, p).numpy()
        gaps = student_gaps(study, sims)
        controls: dict[str, Any] = {}
        for g in study.by_role("student"):
            ind = preds[g.baseline]
            if g.baseline not in controls:
                pairs = seed_pairs(sorted(ind), sorted(ind), distinct=True)
                controls[g.baseline] = (
                    summarise(
                        {
                            n: boundary_similarity(ind[i], ind[j]).numpy()
                            for n, (i, j) in enumerate(pairs)
                        }
                    )
                    if pairs
                    else None
                )
        soft = control_students(study)
        control = next((gaps[c] for c in soft if c in gaps), None)
        verdicts = {
            n: ("control" if n in soft else transfer_verdict(gap, control))
            for n, gap in gaps.items()
        }
        first = {n: per[min(per)][0].tolist() for n, per in preds.items()}
        return {
            "n_inputs": len(idx),
            "groups": {n: summarise(v) for n, v in sims.items()},
            "gaps": gaps,
            "independent_pairs": controls,
            "verdicts": verdicts,
            "example_plane": {"teacher": t_pred[0].tolist(), **first},
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        parts = [
            f"<p>{result['triplets']} planes per domain through test-input triplets with three "
            f"distinct labels, a {result['resolution']} × {result['resolution']} grid on each "
            f"(margin {result['margin']}, {'clipped to [0, 1]' if result['clip'] else 'not clipped'}"
            "). Similarity = fraction of grid points where two models predict the same class. "
            "Gaps: similarity to the teacher − the independent student's, seed k against seed k, "
            "paired by plane; mean [95 % hierarchical-bootstrap interval].</p>"
        ]
        for name, d in result["domains"].items():
            tag = ""
            if "seen_by_students" in d:
                tag = " (seen by the students)" if d["seen_by_students"] else " (unseen)"
            rows = [[html.escape(n), fmt_summary(s)] for n, s in d["groups"].items()]
            gap_rows = [
                [
                    html.escape(n),
                    fmt_summary(g, sign=True),
                    fmt_summary(d["independent_pairs"].get(study.groups[n].baseline or ""))
                    if d["independent_pairs"].get(study.groups[n].baseline or "")
                    else "one seed",
                    f"<b>{d['verdicts'][n]}</b>",
                ]
                for n, g in d["gaps"].items()
            ]
            parts += [
                f"<h3>Domain {html.escape(name)}{tag}</h3>",
                table(["model", "similarity to the teacher"], rows),
                table(
                    ["student", "gap vs independent", "independent vs independent'", "verdict"],
                    gap_rows,
                ),
                _figure(name, d["example_plane"], result["resolution"]),
            ]
        return "\n".join(parts)


def _figure(domain: str, maps: dict[str, list[int]], resolution: int) -> str:
    names = list(maps)
    fig, axes = plt.subplots(1, len(names), figsize=(2.0 * len(names), 2.3))
    axes = np.atleast_1d(axes)
    for ax, n in zip(axes, names, strict=True):
        ax.imshow(
            np.array(maps[n]).reshape(resolution, resolution),
            cmap="tab10",
            vmin=0,
            vmax=9,
            origin="lower",
            interpolation="nearest",
        )
        ax.set_title(n, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"Predicted class on one plane, domain {domain}", fontsize=8)
    fig.tight_layout()
    return figure_html(fig, f"decision regions, domain {domain}")
