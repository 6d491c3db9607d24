"""Representation similarity (Ojha et al. 2023, representation similarity): linear CKA between the
teacher's and each student's layers.

On ``n_inputs`` seeded test inputs, the full L_T × L_S matrix of linear CKA between the
teacher's layers (stages, ``conv``, ``fc1``, ``fc2``, logits: the model's named layers in
forward order) and each model's, with both estimators of :mod:`kdscope.property_transfer.representation_similarity`:
the **biased** plug-in CKA and the **debiased** CKA (unbiased HSIC). Flattened convolutional
maps have far more features than inputs, where the biased estimator is pulled toward 1 whatever
the representations (0.89 for independent random features, 2,048 of them on 256 inputs); the
debiased one stays near 0 there. ``estimator``: ``auto`` (the default) uses the debiased
estimator when any compared layer has more features than inputs and the biased one otherwise;
``debiased`` / ``biased`` force one. The result and the report state the choice; both are
reported.

The summary per model and seed is the **matched CKA**: the mean CKA over the layers both models
name alike (e.g. ``conv``, ``fc1``, ``fc2``, logits). Verdict per distilled student S, with the
chosen estimator, one value per seed (seeds only; the inputs are the same for every seed, but
CKA is not a mean over inputs):

* gap: m_S(k) − m_Ind(k), seed k against seed k, summarised over seeds (t interval);
* the student's effect beyond each soft-label control C (``Method.role == "control"``):
  m_S(k) − m_C(k), paired by seed;
* the rule of :func:`kdscope.verdicts.transfer` with equivalence margin ``margin`` (on the CKA
  scale, default 0.03) and the paper's premise (S more accurate than Ind) stated.

The spread between independent seeds (mean |m_Ind(i) − m_Ind(j)| over pairs i < j) is reported
as a descriptive sanity number.

CKA is undefined (NaN) for a layer whose activations are constant over the inputs (a collapsed
or dead layer: zero centred Gram matrix). The matched CKA averages the defined layers only and
lists the undefined ones per seed; a seed with no defined matched layer is left out of every
summary and listed under ``undefined_seeds``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_students,
    premise,
    seed_pairs,
    test_subset,
    transfer_record,
)
from kdscope.property_transfer.representation_similarity import (
    ESTIMATORS,
    Estimator,
    LayerGrams,
    cka_matrix,
    layer_activations,
    layer_grams,
)
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult

WHAT = "representation similarity (matched CKA)"


def seed_summary(values: dict[int, float]) -> dict[str, Any]:
    """:func:`kdscope.stats.summarise` of one value per seed; a seed whose value is undefined
    (NaN) is left out of the mean and the interval and listed under ``undefined_seeds``."""
    out = summarise({s: np.array([v] if np.isfinite(v) else []) for s, v in values.items()})
    undefined = sorted(s for s, v in values.items() if not np.isfinite(v))
    if undefined:
        out["undefined_seeds"] = undefined
    return out


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


def matched_cka(
    teacher: dict[str, LayerGrams], model: dict[str, LayerGrams], estimator: Estimator
) -> dict[str, Any]:
    """The T × model CKA matrix, the CKA of each layer both name alike, their mean over the
    defined ones (NaN when none is defined) and the undefined ones."""
    m = np.array(cka_matrix(teacher, model, estimator))
    common = [k for k in model if k in teacher]
    diag = {k: float(m[list(teacher).index(k), list(model).index(k)]) for k in common}
    defined = [v for v in diag.values() if np.isfinite(v)]
    return {
        "matrix": m.tolist(),
        "matched": float(np.mean(defined)) if defined else float("nan"),
        "matched_layers": diag,
        "undefined_layers": [k for k, v in diag.items() if not np.isfinite(v)],
    }


@register_analysis
class RepresentationSimilarityAnalysis(Analysis):
    """Representation similarity to the teacher: the teacher × model linear-CKA matrix over
    layers and the matched-layer CKA, distilled − independent paired by seed, against the
    soft-label control; debiased CKA where a layer has more features than inputs
    (docs/property_transfer.md).
    """

    name = "representation_similarity"
    reads_teacher_layers = True
    title = "Representation similarity: linear CKA with the teacher"

    def __init__(
        self,
        n_inputs: int = 256,
        spatial_mean: bool = False,
        estimator: str = "auto",
        margin: float = 0.03,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if n_inputs < 4:
            raise ValueError("n_inputs must be >= 4 (the debiased estimator needs 4 inputs)")
        if estimator not in ("auto", *ESTIMATORS):
            raise ValueError("estimator must be auto, debiased or biased")
        if not margin > 0:
            raise ValueError("margin must be > 0")
        self.n_inputs, self.spatial_mean, self.seed = n_inputs, spatial_mean, seed
        self.estimator, self.margin = estimator, margin

    def _grams(self, model: nn.Module, x: Tensor) -> dict[str, LayerGrams]:
        return layer_grams(layer_activations(model, x, named_layers(model), self.spatial_mean))

    def run(self, study: StudyResult) -> dict[str, Any]:
        x = study.data.test.inputs_at(test_subset(study, self.n_inputs, self.seed))
        teacher = self._grams(study.teacher_model, x)
        widest = max(v.width for v in teacher.values())
        per_model: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}  # group, seed, estimator
        layers: dict[str, list[str]] = {}
        for g in study.groups.values():
            if g.role == "teacher":
                continue
            per_model[g.name] = {}
            for seed, run in sorted(g.runs.items()):
                grams = self._grams(run.load(), x)
                widest = max(widest, *(v.width for v in grams.values()))
                layers[g.name] = list(grams)
                per_model[g.name][seed] = {e: matched_cka(teacher, grams, e) for e in ESTIMATORS}
        auto_debiased = self.estimator == "auto" and widest > len(x)
        chosen: Estimator = (
            "debiased" if self.estimator == "debiased" or auto_debiased else "biased"
        )
        matched = {
            e: {n: {s: v[e]["matched"] for s, v in per.items()} for n, per in per_model.items()}
            for e in ESTIMATORS
        }
        groups = {
            n: {
                "role": study.groups[n].role,
                "layers": layers[n],
                "matched": {e: seed_summary(matched[e][n]) for e in ESTIMATORS},
                "matrix_mean": {
                    e: _nanmean([v[e]["matrix"] for v in per.values()]).tolist() for e in ESTIMATORS
                },
                "matched_layers": {e: per[min(per)][e]["matched_layers"] for e in ESTIMATORS},
                "undefined_layers": {
                    str(s): v[chosen]["undefined_layers"]
                    for s, v in per.items()
                    if v[chosen]["undefined_layers"]
                },
            }
            for n, per in per_model.items()
        }
        controls = control_students(study)
        premises = premise(study)
        comparisons, records = {}, {}
        for g in study.by_role("student"):
            ind = g.baseline or ""
            diff = {e: self._difference(matched[e], g.name, ind) for e in ESTIMATORS}
            m_ind = matched[chosen][ind]
            spread = [
                abs(m_ind[i] - m_ind[j])
                for i, j in seed_pairs(sorted(m_ind), sorted(m_ind), distinct=True)
                if np.isfinite(m_ind[i] - m_ind[j])
            ]
            comparisons[g.name] = {
                "independent": ind,
                "difference": diff,
                "independent_spread": float(np.mean(spread)) if spread else None,
            }
            if g.name not in controls:
                records[g.name] = transfer_record(
                    study,
                    g.name,
                    diff[chosen],
                    {c: self._difference(matched[chosen], g.name, c) for c in controls},
                    self.margin,
                    premises[g.name]["status"],
                )
        return {
            "n_inputs": len(x),
            "spatial_mean": self.spatial_mean,
            "estimator": chosen,
            "estimator_requested": self.estimator,
            "widest_layer": widest,
            "teacher_layers": list(teacher),
            "groups": groups,
            "comparisons": comparisons,
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {WHAT: records},
        }

    @staticmethod
    def _difference(matched: dict[str, dict[int, float]], a: str, b: str) -> dict[str, Any]:
        """Summary over seeds of m_a(k) − m_b(k), seed k against seed k."""
        return seed_summary(
            {s: v - matched[b][s] for s, v in matched[a].items() if s in matched[b]}
        )

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        chosen = result["estimator"]
        other = "biased" if chosen == "debiased" else "debiased"
        why = (
            f"chosen automatically: the widest compared layer has {result['widest_layer']:,} "
            f"features {'>' if chosen == 'debiased' else '≤'} {result['n_inputs']} inputs"
            if result["estimator_requested"] == "auto"
            else "as configured"
        )
        rows = [
            [
                html.escape(n),
                g["role"],
                fmt_summary(g["matched"][chosen]),
                fmt_summary(g["matched"][other]),
                "; ".join(
                    f"seed {s}: {', '.join(map(html.escape, ls))}"
                    for s, ls in g["undefined_layers"].items()
                )
                or "none",
            ]
            for n, g in result["groups"].items()
        ]
        cmp_rows = [
            [
                html.escape(n),
                html.escape(c["independent"]),
                fmt_summary(c["difference"][other], sign=True),
                "–" if c["independent_spread"] is None else f"{c['independent_spread']:.3f}",
            ]
            for n, c in result["comparisons"].items()
        ]
        return (
            f"<p>Linear CKA on {result['n_inputs']} test inputs, maps "
            + ("spatially averaged" if result["spatial_mean"] else "flattened")
            + f". Estimator for the verdicts: <b>{chosen}</b> ({why}). The biased estimator is "
            "pulled toward 1 when features outnumber inputs (0.89 for independent random "
            "features, 2,048 of them on 256 inputs); the debiased one (unbiased HSIC) stays near "
            "0 there. Matched CKA: mean over the layers teacher and model name alike; mean over "
            "seeds [95 % t interval over seeds]. Layers whose activations are constant over the "
            "inputs have no CKA and are left out of the mean.</p>"
            + table(
                [
                    "model",
                    "role",
                    f"matched CKA ({chosen})",
                    f"matched CKA ({other})",
                    "undefined layers",
                ],
                rows,
            )
            + "<h3>Matched CKA gaps and verdicts</h3>"
            + premise_note(result["premise"])
            + verdict_table(
                result["verdicts"],
                f"matched CKA − independent ({chosen}, one value per seed)",
                result["margin"],
            )
            + "<h3>The other estimator, and independent seeds</h3>"
            + table(
                [
                    "student",
                    "independent",
                    f"matched CKA − independent ({other})",
                    f"mean |Ind − Ind'| ({chosen})",
                ],
                cmp_rows,
            )
            + _heatmaps(result)
        )


def _heatmaps(result: dict[str, Any]) -> str:
    groups, chosen = result["groups"], result["estimator"]
    n = len(groups)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    t_layers = result["teacher_layers"]
    for ax, (name, g) in zip(axes.flat, groups.items(), strict=False):
        ax.imshow(np.array(g["matrix_mean"][chosen]), vmin=0, vmax=1, cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_yticks(range(len(t_layers)), t_layers, fontsize=6)
        ax.set_xticks(range(len(g["layers"])), g["layers"], fontsize=6, rotation=90)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(
        f"{chosen} CKA: teacher layers (rows) × model layers (columns), seed mean (below 0 shown "
        "as 0)",
        fontsize=9,
    )
    fig.tight_layout()
    return figure_html(fig, "CKA matrices")
