"""Shape versus texture bias (Ojha et al. 2023, shape bias): does a student inherit how much its
teacher decides by an object's shape rather than its texture?

Cue-conflict inputs come from the dataset's own generator: the study's test split rendered again
with ``object_texture="conflict"`` (same seed, so the same objects; each object's texture is that
of another class, tag ``texture``). Among a model's predictions that match one of the two cues,

    shape_bias = #(prediction = shape class) / (#shape + #texture decisions);

predictions matching neither are excluded and their fraction reported. Per student: shape bias −
its independent student's, seed k against seed k, on the same cue-conflict inputs (a t interval
over seeds × inputs, the ratio's input part from jackknife pseudo-values). Teacher-ward is the
sign of (teacher − mean independent); the control is the study's soft-label student (the
student's effect beyond it: distilled − control shape bias, paired likewise). Verdict: the rule
of :func:`kdscope.verdicts.transfer` on the teacher-ward gap (equivalence margin ``margin``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_students,
    oriented,
    per_group,
    premise,
    transfer_record,
)
from kdscope.datasets import build as build_dataset
from kdscope.property_transfer.adversarial import predict_labels
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import safe_divide, summarise

if TYPE_CHECKING:
    from torch import Tensor, nn

    from kdscope.study import StudyResult

TEXTURED = ("class", "random")  # dataset settings whose objects carry a texture cue


def cue_decisions(pred: Tensor, shape: Tensor, texture: Tensor) -> np.ndarray:
    """(n, 2) float: column 0 = the prediction is the shape class, 1 = it is the texture class."""
    return np.stack([(pred == shape).numpy(), (pred == texture).numpy()], 1).astype(np.float64)


def shape_bias(rows: np.ndarray) -> np.ndarray:
    """Shape bias of cue-decision rows (..., I, 2): Σ shape / (Σ shape + Σ texture), NaN when no
    prediction matches either cue. Also the statistic given to :func:`summarise`."""
    s, t = rows[..., 0].sum(-1), rows[..., 1].sum(-1)
    return safe_divide(s, s + t, np.nan)


def shape_bias_gap(rows: np.ndarray) -> np.ndarray:
    """shape_bias(student) − shape_bias(independent) of paired rows (..., I, 4)."""
    return shape_bias(rows[..., :2]) - shape_bias(rows[..., 2:])


def _gap(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    """Summary of shape_bias(a) − shape_bias(b), seed k against seed k, on the shared inputs."""
    pairs = {s: np.concatenate([r, b[s]], 1) for s, r in a.items() if s in b}
    return summarise(pairs, statistic=shape_bias_gap, shared_inputs=True)


@register_analysis
class ShapeBiasAnalysis(Analysis):
    """Shape bias on cue-conflict inputs (each test object rendered with another class's texture):
    shape decisions / (shape + texture decisions) per model, and each student's gap toward the
    teacher against its independent student and the soft-label control
    (docs/property_transfer.md).
    """

    name = "shape_bias"
    title = "Shape vs texture: does the student decide by shape like its teacher?"

    def __init__(self, margin: float = 0.05) -> None:
        super().__init__()
        if not margin > 0:
            raise ValueError("margin must be > 0")
        self.margin = margin

    def applies_to(self, study: StudyResult) -> str | None:
        params = study.config.dataset.params
        if study.config.dataset.name != "shapes" or params.get("object_texture") not in TEXTURED:
            return (
                "cue-conflict inputs need the shapes dataset with textured objects "
                "(object_texture: class or random)"
            )
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        cfg = study.config.dataset
        conflict = build_dataset(
            cfg.name,
            **{**cfg.params, "object_texture": "conflict", "stylized": 0.0, "n_train": 1},
        ).test
        x, shape, texture = conflict.inputs_at(), conflict.labels, conflict.tags["texture"]

        def decide(model: nn.Module) -> np.ndarray:
            return cue_decisions(predict_labels(model, x), shape, texture)

        teacher = decide(study.teacher_model)
        rows = per_group(study, decide)
        groups = {
            n: {
                "shape_bias": summarise(v, statistic=shape_bias, shared_inputs=True),
                "neither": float(np.mean([1 - r.sum(1).mean() for r in v.values()])),
            }
            for n, v in rows.items()
        }
        t_bias = float(shape_bias(teacher))
        controls = control_students(study)
        ind_mean = np.mean(
            [groups[g.baseline]["shape_bias"]["mean"] for g in study.by_role("student")]
        )
        toward = float(np.sign(t_bias - ind_mean)) or 1.0
        premises = premise(study)
        students: dict[str, Any] = {}
        for g in study.by_role("student"):
            gap = _gap(rows[g.name], rows[g.baseline])
            students[g.name] = {"independent": g.baseline, "gap": gap}
            if g.name in controls:
                continue
            beyond = {c: oriented(_gap(rows[g.name], rows[c]), toward) for c in controls}
            students[g.name]["record"] = transfer_record(
                study,
                g.name,
                oriented(gap, toward),
                {c: d for c, d in beyond.items() if d is not None},
                self.margin,
                premises[g.name]["status"],
            )
        return {
            "n_inputs": len(x),
            "teacher": {"shape_bias": t_bias, "neither": float(1 - teacher.sum(1).mean())},
            "teacher_ward": "higher" if toward > 0 else "lower",
            "groups": groups,
            "students": students,
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {
                "shape bias": {n: s["record"] for n, s in students.items() if "record" in s}
            },
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        t = result["teacher"]
        rows = [["teacher", f"{t['shape_bias']:.3f}", f"{t['neither']:.3f}"]] + [
            [html.escape(n), fmt_summary(g["shape_bias"]), f"{g['neither']:.3f}"]
            for n, g in result["groups"].items()
        ]
        return "\n".join(
            [
                f"<p>{result['n_inputs']} cue-conflict inputs (the test objects with the texture "
                "of another class). Shape bias = shape decisions / (shape + texture decisions); "
                "'neither' = the fraction of predictions matching neither cue (excluded). "
                f"Teacher-ward is {result['teacher_ward']} shape bias than the independent "
                "students; gaps below are oriented so that teacher-ward is up.</p>",
                table(["model", "shape bias", "neither cue"], rows),
                premise_note(result["premise"]),
                verdict_table(result["verdicts"], "teacher-ward shape-bias gap", result["margin"]),
                _figure(result),
            ]
        )


def _figure(result: dict[str, Any]) -> str:
    names = ["teacher", *result["groups"]]
    values = [result["teacher"]["shape_bias"]] + [
        g["shape_bias"]["mean"] for g in result["groups"].values()
    ]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names)), 3.2))
    ax.bar(range(len(names)), values, color=["k"] + ["C0"] * (len(names) - 1))
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set(ylim=(0, 1), ylabel="shape bias", title="Shape bias on cue-conflict inputs")
    fig.tight_layout()
    return figure_html(fig, "shape bias per model")
