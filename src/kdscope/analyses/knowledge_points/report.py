"""Report section of the knowledge-point analysis (docs/knowledge_points.md).

:func:`render` turns the JSON result of
:class:`~kdscope.analyses.knowledge_points.knowledge_points.KnowledgePointsAnalysis` into an HTML fragment: the
settings actually used; per diagnosed layer the hypothesis verdicts, the paired differences
student − baseline behind them (with the per-epoch displacement D_epoch beside the verdict basis
D, and pairs kept out of the verdicts marked as such), every network's own metrics, the
knowledge-point curves with the peak distances; and, for the first layer, entropy maps of
example inputs with their knowledge points (read from the analysis' cache).
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope import io
from kdscope.analyses.knowledge_points.cache import cache_path
from kdscope.datasets.text import EXCLUDED_IDS, PAD_ID
from kdscope.knowledge_points.diagnosis import (
    DISPLACEMENT,
    EXPECTED,
    HYPOTHESES,
    EntropyTrajectory,
    network_metrics,
)
from kdscope.render import figure_html, plt  # pyplot, with the Agg backend already selected
from kdscope.verdicts import css

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kdscope.study import StudyResult

HYPOTHESIS_TITLES = {
    "quantity_quality": "1. more fg / fewer bg points, higher quality",
    "learning_speed": "2. faster, more simultaneous learning",
    "stability": "3. more stable",
}
METRIC_LABELS = {
    "n_fg": "N<sub>fg</sub>",
    "n_bg": "N<sub>bg</sub>",
    "quality": "quality",
    "d_mean": "D<sub>mean</sub>",
    "d_std": "D<sub>std</sub>",
    "d_var": "D<sub>var</sub>",
    "rho": "ρ",
    "d_epoch_mean": "D<sub>epoch,mean</sub>",
    "d_epoch_std": "D<sub>epoch,std</sub>",
    "d_epoch_var": "D<sub>epoch,var</sub>",
}
ARROWS = {"higher": "↑", "lower": "↓"}
NETWORK_METRICS = (
    "n_fg",
    "n_bg",
    "quality",
    "d_mean",
    "d_std",
    "d_var",
    "rho",
    "d_epoch_mean",
    "d_epoch_std",
    "d_epoch_var",
)
EXAMPLES = 3


def render(result: dict[str, Any], study: StudyResult) -> str:
    """The HTML fragment of the knowledge-point analysis for ``report.html``."""
    parts = [_intro(result)]
    for i, (layer, res) in enumerate(result.get("layers", {}).items()):
        parts += [
            f"<h3>Layer <code>{html.escape(layer)}</code></h3>",
            _hypotheses_table(res.get("comparisons", {})),
            _differences_table(res.get("comparisons", {})),
            _networks_table(res.get("networks", {})),
            _curves_figure(res.get("networks", {}), layer),
        ]
        if i == 0:
            parts.append(_examples(result, study, layer))
    return "\n".join(parts)


# -- formatting -------------------------------------------------------------------------------


def _fmt(metric: str, value: float | None, sign: bool = False) -> str:
    """Counts with 2 decimals, ratios with 3, distances with 3 significant digits."""
    if value is None or not math.isfinite(value):
        return "–"
    spec = {"n_fg": ".2f", "n_bg": ".2f", "quality": ".3f", "rho": ".3f"}.get(metric, ".3g")
    return format(value, ("+" if sign else "") + spec)


def _interval(metric: str, ci: list[float], sign: bool = False) -> str:
    return f"[{_fmt(metric, ci[0], sign)}, {_fmt(metric, ci[1], sign)}]"


def _per_seed(metric: str, summary: dict[str, Any], sign: bool = False) -> str:
    """'seed 0: …, seed 1: …' for a title attribute."""
    values = summary.get("per_seed", {})
    return ", ".join(f"seed {s}: {_fmt(metric, v, sign)}" for s, v in values.items())


def _verdict_td(verdict: str, content: str | None = None, title: str = "") -> str:
    """A table cell coloured by verdict (``content`` defaults to the verdict itself; a
    placeholder such as "–" is a note)."""
    cls = css(verdict, default="note")
    tip = f" title='{html.escape(title)}'" if title else ""
    return f"<td class='{cls}'{tip}>{content if content is not None else html.escape(verdict)}</td>"


def _setting(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


# -- intro ------------------------------------------------------------------------------------


def _intro(result: dict[str, Any]) -> str:
    s = result.get("settings", {})
    b = s.get("b", 0.2)
    intro = (
        "<p>For each diagnosed layer, network and checkpoint, the estimator finds the largest "
        "Gaussian noise per input unit (grid cell, point or token) that the layer cannot tell "
        "apart from the clean "
        "input; its entropy H measures how much of the unit the layer <em>ignores</em>. "
        f"<b>Knowledge points</b> are units whose entropy is more than b = {_setting(b)} nats "
        "below the background level H̄ (mean entropy over background units): N<sub>fg</sub> and "
        "N<sub>bg</sub> count them on the foreground and background, quality = N<sub>fg</sub> / "
        "(N<sub>fg</sub> + N<sub>bg</sub>) at the final checkpoint. D is the distance the "
        "layer's own weights W (conv or linear kernels; no bias, no BatchNorm or LayerNorm γ) "
        "have travelled, over ‖W₀‖, at the checkpoint where an input's N<sub>fg</sub> peaks "
        "(D<sub>mean</sub>, D<sub>std</sub> over inputs). Two forms: the per-step path length "
        "Σ<sub>steps</sub> ‖ΔW‖ / ‖W₀‖, which the learning-speed verdicts use, and the per-epoch "
        "displacement Σ<sub>e</sub> ‖W<sub>e</sub> − W<sub>e−1</sub>‖ / ‖W₀‖ (D<sub>epoch</sub>"
        ", never larger), shown beside it. ρ is the share of the final foreground points among "
        "all ever encoded. Intervals are 95 % intervals over seeds; a metric holds when its "
        "interval of student − baseline excludes 0 in the expected direction, does not hold "
        "when it excludes 0 in the opposite one.</p>"
    )
    note = f"<p class='note'>{html.escape(result.get('note', ''))}</p>" if "note" in result else ""
    n_cand = len(result.get("candidates", []))
    return (
        intro
        + note
        + _assumptions_table(result.get("assumptions", []))
        + _settings_table(s, n_cand)
    )


def _assumptions_table(rows: list[dict[str, str]]) -> str:
    """The choices the papers leave open, as used in this study (docs/knowledge_points.md)."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><th>{html.escape(r['what'])}</th><td>{html.escape(r['choice'])}</td>"
        f"<td class='note'>{html.escape(r['source'])}</td></tr>"
        for r in rows
    )
    return f"<table class='settings'><caption>Choices and assumptions</caption>{body}</table>"


def _grid(modality: str, grid: int | None) -> str:
    if modality != "image":
        return f"– (units: {html.escape(modality)})"
    return f"{grid}×{grid}" if grid else "default (2×2-pixel cells)"


def _units_n(s: dict[str, Any]) -> str:
    """n, or for inputs of different lengths the mean n with its range."""
    lo, hi = s.get("units_n_range", [None, None])
    if lo is None or lo == hi:
        return _setting(s.get("units_n"))
    return f"{_setting(s.get('units_n'))} (mean; {lo}–{hi})"


def _settings_table(s: dict[str, Any], n_candidates: int) -> str:
    """The estimator and metric settings actually used, three per row."""
    grid = s.get("grid")
    sampling = (
        f"{_setting(s.get('projections'))} projections"
        if s.get("mode") == "fast"
        else f"{_setting(s.get('samples'))} samples"
    )
    items = [
        ("mode", _setting(s.get("mode"))),
        ("distance for verdicts", _setting(s.get("distance_for_verdicts"))),
        ("perturbation space", _setting(s.get("perturbation_space"))),
        ("scale s", _setting(s.get("scale_s"))),
        ("units n", _units_n(s)),
        ("λ", _setting(s.get("lambda"))),
        ("learning rate", _setting(s.get("lr"))),
        ("target mean entropy", _setting(s.get("target_mean_entropy"))),
        ("b (nats)", _setting(s.get("b"))),
        ("grid", _grid(s.get("modality", "image"), grid)),
        ("background level", _setting(s.get("background_level"))),
        ("mask rule", _setting(s.get("mask_rule"))),
        ("effective filter", _setting(s.get("effective_filter"))),
        (
            "candidates / target effective",
            f"{n_candidates} / {_setting(s.get('target_effective'))}",
        ),
        ("rho_include_initial", _setting(s.get("rho_include_initial"))),
        ("feature transform", _setting(s.get("feature_transform"))),
        ("projections / samples", sampling),
        ("late fraction", _setting(s.get("late_fraction"))),
        ("candidate seed", _setting(s.get("seed"))),
    ]
    rows = []
    for i in range(0, len(items), 3):
        cells = "".join(f"<th>{k}</th><td>{v}</td>" for k, v in items[i : i + 3])
        rows.append(f"<tr>{cells}</tr>")
    return "<table class='settings'>" + "".join(rows) + "</table>"


# -- tables -----------------------------------------------------------------------------------


def _inputs_per_seed(sizes: dict[str, int]) -> str:
    return ", ".join(f"seed {s}: {n}" for s, n in sizes.items()) or "–"


def _hypotheses_table(comparisons: dict[str, Any]) -> str:
    """One row per distilled student: the verdict on each hypothesis."""
    head = "".join(f"<th>{t}</th>" for t in HYPOTHESIS_TITLES.values())
    rows = []
    for name, c in comparisons.items():
        cells = f"<td>{html.escape(name)}</td><td>{html.escape(str(c.get('baseline', '')))}</td>"
        if "not_a_verdict" in c:
            note = html.escape(c["not_a_verdict"])
            cells += f"<td class='note' colspan='{len(HYPOTHESIS_TITLES)}'>{note}</td>"
        elif "hypotheses" in c:
            for h in HYPOTHESIS_TITLES:
                hyp = c["hypotheses"].get(h, {})
                behind = ", ".join(
                    f"{m}: {c['metrics'][m]['verdict']}"
                    for m in hyp.get("metrics", HYPOTHESES.get(h, ()))
                    if m in c.get("metrics", {})
                )
                cells += _verdict_td(hyp.get("verdict", "–"), title=behind)
        else:
            note = html.escape(c.get("note", "no comparison"))
            cells += f"<td class='note' colspan='{len(HYPOTHESIS_TITLES)}'>{note}</td>"
        cells += f"<td>{_inputs_per_seed(c.get('inputs_per_seed', {}))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return (
        "<h4>Hypotheses: distilled student against its baseline</h4>"
        f"<table><tr><th>student</th><th>baseline</th>{head}<th>inputs per seed</th></tr>"
        + "".join(rows)
        + "</table><p class='note'>A hypothesis holds when all its metrics hold, does not hold "
        "when any does not, is partly supported when some hold; inputs per seed = effective for "
        "both networks (hover a verdict for its metrics). A feature-mimicking student gets "
        "verdicts only at the layer it mimics, as in the papers (one student per layer): at a "
        "layer above it, its mimicking phase moves no weight, so a shorter distance D would "
        "hold by construction.</p>"
    )


def _differences_table(comparisons: dict[str, Any]) -> str:
    """Paired differences student − baseline with intervals, coloured by verdict; the
    per-epoch displacement columns and the pairs kept out of the verdicts stay uncoloured."""
    shown = {**EXPECTED, **DISPLACEMENT}
    head = "".join(f"<th>{METRIC_LABELS[m]} {ARROWS[d]}</th>" for m, d in shown.items())
    rows = []
    for name, c in comparisons.items():
        metrics = c.get("metrics")
        if not metrics:
            note = html.escape(c.get("note", "no comparison"))
            cells = f"<td class='note' colspan='{len(shown)}'>{note}</td>"
        else:
            cells = "".join(_difference_td(m, metrics.get(m)) for m in shown)
        label = html.escape(name)
        if "not_a_verdict" in c:
            label += "<br><small class='note'>shown, not a verdict</small>"
        rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    return (
        "<h4>Student − baseline (paired by seed and input; mean [95 % interval])</h4>"
        f"<table><tr><th>student</th>{head}</tr>" + "".join(rows) + "</table>"
        "<p class='note'>Arrows give the direction the papers expect for a distilled student; "
        "hover a cell for the per-seed differences. The learning-speed verdicts use D (per-step "
        "path length); D<sub>epoch</sub> (per-epoch displacement) is shown, not a verdict.</p>"
    )


def _difference_td(metric: str, d: dict[str, Any] | None) -> str:
    if not d:
        return "<td class='note'>–</td>"
    content = f"{_fmt(metric, d['mean'], True)} {_interval(metric, d['ci95'], True)}"
    return _verdict_td(d.get("verdict", ""), content, _per_seed(metric, d, True))


def _networks_table(networks: dict[str, Any]) -> str:
    """Every network's own metrics on its effective inputs (mean and interval over seeds)."""
    head = "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in NETWORK_METRICS)
    rows = []
    for name, net in networks.items():
        metrics = net.get("metrics") or {}
        cells = "".join(_network_td(m, metrics.get(m)) for m in NETWORK_METRICS)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(net.get('role', '')))}</td>"
            f"<td>{_inputs_cell(net.get('inputs', {}))}</td>{cells}</tr>"
        )
    return (
        "<h4>Each network (final checkpoint; mean over seeds, 95 % interval below)</h4>"
        "<table><tr><th>network</th><th>role</th><th>inputs effective/analysed</th>"
        f"{head}</tr>" + "".join(rows) + "</table>"
        "<p class='note'>Hover a value for its per-seed values.</p>"
    )


def _network_td(metric: str, s: dict[str, Any] | None) -> str:
    if not s:
        return "<td class='note'>–</td>"
    tip = html.escape(_per_seed(metric, s))
    return (
        f"<td title='{tip}'>{_fmt(metric, s['mean'])}<br>"
        f"<small class='note'>{_interval(metric, s['ci95'])}</small></td>"
    )


def _inputs_cell(inputs: dict[str, dict[str, int]]) -> str:
    """'effective/analysed' per seed, plus uncalibrated maps and dead-feature inputs if any."""
    parts = []
    for seed, c in inputs.items():
        text = f"seed {seed}: {c.get('effective', 0)}/{c.get('analysed', 0)}"
        flags = [
            f"{c[k]} {label}"
            for k, label in (
                ("uncalibrated_maps", "uncalibrated maps"),
                ("dead_feature_inputs", "dead-feature inputs"),
            )
            if c.get(k)
        ]
        if flags:
            text += f" <small class='inconclusive'>({', '.join(flags)})</small>"
        parts.append(text)
    return "<br>".join(parts) or "–"


# -- figures ----------------------------------------------------------------------------------


def _style(name: str, role: str, index: int) -> dict[str, Any]:
    """Line style per network: teacher grey dotted, baselines black dashed, students coloured."""
    if role == "teacher":
        return {"color": "0.55", "linestyle": ":", "label": name}
    if role == "baseline":
        return {"color": "black", "linestyle": "--", "label": name}
    return {"color": f"C{index % 10}", "linestyle": "-", "label": name}


def _curves_figure(networks: dict[str, Any], layer: str) -> str:
    """N_fg and N_bg across training, and the per-input peak distances, per network."""
    with_curves = {n: net for n, net in networks.items() if net.get("curves")}
    if not with_curves:
        return "<p class='note'>No network has an effective input: no curves to plot.</p>"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    students = [n for n, net in with_curves.items() if net.get("role") == "student"]
    styles = {
        n: _style(n, net.get("role", ""), students.index(n) if n in students else 0)
        for n, net in with_curves.items()
    }
    for ax, key, label in zip(axes[:2], ("n_fg", "n_bg"), ("N_fg", "N_bg"), strict=True):
        for name, net in with_curves.items():
            c = net["curves"]
            ax.plot(c["fraction"], c[key], marker="o", markersize=4, **styles[name])
        ax.set(
            xlabel="fraction of training",
            ylabel=f"mean {label} per input",
            title=f"{label} across checkpoints ({layer})",
        )
        ax.grid(alpha=0.3)
    _peak_distance_panel(axes[2], with_curves, styles)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    return figure_html(fig, f"knowledge points across training, layer {layer}")


def _peak_distance_panel(ax: Axes, networks: dict[str, Any], styles: dict[str, Any]) -> None:
    """Box and jittered strip of every input's peak distance d (seeds pooled), mean marked."""
    names = [n for n, net in networks.items() if net.get("peak_distance")]
    values = [np.concatenate(list(networks[n]["peak_distance"].values())) for n in names]
    ax.set_title("cumulative weight distance at which each input peaks (D)", fontsize=10)
    if not names:
        ax.text(0.5, 0.5, "no peak distances", ha="center", transform=ax.transAxes)
        return
    rng = np.random.default_rng(0)
    ax.boxplot(values, widths=0.5, showfliers=False, medianprops={"color": "0.3"})
    for i, (name, v) in enumerate(zip(names, values, strict=True), start=1):
        x = i + rng.uniform(-0.15, 0.15, len(v))
        ax.scatter(x, v, s=12, alpha=0.6, color=styles[name]["color"], zorder=3)
        ax.scatter([i], [v.mean()], marker="D", s=40, color="red", zorder=4)
    ax.scatter([], [], marker="D", s=40, color="red", label="mean (D_mean)")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=35, ha="right", fontsize=8)
    pooled = np.concatenate(values)
    positive = pooled[pooled > 0]
    if len(positive) and positive.max() > 30 * positive.min():  # spreads of several decades
        ax.set_yscale("symlog", linthresh=float(positive.min()))
        ax.set_ylim(0, float(positive.max()) * 2)
        ax.set(ylabel="d (normalised path length, symlog scale)")
    else:
        ax.set(ylabel="d (normalised path length)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


# -- example entropy maps ---------------------------------------------------------------------

# One network's final-checkpoint maps: {"seed": int, "inputs": {candidate position: {"entropy":
# (n,) with nan on excluded units, "foreground": (n,) bool, "points": (n,) bool or None}}}.
Maps = dict[str, Any]

_FG_POINT: dict[str, Any] = {"marker": "o", "facecolors": "none", "edgecolors": "lime"}
_BG_POINT: dict[str, Any] = {"marker": "x", "color": "red"}
_OUTLINE = "white"


def _examples(result: dict[str, Any], study: StudyResult, layer: str) -> str:
    """Entropy maps with knowledge points of a few example inputs, or a note why not."""
    networks = result["layers"][layer].get("networks", {})
    maps: dict[str, Maps] = {}
    for name, net in networks.items():
        seed = min((int(s) for s in net.get("inputs", {})), default=0)
        path = cache_path(study.out_dir, name, seed, layer)
        if not path.exists():
            return (
                "<p class='note'>Example entropy maps omitted: no cached maps for "
                f"{html.escape(name)} seed {seed} ({html.escape(str(path))}).</p>"
            )
        maps[name] = {
            "seed": seed,
            "inputs": _final_maps(io.load_npz(path), result.get("settings", {})),
        }
    chosen = _choose_examples(maps)
    if not chosen:
        return "<p class='note'>Example entropy maps omitted: no input was analysed.</p>"
    if study.student_data.train.modality == "text":
        return _token_examples(result, study, layer, maps, chosen)
    return _examples_figure(result, study, layer, maps, chosen)


def _final_maps(arrays: dict[str, Any], settings: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Final-checkpoint entropy, unit foreground and knowledge points by candidate position.

    Points are recomputed as the analysis does, on the network's effective inputs; inputs that
    are not effective for the network get no points (``None``)."""
    traj = EntropyTrajectory.from_arrays(arrays, info={})
    chosen = traj.effective_candidates(settings.get("effective_filter", True))
    points: dict[int, np.ndarray] = {}
    if len(chosen):
        m = network_metrics(
            traj.rows(chosen),
            b=settings.get("b", 0.2),
            per_input_level=settings.get("background_level") == "per_input",
            rho_include_initial=settings.get("rho_include_initial", True),
        )
        points = {int(c): m["points"][i, -1] for i, c in enumerate(chosen)}
    return {
        int(c): {
            "entropy": np.where(traj.valid[i], traj.entropy[i, -1], np.nan),
            "foreground": traj.foreground[i] & traj.valid[i],
            "points": points.get(int(c)),
        }
        for i, c in enumerate(traj.candidates)
    }


def _choose_examples(maps: dict[str, Maps]) -> list[int]:
    """Up to EXAMPLES candidate positions effective for every network, else any analysed."""
    if not maps:
        return []
    analysed = set.intersection(*(set(m["inputs"]) for m in maps.values()))
    effective = {
        c for c in analysed if all(m["inputs"][c]["points"] is not None for m in maps.values())
    }
    return (sorted(effective) + sorted(analysed - effective))[:EXAMPLES]


def _examples_figure(
    result: dict[str, Any],
    study: StudyResult,
    layer: str,
    maps: dict[str, Maps],
    chosen: list[int],
) -> str:
    """One row per example: the input, then each network's final entropy map with its points."""
    names = list(maps)
    ncol = len(names) + 1
    fig, axes = plt.subplots(
        len(chosen), ncol, figsize=(1.6 * ncol + 1.2, 1.9 * len(chosen) + 0.8), squeeze=False
    )
    fig.subplots_adjust(left=0.01, right=0.95, bottom=0.1, top=0.86, wspace=0.12, hspace=0.4)
    for r, c in enumerate(chosen):
        index = result["candidates"][c]
        xy = _cloud_xy(study, index)
        _show_input(axes[r, 0], study, index, xy)
        row = [maps[n]["inputs"][c] for n in names]
        vmin = min(np.nanmin(m["entropy"]) for m in row)
        vmax = max(np.nanmax(m["entropy"]) for m in row)
        for ax, name, m in zip(axes[r, 1:], names, row, strict=True):
            im = _show_map(ax, m, vmin, vmax, xy)
            ax.set_title(f"{name}\n{_counts(m)}" if r == 0 else _counts(m), fontsize=8)
        bar = fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.015, pad=0.01)
        bar.set_label("H (nats)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    _legend(fig)
    seed = min(m["seed"] for m in maps.values())
    fig.suptitle(
        f"Entropy maps at the final checkpoint, layer {layer}, seed {seed} "
        "(low entropy = unit used by the layer; knowledge points: H̄ − H > b)",
        fontsize=10,
    )
    return figure_html(fig, f"example entropy maps with knowledge points, layer {layer}")


def _token_examples(
    result: dict[str, Any],
    study: StudyResult,
    layer: str,
    maps: dict[str, Maps],
    chosen: list[int],
) -> str:
    """Text inputs as rows of tokens: per example the tokens (foreground underlined), then one
    row per network with each token shaded by its final entropy (one colour scale per
    example) and its knowledge points boxed (green: foreground, red: background)."""
    data = study.student_data.train
    names = list(maps)
    blocks = []
    for c in chosen:
        index = result["candidates"][c]
        ids = data.inputs[index].tolist()
        positions = [j for j, t in enumerate(ids) if t != PAD_ID]
        fg = data.foreground[index].tolist()
        row = [maps[n]["inputs"][c] for n in names]
        finite = np.concatenate([m["entropy"][np.isfinite(m["entropy"])] for m in row])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        words = "".join(
            _token(data.vocab[ids[j]], underline=fg[j] and ids[j] not in EXCLUDED_IDS)
            for j in positions
        )
        lines = [f"<tr><th>input #{index}</th><td>{words}</td></tr>"]
        for name, m in zip(names, row, strict=True):
            cells = "".join(_shaded_token(data.vocab[ids[j]], m, j, lo, hi) for j in positions)
            lines.append(
                f"<tr><th>{html.escape(name)}<br><small>{_counts(m)}</small></th>"
                f"<td>{cells}</td></tr>"
            )
        blocks.append(f"<table class='tokens'>{''.join(lines)}</table>")
    return (
        f"<p>Final-checkpoint entropy per token, layer <code>{html.escape(layer)}</code>, seed "
        f"{min(m['seed'] for m in maps.values())}: dark = low entropy (a token the layer uses), "
        "light = high; <span style='outline:2px solid #2a2'>boxed green</span> = foreground "
        "knowledge point, <span style='outline:2px solid #d22'>boxed red</span> = background "
        "knowledge point; underlined words are foreground; grey = not counted (padding, "
        "&lt;sep&gt;, a question's tokens).</p>" + "".join(blocks)
    )


def _token(word: str, underline: bool = False, style: str = "", title: str = "") -> str:
    deco = "text-decoration:underline;" if underline else ""
    tip = f" title='{html.escape(title)}'" if title else ""
    return (
        f"<span style='display:inline-block;margin:1px;padding:0 3px;{deco}{style}'{tip}>"
        f"{html.escape(word)}</span>"
    )


def _shaded_token(word: str, m: dict[str, Any], j: int, lo: float, hi: float) -> str:
    """A token on its entropy's viridis colour, boxed when it is a knowledge point."""
    h = float(m["entropy"][j])
    if not math.isfinite(h):
        return _token(word, style="color:#999")
    r, g, b, _ = plt.get_cmap("viridis")((h - lo) / (hi - lo) if hi > lo else 0.5)
    ink = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#fff"
    style = f"background:rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f});color:{ink};"
    if m["points"] is not None and m["points"][j]:
        style += f"outline:2px solid {'#2a2' if m['foreground'][j] else '#d22'};"
    return _token(word, style=style, title=f"H = {h:.2f} nats")


def _cloud_xy(study: StudyResult, index: int) -> np.ndarray | None:
    """The (x, y) projection of a point-cloud input (None for other modalities)."""
    data = study.student_data.train
    if data.modality != "points":
        return None
    return data.inputs[index, :, :2].detach().float().cpu().numpy()


def _show_input(ax: Axes, study: StudyResult, index: int, xy: np.ndarray | None) -> None:
    """The input image, or a point cloud's (x, y) projection: object points dark, clutter
    light."""
    if xy is not None:
        fg = study.student_data.train.foreground[index].numpy()
        ax.scatter(*xy[fg].T, s=4, c="0.2")
        ax.scatter(*xy[~fg].T, s=4, c="0.75")
        ax.set_aspect("equal")
    else:
        image = study.student_data.train.inputs_at(index).detach().float().cpu()
        image = image.permute(1, 2, 0).numpy().clip(0, 1)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"input #{index}", fontsize=8)
    ax.set_axis_off()


def _show_map(
    ax: Axes, m: dict[str, Any], vmin: float, vmax: float, xy: np.ndarray | None = None
) -> Any:
    """The entropy map with the foreground outline and the knowledge points overlaid; for a
    point cloud (``xy``: its (x, y) projection) each point coloured by its entropy."""
    if xy is not None:
        im = ax.scatter(*xy.T, c=m["entropy"], cmap="viridis", vmin=vmin, vmax=vmax, s=6)
        ax.set_aspect("equal")
        at = xy  # where each unit is drawn
    else:
        side = math.isqrt(m["entropy"].size)
        im = ax.imshow(m["entropy"].reshape(side, side), cmap="viridis", vmin=vmin, vmax=vmax)
        fg = m["foreground"].reshape(side, side)
        if fg.any() and not fg.all():
            up = 8  # contour of the upsampled mask: follows the unit boundaries
            coords = (np.arange(side * up) + 0.5) / up - 0.5
            mask = np.kron(fg, np.ones((up, up)))
            ax.contour(coords, coords, mask, levels=[0.5], colors=_OUTLINE, linewidths=1.0)
        unit = np.arange(side * side)
        at = np.stack([unit % side, unit // side], 1)  # (column, row) of each grid cell
    if m["points"] is not None:
        pts, fg = m["points"], m["foreground"]
        for sel, style in ((pts & fg, _FG_POINT), (pts & ~fg, _BG_POINT)):
            ax.scatter(*at[sel].T, s=24, linewidths=1.3, **style)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _counts(m: dict[str, Any]) -> str:
    if m["points"] is None:
        return "not effective"
    pts, fg = m["points"], m["foreground"]
    return f"fg {int((pts & fg).sum())}, bg {int((pts & ~fg).sum())}"


def _legend(fig: Figure) -> None:
    """Marker legend on a grey background, so the white outline shows."""
    line = plt.Line2D
    handles = [
        line([], [], ls="", marker="o", mfc="none", mec="lime", label="foreground point"),
        line([], [], ls="", marker="x", color="red", label="background point"),
        line([], [], color=_OUTLINE, label="foreground outline"),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=3,
        fontsize=8,
        facecolor="0.45",
        labelcolor="white",
    )
