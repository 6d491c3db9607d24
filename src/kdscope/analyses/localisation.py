"""Localisation transfer (property-transfer spec §3.1): do distilled students look where the
teacher looks?

Grad-CAM for the ground-truth class at each model's last convolutional layer (captum's
``LayerGradCam``, ReLU, bilinear upsampling to the input). For a distilled student S and the
independent student Ind (its CE baseline), per test input: win = 1 when cos(CAM_T, CAM_S) >
cos(CAM_T, CAM_Ind), ½ on a tie; the win rate WR is averaged over every (S seed, Ind seed) pair.
The control is the same score for Ind against a second independent seed Ind' (unordered pairs of
different seeds), expected near 50 %. Verdict: **transfers** when the WR interval lies above 50 %
and the control's interval contains 50 %; **confounded** when the control is also above 50 %;
**no transfer** otherwise (**no control** when the baseline has a single seed). Extension: the
share of CAM energy inside the foreground mask per model, and a win rate on
|E_S − E_T| < |E_Ind − E_T|.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import seed_pairs, test_subset, transfer_verdict
from kdscope.models.hooks import resolve_layer
from kdscope.property_transfer.localisation import (
    foreground_energy,
    gradcam_maps,
    map_cosine,
    win_rate,
)
from kdscope.report import figure_html, fmt_summary, plt, table
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.study import StudyResult


def pairwise_win_rates(
    first: dict[int, np.ndarray], second: dict[int, np.ndarray], pairs: list[tuple[int, int]]
) -> tuple[dict[str, Any] | None, int]:
    """Win rate (in %) of ``first`` over ``second`` (per-input similarities to the teacher, by
    seed) over seed pairs: per pair, mean and hierarchical interval (pairs, then inputs), and
    the number of inputs excluded; None without pairs."""
    wins: dict[int, np.ndarray] = {}
    excluded = 0
    for k, (i, j) in enumerate(pairs):
        w, n_out = win_rate(first[i], second[j])
        wins[k] = 100.0 * w
        excluded += n_out
    if not wins:
        return None, excluded
    s = summarise(wins)
    s["pairs"] = [f"{i}-{j}" for i, j in pairs]
    return s, excluded


@register_analysis
class LocalisationAnalysis(Analysis):
    name = "localisation"
    title = "Localisation: Grad-CAM win rate against the independent student"

    def __init__(self, n_inputs: int = 1000, layer: str = "last_conv", seed: int = 0) -> None:
        super().__init__()
        if n_inputs < 1:
            raise ValueError("n_inputs must be >= 1")
        self.n_inputs, self.layer, self.seed = n_inputs, layer, seed

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.test.modality != "image":
            return f"Grad-CAM needs images; the data are {study.data.test.modality}"
        for g in study.groups.values():
            model = next(iter(g.runs.values())).load()
            try:
                resolve_layer(model, self.layer)
            except Exception:  # noqa: BLE001
                return f"model {g.model.label()} has no layer {self.layer!r}"
        return None

    def _maps(self, study: StudyResult, group: str, seed: int, idx: torch.Tensor) -> torch.Tensor:
        model = study.groups[group].runs[seed].load()
        x, y = study.data.test.inputs[idx], study.data.test.labels[idx]
        return gradcam_maps(model, resolve_layer(model, self.layer), x, y)

    def run(self, study: StudyResult) -> dict[str, Any]:
        idx = test_subset(study, self.n_inputs, self.seed)
        fg = study.data.test.foreground[idx]
        t_maps = self._maps(study, "teacher", study.config.teacher_seed, idx)
        t_energy = foreground_energy(t_maps, fg)
        maps: dict[str, dict[int, torch.Tensor]] = {}
        for g in study.groups.values():
            if g.role != "teacher":
                maps[g.name] = {s: self._maps(study, g.name, s, idx) for s in sorted(g.runs)}
        cos = {n: {s: map_cosine(t_maps, m) for s, m in per.items()} for n, per in maps.items()}
        gap = {
            n: {s: -np.abs(foreground_energy(m, fg) - t_energy) for s, m in per.items()}
            for n, per in maps.items()
        }
        energy = {
            n: summarise({s: _finite(foreground_energy(m, fg)) for s, m in per.items()})
            for n, per in maps.items()
        }
        students, controls = {}, {}
        for g in study.by_role("student"):
            ind = g.baseline
            if ind not in controls:
                seeds = sorted(maps[ind])
                pairs = seed_pairs(seeds, seeds, distinct=True)
                controls[ind] = {
                    "cam": pairwise_win_rates(cos[ind], cos[ind], pairs)[0],
                    "foreground": pairwise_win_rates(gap[ind], gap[ind], pairs)[0],
                }
            pairs = seed_pairs(sorted(maps[g.name]), sorted(maps[ind]))
            wr, excluded = pairwise_win_rates(cos[g.name], cos[ind], pairs)
            fg_wr, _ = pairwise_win_rates(gap[g.name], gap[ind], pairs)
            assert wr is not None and fg_wr is not None
            students[g.name] = {
                "independent": ind,
                "win_rate": wr,
                "excluded_inputs": excluded,
                "verdict": transfer_verdict(wr, controls[ind]["cam"], null=50.0),
                "foreground_win_rate": fg_wr,
                "foreground_verdict": transfer_verdict(
                    fg_wr, controls[ind]["foreground"], null=50.0
                ),
            }
        examples = idx[:4].tolist()
        return {
            "n_inputs": len(idx),
            "layer": self.layer,
            "teacher_energy": float(np.nanmean(t_energy)),
            "energy": energy,
            "students": students,
            "controls": controls,
            "examples": examples,
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = [
            [
                html.escape(n),
                html.escape(s["independent"]),
                fmt_summary(s["win_rate"], 1),
                f"<span class='{_css(s['verdict'])}'>{s['verdict']}</span>",
                fmt_summary(s["foreground_win_rate"], 1),
                f"<span class='{_css(s['foreground_verdict'])}'>{s['foreground_verdict']}</span>",
                str(s["excluded_inputs"]),
            ]
            for n, s in result["students"].items()
        ]
        ctrl = [
            [
                html.escape(n),
                fmt_summary(c["cam"], 1) if c["cam"] else "one seed: not run",
                fmt_summary(c["foreground"], 1) if c["foreground"] else "–",
            ]
            for n, c in result["controls"].items()
        ]
        energy = [[html.escape(n), fmt_summary(e)] for n, e in result["energy"].items()]
        return (
            f"<p>Grad-CAM of the ground-truth class at <code>{html.escape(result['layer'])}</code> "
            f"on {result['n_inputs']} test inputs. Win rate (%): how often a distilled student's "
            "map is closer (cosine) to the teacher's than the independent student's, over every "
            "(student seed, independent seed) pair; mean [95 % hierarchical-bootstrap interval]. "
            "Foreground: the same with the share of map energy inside the object mask.</p>"
            + table(
                [
                    "student",
                    "independent",
                    "win rate",
                    "verdict",
                    "foreground win rate",
                    "verdict",
                    "inputs excluded (zero map)",
                ],
                rows,
            )
            + "<h3>Control: independent vs independent' (different seeds)</h3>"
            + table(["independent", "win rate (expected ≈ 50)", "foreground win rate"], ctrl)
            + "<h3>Share of Grad-CAM energy on the object</h3>"
            + f"<p>Teacher: {result['teacher_energy']:.3f}.</p>"
            + table(["model", "energy inside the mask"], energy)
            + _overlays(result, study, self)
        )


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _css(v: str) -> str:
    return {"transfers": "better", "confounded": "worse"}.get(v, "inconclusive")


def _overlays(result: dict[str, Any], study: StudyResult, analysis: LocalisationAnalysis) -> str:
    idx = torch.tensor(result["examples"], dtype=torch.long)
    columns = [("teacher", study.config.teacher_seed)] + [
        (g.name, min(g.runs)) for g in study.groups.values() if g.role != "teacher"
    ]
    maps = {name: analysis._maps(study, name, seed, idx) for name, seed in columns}
    fig, axes = plt.subplots(
        len(idx),
        len(columns) + 1,
        figsize=(1.7 * (len(columns) + 1), 1.8 * len(idx)),
        squeeze=False,
    )
    for r, i in enumerate(idx.tolist()):
        img = study.data.test.inputs[i]
        img = img.permute(1, 2, 0).numpy() if img.dim() == 3 else img.numpy()
        axes[r, 0].imshow(np.clip(img, 0, 1))
        axes[r, 0].set_title("input" if r == 0 else "", fontsize=8)
        for c, (name, _) in enumerate(columns, start=1):
            axes[r, c].imshow(np.clip(img, 0, 1))
            axes[r, c].imshow(maps[name][r].numpy(), cmap="jet", alpha=0.5)
            axes[r, c].contour(
                study.data.test.foreground[i].numpy(), levels=[0.5], colors="w", linewidths=0.6
            )
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_html(fig, "Grad-CAM overlays")
