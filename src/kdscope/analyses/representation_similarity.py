"""Representation similarity (property-transfer spec §3.8): linear CKA between the teacher's and
each student's layers.

On ``n_inputs`` seeded test inputs, the full L_T × L_S matrix of linear CKA between the
teacher's layers (stages, ``conv``, ``fc1``, ``fc2``, logits: the model's named layers in
forward order) and each model's. The summary per model and seed is the **matched CKA**: the mean
CKA over the layers both models name alike (e.g. ``conv``, ``fc1``, ``fc2``, logits). Verdict
for a distilled student: **transfers** when its matched CKA exceeds its independent student's,
paired by seed with a 95 % bootstrap interval over seeds above 0; the control is the spread
between independent seeds (|Ind − Ind'|), reported beside it.

CKA is undefined (NaN) for a layer whose activations are constant over the inputs (a collapsed
or dead layer: zero centred norm). The matched CKA averages the defined layers only and lists the
undefined ones; a seed with no defined matched layer is left out of the paired difference.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import seed_pairs, test_subset
from kdscope.property_transfer.cka import cka_matrix, layer_activations
from kdscope.report import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def _defined(value: float) -> np.ndarray:
    """One value as a seed's inputs for :func:`summarise`; none when it is undefined (NaN)."""
    return np.array([value]) if np.isfinite(value) else np.array([])


def _nanmean(matrices: list[list[list[float]]]) -> np.ndarray:
    """Entry-wise mean over seeds of the defined values (NaN where no seed defines one)."""
    m = np.array(matrices, dtype=np.float64)
    n = np.isfinite(m).sum(0)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(m, 0) / np.maximum(n, 1), np.nan)


def named_layers(model: nn.Module) -> list[str]:
    """The model's named layers in forward order: its stages, diagnosable layers and
    penultimate role (logits are added by :func:`layer_activations`)."""
    names = [*getattr(model, "stage_names", []), *getattr(model, "diagnosable", ())]
    pen = getattr(model, "roles", {}).get("penultimate")
    if pen and not names:
        names.append(pen)
    return list(dict.fromkeys(names))


@register_analysis
class RepresentationSimilarityAnalysis(Analysis):
    name = "representation_similarity"
    title = "Representation similarity: linear CKA with the teacher"

    def __init__(self, n_inputs: int = 256, spatial_mean: bool = False, seed: int = 0) -> None:
        super().__init__()
        if n_inputs < 2:
            raise ValueError("n_inputs must be >= 2")
        self.n_inputs, self.spatial_mean, self.seed = n_inputs, spatial_mean, seed

    def _acts(self, model: nn.Module, x) -> dict[str, Any]:  # noqa: ANN001
        return layer_activations(model, x, named_layers(model), self.spatial_mean)

    def run(self, study: StudyResult) -> dict[str, Any]:
        x = study.data.test.inputs[test_subset(study, self.n_inputs, self.seed)]
        teacher = self._acts(study.teacher_model, x)
        groups: dict[str, Any] = {}
        matched: dict[str, dict[int, float]] = {}
        for g in study.groups.values():
            if g.role == "teacher":
                continue
            per_seed = {}
            for seed, run in sorted(g.runs.items()):
                acts = self._acts(run.load(), x)
                m = np.array(cka_matrix(teacher, acts))
                common = [k for k in acts if k in teacher]
                diag = [m[list(teacher).index(k), list(acts).index(k)] for k in common]
                defined = [v for v in diag if np.isfinite(v)]
                per_seed[seed] = {
                    "matrix": m.tolist(),
                    "matched": float(np.mean(defined)) if defined else float("nan"),
                    "matched_layers": dict(zip(common, map(float, diag), strict=True)),
                    "undefined_layers": [
                        k for k, v in zip(common, diag, strict=True) if not np.isfinite(v)
                    ],
                }
            matched[g.name] = {s: v["matched"] for s, v in per_seed.items()}
            first = per_seed[min(per_seed)]
            groups[g.name] = {
                "role": g.role,
                "layers": list(self._acts(g.runs[min(g.runs)].load(), x[:2])),
                "matrix_mean": _nanmean([v["matrix"] for v in per_seed.values()]).tolist(),
                "matched": summarise({s: _defined(v) for s, v in matched[g.name].items()}),
                "matched_layers": first["matched_layers"],
                "undefined_layers": {
                    str(s): v["undefined_layers"]
                    for s, v in per_seed.items()
                    if v["undefined_layers"]
                },
            }
        comparisons = {}
        for g in study.by_role("student"):
            ind = matched[g.baseline]
            diff = {s: _defined(matched[g.name][s] - ind[s]) for s in matched[g.name] if s in ind}
            pairs = seed_pairs(sorted(ind), sorted(ind), distinct=True)
            spread = [abs(ind[i] - ind[j]) for i, j in pairs]
            d = summarise(diff)
            comparisons[g.name] = {
                "independent": g.baseline,
                "difference": d,
                "control_ind_spread": float(np.mean(spread)) if spread else None,
                "verdict": "transfers" if d["ci95"][0] > 0 else "no transfer",
            }
        return {
            "n_inputs": len(x),
            "spatial_mean": self.spatial_mean,
            "teacher_layers": list(teacher),
            "groups": groups,
            "comparisons": comparisons,
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = [
            [html.escape(n), g["role"], fmt_summary(g["matched"])]
            for n, g in result["groups"].items()
        ]
        cmp_rows = [
            [
                html.escape(n),
                html.escape(c["independent"]),
                fmt_summary(c["difference"], sign=True),
                "–" if c["control_ind_spread"] is None else f"{c['control_ind_spread']:.3f}",
                f"<span class='{'better' if c['verdict'] == 'transfers' else 'inconclusive'}'>"
                f"{c['verdict']}</span>",
            ]
            for n, c in result["comparisons"].items()
        ]
        return (
            f"<p>Linear CKA on {result['n_inputs']} test inputs, maps "
            + ("spatially averaged" if result["spatial_mean"] else "flattened")
            + ". Matched CKA: mean over the layers teacher and model name alike; mean over seeds "
            "[95 % bootstrap interval over seeds].</p>"
            + table(["model", "role", "matched CKA with the teacher"], rows)
            + "<h3>Distilled − independent (paired by seed)</h3>"
            + table(
                [
                    "student",
                    "independent",
                    "matched CKA difference",
                    "control: mean |Ind − Ind'|",
                    "verdict",
                ],
                cmp_rows,
            )
            + _heatmaps(result)
        )


def _heatmaps(result: dict[str, Any]) -> str:
    groups = result["groups"]
    n = len(groups)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    t_layers = result["teacher_layers"]
    for ax, (name, g) in zip(axes.flat, groups.items(), strict=False):
        ax.imshow(np.array(g["matrix_mean"]), vmin=0, vmax=1, cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_yticks(range(len(t_layers)), t_layers, fontsize=6)
        ax.set_xticks(range(len(g["layers"])), g["layers"], fontsize=6, rotation=90)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("CKA: teacher layers (rows) × model layers (columns), seed mean", fontsize=9)
    fig.tight_layout()
    return figure_html(fig, "CKA matrices")
