"""The teacher's soft-label structure across temperatures (docs/three_levels.md).

For τ in ``temperatures``, on the students' training data (the transfer set), with ρ^τ the
teacher's tempered softmax:

* class-mean matrix M^τ (row g = mean of ρ^τ(x) over class g): hierarchy score and Pearson
  correlation of its off-diagonal entries with the same-superclass indicator;
* class–class correlation matrix R^τ_ij = corr_x(ρ^τ_i(x), ρ^τ_j(x)) and its hierarchy score
  (the view of the paper's observation: at high τ same-superclass classes correlate);
* relational mass (share of the non-ground-truth mass on same-superclass classes), its chance
  level (s − 1)/(K − 1) and the relational excess (mass − chance)/(1 − chance);
* tail concentration (no hierarchy needed): normalised entropy of the non-GT part and its top-5
  mass; and the mean non-GT mass 1 − ρ^τ_g.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import split_labels, superclass, teacher_logits
from kdscope.render import figure_html, plt, table
from kdscope.teacher_knowledge.class_geometry import hierarchy_score
from kdscope.teacher_knowledge.rescaling import softmax
from kdscope.teacher_knowledge.soft_labels import (
    class_correlation,
    class_mean_matrix,
    non_gt_mass,
    offdiag_hierarchy,
    relational_mass,
    tail_concentration,
)

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def soft_label_structure(
    logits: np.ndarray, labels: np.ndarray, tau: float, sup: np.ndarray | None
) -> dict[str, Any]:
    """All soft-label measures of one teacher at one temperature (matrices included)."""
    k = logits.shape[1]
    rho = softmax(logits, tau)
    m = class_mean_matrix(rho, labels, k)
    r = class_correlation(rho)
    out: dict[str, Any] = {
        "tau": tau,
        "non_gt_mass": non_gt_mass(rho, labels),
        "tail": tail_concentration(rho, labels),
        "M": np.nan_to_num(m).tolist(),
        "R": r.tolist(),
    }
    if sup is not None:
        out["M_offdiag"] = offdiag_hierarchy(m, sup)
        out["R_hierarchy_score"] = float(hierarchy_score(r, sup))
        out["relational"] = relational_mass(rho, labels, sup)
    return out


@register_analysis
class SoftLabelAnalysis(Analysis):
    """The domain knowledge the teacher's soft labels carry, before any student sees them: its
    class-mean matrix M^τ and class-class correlation R^τ at temperatures 1, 2, 4 and 8, with
    hierarchy scores, relational mass and excess, tail entropy and top-5 mass
    (docs/three_levels.md).
    """

    name = "soft_labels"
    title = "Domain knowledge in the teacher's soft labels, across temperatures"

    def __init__(self, temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)) -> None:
        super().__init__()
        if not temperatures or any(t <= 0 for t in temperatures):
            raise ValueError("temperatures must be positive")
        self.temperatures = tuple(float(t) for t in temperatures)

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.train.task == "span":
            return (
                "class-relation matrices need named classes; the classes of extractive QA are "
                "its L² answer spans"
            )
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        v = teacher_logits(study, "train")
        y = split_labels(study, "train")
        sup = superclass(study)
        return {
            "n_train": len(y),
            "hierarchy": sup is not None,
            "temperatures": {str(t): soft_label_structure(v, y, t, sup) for t in self.temperatures},
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        temps = result["temperatures"]
        hier = result["hierarchy"]
        rows = []
        for t, s in temps.items():
            row = [
                t,
                f"{s['non_gt_mass']:.3f}",
                f"{s['tail']['normalised_entropy']:.3f}",
                f"{s['tail']['top5_mass']:.3f}",
            ]
            if hier:
                rel = s["relational"]
                row += [
                    f"{rel['mass']:.3f} (chance {rel['chance']:.3f})",
                    f"{rel['excess']:+.3f}",
                    f"{s['M_offdiag']['score']:+.4f}",
                    f"{s['M_offdiag']['pearson']:+.3f}",
                    f"{s['R_hierarchy_score']:+.3f}",
                ]
            rows.append(row)
        headers = ["τ", "non-GT mass", "tail entropy (normalised)", "tail top-5 mass"]
        if hier:
            headers += [
                "relational mass",
                "relational excess",
                "M^τ hierarchy score",
                "corr(M^τ off-diag, same superclass)",
                "R^τ hierarchy score",
            ]
        note = (
            ""
            if hier
            else "<p class='note'>The dataset declares no class hierarchy: only the "
            "hierarchy-free measures are shown.</p>"
        )
        return (
            f"<p>The teacher's tempered soft labels ρ^τ on the {result['n_train']} transfer "
            "inputs. M^τ: class-mean soft label per true class; R^τ: correlation over inputs "
            "between two classes' probabilities. Hierarchy score = mean over same-superclass "
            "pairs − mean over cross-superclass pairs (diagonal excluded).</p>"
            + note
            + table(headers, rows)
            + _heatmaps(temps)
        )


def _heatmaps(temps: dict[str, Any]) -> str:
    n = len(temps)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.2), squeeze=False)
    for j, (t, s) in enumerate(temps.items()):
        m = np.array(s["M"])
        off = m[~np.eye(len(m), dtype=bool)]
        axes[0, j].imshow(
            np.where(np.eye(len(m), dtype=bool), np.nan, m),
            cmap="viridis",
            vmin=float(off.min()),
            vmax=float(off.max()),
        )
        axes[0, j].set_title(f"M^τ off-diagonal, τ={t}", fontsize=9)
        axes[1, j].imshow(np.array(s["R"]), cmap="RdBu_r", vmin=-1, vmax=1)
        axes[1, j].set_title(f"R^τ, τ={t}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_html(fig, "teacher soft-label structure")
