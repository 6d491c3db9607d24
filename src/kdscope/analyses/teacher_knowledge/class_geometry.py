"""Domain knowledge in the logit layer: the class geometry of every model (Tang et al. 2020).

A model's logits are z_k = h·w_k + b_k with h the input of its last linear layer and w_k the
class templates. With centred templates w̃_k = w_k − mean_l w_l (softmax ignores a shift shared
by all templates), the class similarity is S_ij = cos(w̃_i, w̃_j). Measured per model and seed:

* hierarchy score: mean S_ij over same-superclass pairs − mean over cross-superclass pairs, and
  the Pearson / Spearman correlations of S's upper triangle with the same-superclass indicator;
* agreement (Mantel test, 999 row/column permutations) with the true class-centre cosine matrix
  (centred) and with the teacher's own S^T;
* distance-order agreement, the direct check of Tang et al.'s statement: per training input, Kendall
  τ_b between the order of the distances ‖h − w_i‖ and the order of the teacher's −ρ_i over the
  wrong classes, averaged; reported with the spread of ‖w_k‖ (coefficient of variation) and of
  b_k, since the statement assumes equal norms and zero biases.

The theory predicts that relational targets (KD, KD-sim) keep or strengthen the block structure
and that relation-free targets (label smoothing, KD-pt) push templates toward equidistance.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from kdscope import device
from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import superclass, teacher_logits
from kdscope.models.hooks import get_module, resolve_layer
from kdscope.render import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise
from kdscope.teacher_knowledge.class_geometry import (
    class_similarity,
    distance_order_agreement,
    hierarchy_correlation,
    hierarchy_score,
    mantel,
)
from kdscope.teacher_knowledge.rescaling import softmax

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def logit_layer(model: nn.Module) -> nn.Linear:
    """The model's last linear layer (its ``logits`` role, else a module named ``fc``/``head``/
    ``classifier``); a ValueError when it has none."""
    for name in ("logits", "head", "fc", "classifier"):
        try:
            module = get_module(model, resolve_layer(model, name))
        except Exception:  # noqa: BLE001  (an unknown name: try the next)
            continue
        if isinstance(module, nn.Linear):
            return module
    raise ValueError(f"{type(model).__name__} has no explicit last linear layer (role 'logits')")


@torch.no_grad()
def head_inputs(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """h: the input of the model's last linear layer for every row of ``x`` (eval mode), computed
    on the model's device in chunks of ``batch_size``, returned on the CPU."""
    layer = logit_layer(model)
    dev = device.model_device(model)
    store: list[Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: store.append(args[0].detach().cpu()))
    was = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(dev))
    finally:
        handle.remove()
        model.train(was)
    return torch.cat(store)


def model_geometry(
    model: nn.Module,
    x: Tensor,
    teacher_rho: np.ndarray,
    labels: np.ndarray,
    sup: np.ndarray | None,
    references: dict[str, np.ndarray],
    permutations: int = 999,
) -> dict[str, Any]:
    """Every class-geometry measure of one model; ``references`` are similarity matrices to
    Mantel-test against (e.g. the true class centres, the teacher)."""
    layer = logit_layer(model)
    w = layer.weight.detach().cpu().double().numpy()
    b = None if layer.bias is None else layer.bias.detach().cpu().double().numpy()
    s = class_similarity(w)
    h = head_inputs(model, x).double().numpy()
    out: dict[str, Any] = {
        "S": s.tolist(),
        "distance_order": distance_order_agreement(h, w, b, teacher_rho, labels),
        "mantel": {
            name: dict(zip(("r", "p"), mantel(s, ref, permutations=permutations), strict=True))
            for name, ref in references.items()
        },
    }
    if sup is not None:
        out["hierarchy_score"] = float(hierarchy_score(s, sup))
        pearson, spearman_ = hierarchy_correlation(s, sup)
        out["hierarchy_pearson"], out["hierarchy_spearman"] = float(pearson), float(spearman_)
    return out


@register_analysis
class ClassGeometryAnalysis(Analysis):
    """Domain knowledge in the logit layer: the centred cosine similarity of each model's class
    templates, its hierarchy score, Mantel tests against the true class centres and the teacher,
    and the per-input agreement (Kendall τ_b) between distances to the wrong classes' templates
    and the teacher's ranking of them (docs/three_levels.md).
    """

    name = "class_geometry"
    reads_teacher_layers = True
    title = "Domain knowledge: class geometry of the logit layer"

    def __init__(self, permutations: int = 999) -> None:
        super().__init__()
        if permutations < 1:
            raise ValueError("permutations must be >= 1")
        self.permutations = permutations

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.num_classes < 3:
            return "class-distance orders need at least three classes"
        try:
            logit_layer(study.teacher_model)
            for g in study.groups.values():
                logit_layer(next(iter(g.runs.values())).load())
        except ValueError as e:
            return str(e)
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        train = study.student_data.train
        labels = train.labels.numpy()
        rho = softmax(teacher_logits(study, "train"))
        sup = superclass(study)
        refs: dict[str, np.ndarray] = {}
        centres = train.class_info.get("centre")
        if centres is not None:
            refs["true class centres"] = class_similarity(centres.double().numpy())
        teacher = model_geometry(
            study.teacher_model, train.inputs_at(), rho, labels, sup, refs, self.permutations
        )
        refs["teacher"] = np.array(teacher["S"])
        groups: dict[str, Any] = {}
        for g in study.groups.values():
            if g.role == "teacher":
                continue
            per_seed = {
                seed: model_geometry(
                    run.load(), train.inputs_at(), rho, labels, sup, refs, self.permutations
                )
                for seed, run in sorted(g.runs.items())
            }
            groups[g.name] = _summarise_group(per_seed, g.role)
        return {
            "n_train": len(labels),
            "hierarchy": sup is not None,
            "references": list(refs),
            "truth_S": refs["true class centres"].tolist() if centres is not None else None,
            "teacher": teacher,
            "groups": groups,
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        hier = result["hierarchy"]
        rows = []
        t = result["teacher"]
        entries = [("teacher", "teacher", _teacher_as_summary(t))] + [
            (name, g["role"], g) for name, g in result["groups"].items()
        ]
        for name, role, g in entries:
            row = [html.escape(name), role]
            if hier:
                row += [
                    fmt_summary(g["hierarchy_score"], sign=True),
                    fmt_summary(g["hierarchy_pearson"], sign=True),
                ]
            row += [
                fmt_summary(g["mantel"][ref]["r"], sign=True) if ref in g["mantel"] else "–"
                for ref in result["references"]
            ]
            row += [fmt_summary(g["distance_order"], sign=True), fmt_summary(g["norm_cv"])]
            rows.append(row)
        headers = ["model", "role"]
        if hier:
            headers += ["hierarchy score", "corr(S, same superclass)"]
        headers += [f"Mantel r vs {html.escape(r)}" for r in result["references"]]
        headers += ["distance-order τ_b", "CV of ‖w_k‖"]
        return (
            "<p>S_ij = cos(w̃_i, w̃_j) of the centred class templates of each model's last linear "
            "layer (biases ignored). Hierarchy score = mean S over same-superclass pairs − mean "
            "over cross-superclass pairs. Distance-order τ_b: per transfer input, rank agreement "
            "between ‖h − w_i‖ and −ρ_i (teacher, τ = 1) over the wrong classes. Mean over seeds "
            "[95 % t interval over seeds; the teacher is one model].</p>"
            + table(headers, rows)
            + _heatmaps(result)
        )


def _summarise_group(per_seed: dict[int, dict[str, Any]], role: str) -> dict[str, Any]:
    def over_seeds(get: Any) -> dict[str, Any]:
        return summarise({s: np.array([get(v)]) for s, v in per_seed.items()})

    out: dict[str, Any] = {
        "role": role,
        "S_mean": np.mean([np.array(v["S"]) for v in per_seed.values()], 0).tolist(),
        "distance_order": over_seeds(lambda v: v["distance_order"]["tau_b"]),
        "norm_cv": over_seeds(lambda v: v["distance_order"]["norm_cv"]),
        "bias_std": over_seeds(lambda v: v["distance_order"]["bias_std"]),
        "mantel": {
            ref: {
                "r": over_seeds(lambda v, ref=ref: v["mantel"][ref]["r"]),
                "p": {str(s): v["mantel"][ref]["p"] for s, v in per_seed.items()},
            }
            for ref in next(iter(per_seed.values()))["mantel"]
        },
    }
    if "hierarchy_score" in next(iter(per_seed.values())):
        for key in ("hierarchy_score", "hierarchy_pearson", "hierarchy_spearman"):
            out[key] = over_seeds(lambda v, key=key: v[key])
    return out


def _teacher_as_summary(t: dict[str, Any]) -> dict[str, Any]:
    """The teacher's single values in the per-seed summary shape, for the table."""

    def one(x: float) -> dict[str, Any]:
        return {"mean": x, "ci95": [float("nan"), float("nan")], "n_seeds": 1}

    out: dict[str, Any] = {
        "distance_order": one(t["distance_order"]["tau_b"]),
        "norm_cv": one(t["distance_order"]["norm_cv"]),
        "mantel": {ref: {"r": one(m["r"])} for ref, m in t["mantel"].items()},
    }
    if "hierarchy_score" in t:
        out["hierarchy_score"] = one(t["hierarchy_score"])
        out["hierarchy_pearson"] = one(t["hierarchy_pearson"])
    return out


def _heatmaps(result: dict[str, Any]) -> str:
    mats = []
    if result["truth_S"] is not None:
        mats.append(("true class centres", np.array(result["truth_S"])))
    mats.append(("teacher", np.array(result["teacher"]["S"])))
    mats += [(name, np.array(g["S_mean"])) for name, g in result["groups"].items()]
    cols = min(len(mats), 5)
    rows = -(-len(mats) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, s) in zip(axes.flat, mats, strict=False):
        ax.imshow(s, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(mats) :]:
        ax.axis("off")
    fig.suptitle(
        "Class similarity S of the logit layer (classes ordered by superclass; seed mean)",
        fontsize=9,
    )
    fig.tight_layout()
    return figure_html(fig, "class geometry heatmaps")
