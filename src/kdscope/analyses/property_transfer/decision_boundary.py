"""Decision-boundary similarity (Ojha et al. 2023, the dbViz method): do a distilled
student's decision regions coincide with the teacher's more than an independent student's do?

Per test domain (the dataset's ``domain`` tag, else the whole test split): ``triplets`` random
test inputs with pairwise distinct labels span planes; on each plane an R × R grid (R =
``resolution``, margin 0.1 of each axis' extent, not clipped to [0, 1] unless ``clip``) is
classified by every model. Similarity of two models = the fraction of grid points where their
predictions agree, per triplet. Per student: similarity to the teacher − its independent
student's, seed k against seed k, paired triplet by triplet (the same planes for every model).
Controls: the similarity of two independent students of different seeds (how alike two
boundaries are without a teacher; descriptive), and the study's soft-label student: the
student's effect beyond it is distilled − control similarity to the teacher, paired by seed and
plane. Verdict per student and domain: the rule of :func:`kdscope.verdicts.transfer`
(equivalence margin ``margin``); the paper's claim, and so ``verdicts``, covers the domains the
students never saw when the data have several, else the whole test split.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.property_transfer.domains import domain_names
from kdscope.analyses.study_views import (
    control_differences,
    control_students,
    premise,
    seed_pairs,
    student_gaps,
    transfer_record,
)
from kdscope.property_transfer.decision_boundary import (
    boundary_similarity,
    plane_predictions,
    planes_from_triplets,
    sample_triplets,
)
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from torch import nn

    from kdscope.study import StudyResult


@register_analysis
class DecisionBoundaryAnalysis(Analysis):
    """Decision-boundary similarity to the teacher on planes through triplets of test inputs with
    three distinct labels: the fraction of grid points where a model and the teacher predict the
    same class, distilled against independent and the soft-label control, with a figure of one
    plane (docs/property_transfer.md).
    """

    name = "decision_boundary"
    title = "Decision boundaries: similarity to the teacher on planes through input triplets"

    def __init__(
        self,
        triplets: int = 50,
        resolution: int = 50,
        margin: float = 0.1,
        clip: bool = False,
        equivalence_margin: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if triplets < 1 or resolution < 2 or margin < 0 or not equivalence_margin > 0:
            raise ValueError(
                "triplets must be >= 1, resolution >= 2, margin >= 0 and equivalence_margin > 0"
            )
        self.triplets, self.resolution, self.margin = triplets, resolution, margin
        self.clip, self.seed, self.equivalence_margin = clip, seed, equivalence_margin

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.test.num_classes < 3:
            return "triplets with three distinct labels need at least three classes"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        test = study.data.test
        out: dict[str, Any] = {}
        premises = premise(study)
        if "domain" not in test.tags:
            out["all"] = self._domain(study, torch.arange(len(test)), premises)
        seen = set(study.student_data.train.tags.get("domain", torch.empty(0)).tolist())
        for d, name in (domain_names(study) if "domain" in test.tags else {}).items():
            idx = torch.nonzero(test.tags["domain"] == d).flatten()
            out[name] = self._domain(study, idx, premises)
            out[name]["seen_by_students"] = d in seen
        claimed = {n: d for n, d in out.items() if not (d.get("seen_by_students") and len(out) > 1)}
        return {
            "triplets": self.triplets,
            "resolution": self.resolution,
            "margin": self.margin,
            "clip": self.clip,
            "equivalence_margin": self.equivalence_margin,
            "premise": {n: p["status"] for n, p in premises.items()},
            "domains": out,
            "verdicts": {f"boundary similarity, {n}": d["records"] for n, d in claimed.items()},
        }

    def _domain(
        self, study: StudyResult, idx: torch.Tensor, premises: dict[str, Any]
    ) -> dict[str, Any]:
        test = study.data.test
        gen = torch.Generator().manual_seed(self.seed)
        trip = idx[sample_triplets(test.labels[idx], self.triplets, gen)]
        planes = planes_from_triplets(test.inputs_at(), trip, self.resolution, self.margin)

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
                per_pair = {
                    f"{i}-{j}": float(boundary_similarity(ind[i], ind[j]).mean()) for i, j in pairs
                }
                controls[g.baseline] = (
                    {"mean": float(np.mean(list(per_pair.values()))), "per_pair": per_pair}
                    if pairs
                    else None
                )
        soft = control_students(study)
        records = {
            n: transfer_record(
                study,
                n,
                gap,
                control_differences(sims, n, soft),
                self.equivalence_margin,
                premises[n]["status"],
            )
            for n, gap in gaps.items()
            if n not in soft
        }
        first = {n: per[min(per)][0].tolist() for n, per in preds.items()}
        return {
            "n_inputs": len(idx),
            "groups": {n: summarise(v, shared_inputs=True) for n, v in sims.items()},
            "gaps": gaps,
            "independent_pairs": controls,
            "records": records,
            "example_plane": {"teacher": t_pred[0].tolist(), **first},
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        parts = [
            f"<p>{result['triplets']} planes per domain through test-input triplets with three "
            f"distinct labels, a {result['resolution']} × {result['resolution']} grid on each "
            f"(margin {result['margin']}, {'clipped to [0, 1]' if result['clip'] else 'not clipped'}"
            "). Similarity = fraction of grid points where two models predict the same class. "
            "Gaps: similarity to the teacher − the independent student's, seed k against seed k, "
            "paired by plane; mean [95 % t interval over seeds × planes]. Verdicts for the "
            "paper's claim: "
            + (", ".join(html.escape(k) for k in result["verdicts"]) or "none")
            + ".</p>"
        ]
        parts.append(premise_note(result["premise"]))
        for name, d in result["domains"].items():
            tag = ""
            if "seen_by_students" in d:
                tag = " (seen by the students)" if d["seen_by_students"] else " (unseen)"
            rows = [[html.escape(n), fmt_summary(s)] for n, s in d["groups"].items()]
            pairs = "; ".join(
                f"{html.escape(n)} vs {html.escape(n)}': {c['mean']:.3f}"
                for n, c in d["independent_pairs"].items()
                if c
            )
            parts += [
                f"<h3>Domain {html.escape(name)}{tag}</h3>",
                table(["model", "similarity to the teacher"], rows),
                f"<p class='note'>Two independent students of different seeds agree on "
                f"{pairs or 'n/a (one seed)'} of the grid (descriptive).</p>",
                verdict_table(
                    {name: d["records"]}, "gap vs independent", result["equivalence_margin"]
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
