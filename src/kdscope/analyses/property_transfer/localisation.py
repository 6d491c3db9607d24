"""Localisation transfer (Ojha et al. 2023, localisation): do distilled students look where the
teacher looks?

Grad-CAM for the ground-truth class at each model's last convolutional layer (captum's
``LayerGradCam``, ReLU, bilinear upsampling to the input), on ``n_inputs`` seeded test inputs.
For a distilled student S and its independent student Ind, the win indicators

    x[i, j, n] = 1 if cos(CAM_T, CAM_S,i) > cos(CAM_T, CAM_Ind,j) on input n, ½ on a tie, else 0

over every (S seed i, Ind seed j) pair form a crossed grid seeds × seeds × inputs (an input
where any compared map is all zero is dropped from the whole grid and counted). The win rate
WR = 100 · mean x and its interval come from :func:`kdscope.stats.summarise_crossed`, with seeds
as the unit of replication (a new S seed and a new Ind seed, not only new inputs). The
teacher-ward gap is WR − 50 (percentage points; 0 when S is no closer than Ind).

The control is the study's soft-label student C (``Method.role == "control"``: generic soft
targets, no teacher). The student's effect beyond it is the head-to-head win rate of S against
C, 100 · mean_{i,j,n} 1[cos(CAM_T, CAM_S,i) > cos(CAM_T, CAM_C,j)] (½ on ties) − 50, crossed
over S seeds × C seeds × inputs: above 0 when S's maps are closer to the teacher's than C's.
Verdict: the rule of :func:`kdscope.verdicts.transfer` (equivalence margin ``margin`` in points
of win rate, default 5) with the paper's premise (S more accurate than Ind) stated.

The win rate of Ind against a second independent seed Ind' (every pair of different seeds) is
kept as a descriptive sanity number: it should be near 50 (no verdict). Extension, not a paper
finding (a separate result key, not scored): the share of CAM energy inside the foreground mask,
E = Σ_mask CAM / Σ CAM, with the same inference on the closeness −|E_model − E_T|.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    control_students,
    premise,
    seed_pairs,
    test_subset,
    transfer_record,
)
from kdscope.models.hooks import resolve_layer
from kdscope.property_transfer.localisation import (
    foreground_energy,
    gradcam_maps,
    map_cosine,
    win_grid,
)
from kdscope.render import figure_html, fmt_summary, plt, premise_note, table, verdict_table
from kdscope.stats import summarise, summarise_crossed

if TYPE_CHECKING:
    from kdscope.analyses.study_views import PerSeed
    from kdscope.study import StudyResult

WHAT = "localisation (Grad-CAM win rate)"
EXTENSION = "foreground energy (kdscope extension)"
MEASURES = {WHAT: "cam", EXTENSION: "foreground"}


def crossed_win_rate(closer: PerSeed, other: PerSeed, centre: float = 0.0) -> dict[str, Any]:
    """The win rate in percent (minus ``centre``) of ``closer`` over ``other`` (per-input
    similarities to the teacher, by seed) over every (seed of closer, seed of other) pair:
    :func:`kdscope.stats.summarise_crossed` of 100 · x[i, j, n] − centre, ``per_seed`` keyed
    "i-j", with the number of inputs dropped for an undefined similarity (``excluded_inputs``).
    """
    a, b = sorted(closer), sorted(other)
    grid, excluded = win_grid(np.stack([closer[s] for s in a]), np.stack([other[s] for s in b]))
    if grid.shape[-1] == 0:  # every input undefined somewhere: nothing to compare
        grid = np.full((*grid.shape[:-1], 1), np.nan)
    with np.errstate(invalid="ignore"):
        out = summarise_crossed(100.0 * grid - centre, [f"{i}-{j}" for i in a for j in b])
    out["excluded_inputs"] = excluded
    return out


def independent_spread(similarity: PerSeed) -> dict[str, Any] | None:
    """Descriptive: the win rate (%) of Ind seed i over Ind seed j for every pair i < j and the
    mean |WR − 50| (None with one seed). Exchangeable seeds give values near 50."""
    pairs = seed_pairs(sorted(similarity), sorted(similarity), distinct=True)
    if not pairs:
        return None
    rates = {}
    for i, j in pairs:
        grid, _ = win_grid(similarity[i], similarity[j])
        rates[f"{i}-{j}"] = 100.0 * float(grid.mean()) if grid.size else float("nan")
    return {
        "per_pair": rates,
        "mean_abs_deviation": float(np.nanmean([abs(r - 50.0) for r in rates.values()])),
    }


@register_analysis
class LocalisationAnalysis(Analysis):
    """Localisation: the Grad-CAM map of the true class at each model's last conv layer, and the
    rate at which a distilled student's map is closer (cosine) to the teacher's than its
    independent student's, against the soft-label control (docs/property_transfer.md).
    """

    name = "localisation"
    reads_teacher_layers = True
    title = "Localisation: Grad-CAM win rate against the independent student"

    def __init__(
        self, n_inputs: int = 1000, layer: str = "last_conv", margin: float = 5.0, seed: int = 0
    ) -> None:
        super().__init__()
        if n_inputs < 1:
            raise ValueError("n_inputs must be >= 1")
        if not margin > 0:
            raise ValueError("margin must be > 0")
        self.n_inputs, self.layer, self.margin, self.seed = n_inputs, layer, margin, seed

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
        x, y = study.data.test.inputs_at(idx), study.data.test.labels[idx]
        return gradcam_maps(model, resolve_layer(model, self.layer), x, y)

    def run(self, study: StudyResult) -> dict[str, Any]:
        idx = test_subset(study, self.n_inputs, self.seed)
        masks = study.data.test.has_foreground  # without masks: no foreground-energy extension
        measures = MEASURES if masks else {WHAT: "cam"}
        fg = study.data.test.foreground[idx]
        t_maps = self._maps(study, "teacher", study.config.teacher_seed, idx)
        t_energy = foreground_energy(t_maps, fg)
        # per model and seed: per-input closeness to the teacher, and the foreground energy
        closeness: dict[str, dict[str, PerSeed]] = {"cam": {}, "foreground": {}}
        energy: dict[str, PerSeed] = {}
        for g in study.groups.values():
            if g.role == "teacher":
                continue
            for s in sorted(g.runs):
                maps = self._maps(study, g.name, s, idx)
                closeness["cam"].setdefault(g.name, {})[s] = map_cosine(t_maps, maps)
                if masks:
                    e = foreground_energy(maps, fg)
                    closeness["foreground"].setdefault(g.name, {})[s] = -np.abs(e - t_energy)
                    energy.setdefault(g.name, {})[s] = e
        controls = control_students(study)
        premises = premise(study)
        students: dict[str, Any] = {}
        records: dict[str, dict[str, Any]] = {what: {} for what in measures}
        for g in study.by_role("student"):
            ind = g.baseline or ""
            entry: dict[str, Any] = {"independent": ind}
            for what, key in measures.items():
                sim = closeness[key]
                entry[key] = {
                    "win_rate": crossed_win_rate(sim[g.name], sim[ind]),
                    "against_controls": {
                        c: crossed_win_rate(sim[g.name], sim[c]) for c in controls if c != g.name
                    },
                }
                if g.name not in controls:
                    records[what][g.name] = transfer_record(
                        study,
                        g.name,
                        crossed_win_rate(sim[g.name], sim[ind], centre=50.0),
                        {c: crossed_win_rate(sim[g.name], sim[c], centre=50.0) for c in controls},
                        self.margin,
                        premises[g.name]["status"],
                    )
            students[g.name] = entry
        baselines = sorted({g.baseline or "" for g in study.by_role("student")})
        return {
            "n_inputs": len(idx),
            "layer": self.layer,
            "teacher_energy": float(np.nanmean(t_energy)) if masks else None,
            "energy": {n: summarise(per, shared_inputs=True) for n, per in energy.items()},
            "students": students,
            "independent_spread": {
                b: {k: independent_spread(closeness[k][b]) for k in measures.values()}
                for b in baselines
            },
            "premise": {n: p["status"] for n, p in premises.items()},
            "margin": self.margin,
            "verdicts": {WHAT: records[WHAT]},
            "extension": {EXTENSION: records[EXTENSION]} if masks else {},
            "examples": idx[:4].tolist(),
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        rows = [
            [
                html.escape(n),
                html.escape(s["independent"]),
                fmt_summary(s["cam"]["win_rate"], 1),
                str(s["cam"]["win_rate"]["excluded_inputs"]),
                "; ".join(
                    f"{html.escape(c)}: {fmt_summary(v, 1)}"
                    for c, v in s["cam"]["against_controls"].items()
                )
                or "–",
                fmt_summary(s["foreground"]["win_rate"], 1) if "foreground" in s else "no masks",
            ]
            for n, s in result["students"].items()
        ]
        spread = [
            [
                html.escape(b),
                _spread(c["cam"]),
                _spread(c["foreground"]) if "foreground" in c else "no masks",
            ]
            for b, c in result["independent_spread"].items()
        ]
        energy = [[html.escape(n), fmt_summary(e)] for n, e in result["energy"].items()]
        return (
            f"<p>Grad-CAM of the ground-truth class at <code>{html.escape(result['layer'])}</code> "
            f"on {result['n_inputs']} test inputs. Win rate (%): how often a student's map is "
            "closer (cosine) to the teacher's than the other model's, over every (seed, seed) "
            "pair and input; mean [95 % t interval, crossed seeds × seeds × inputs]. Inputs "
            "where any compared map is all zero are dropped from the whole grid and counted. "
            "The gap is the win rate against the independent student − 50; the effect beyond a "
            "control is the head-to-head win rate against the control student − 50.</p>"
            + premise_note(result["premise"])
            + verdict_table(
                result["verdicts"], "win rate vs independent − 50 (points)", result["margin"]
            )
            + table(
                [
                    "student",
                    "independent",
                    "win rate vs independent",
                    "inputs excluded (zero map)",
                    "win rate vs control",
                    "foreground win rate vs independent",
                ],
                rows,
            )
            + "<h3>Sanity: independent vs independent' (different seeds, descriptive)</h3>"
            + "<p class='note'>Win rate of one independent seed over another, per pair; "
            "exchangeable seeds give about 50.</p>"
            + table(["independent", "Grad-CAM win rate per pair", "foreground win rate"], spread)
            + _extension(result, energy)
            + _overlays(result, study, self)
        )


def _extension(result: dict[str, Any], energy: list[list[str]]) -> str:
    """The foreground-energy extension, or why it was not measured (no object masks)."""
    head = "<h3>Extension (not a paper finding): share of Grad-CAM energy on the object</h3>"
    if result["teacher_energy"] is None:
        return head + "<p class='note'>Not measured: the dataset has no object masks.</p>"
    return (
        head + "<p class='note'>Closeness to the teacher: −|E_model − E_teacher|, E = the share "
        "of map energy inside the object mask; same inference and rule, not scored.</p>"
        + verdict_table(result["extension"], "foreground win rate − 50 (points)", result["margin"])
        + f"<p>Teacher energy inside the mask: {result['teacher_energy']:.3f}.</p>"
        + table(["model", "energy inside the mask"], energy)
    )


def _spread(s: dict[str, Any] | None) -> str:
    if s is None:
        return "one seed: not run"
    pairs = ", ".join(f"{k}: {v:.1f}" for k, v in s["per_pair"].items())
    return f"{pairs} (mean |WR − 50| = {s['mean_abs_deviation']:.1f})"


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
        img = study.data.test.inputs_at(slice(i, i + 1))[0]
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
