"""``summary.json`` and the self-contained ``report.html`` of a study."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdscope import device, io
from kdscope.analyses.guards import study_guards
from kdscope.render import figure_html, fmt_summary, plt
from kdscope.trainer import read_metrics
from kdscope.version import __version__
from kdscope.weight_search import report_section

if TYPE_CHECKING:
    from kdscope.analyses import AnalysisOutcome
    from kdscope.study import StudyResult

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.better{color:#067d17;font-weight:bold}.worse{color:#b00020;font-weight:bold}
.inconclusive{color:#8a6d00}.note{color:#666}pre{background:#f7f7f7;padding:1em;overflow:auto}
img{max-width:100%}.guards{border:2px solid #b00020;padding:0 1em;margin:1em 0}
figcaption{color:#555;font-size:.9em;max-width:900px}nav.toc{background:#f7f7f7;padding:.3em 1em}
.glance>li{list-style:none}.glance ul{margin:.2em 0 .6em}summary{cursor:pointer}
"""


def environment(study: StudyResult) -> dict[str, Any]:
    """What a study's numbers depend on beyond its file: the torch version, the thread count of
    each job and the device (a study is bit-identical only at the same count, on the same
    device: docs/scaling.md), and the executor that ran it (which changes no number)."""
    return {
        "torch": torch.__version__,
        "threads": study.executor.job_threads(),
        "device": str(device.current()),
        "executor": study.executor.describe(),
    }


def _computed_with(env: dict[str, Any]) -> str:
    """One sentence on what the numbers were computed with (:func:`environment`)."""
    ex = env["executor"]
    where = {"local": "in one process", "processes": f"on {ex.get('workers')} worker processes"}
    same = (
        "the numbers are bit-identical at the same thread count per job, whatever executor "
        "runs the jobs"
        if env["device"] == "cpu"
        else "on a GPU the numbers repeat on the same GPU model, driver and torch version"
    )
    return (
        f"Computed with torch {env['torch']} on {env['device']}, {env['threads']} thread(s) per "
        f"job ({where.get(ex['name'], 'on Ray')}); {same}."
    )


def build_summary(study: StudyResult, outcomes: list[AnalysisOutcome]) -> dict[str, Any]:
    models = {}
    for g in study.groups.values():
        seeds = {
            str(seed): {k: run.result[k] for k in ("test_acc", "train_acc", "test_loss", "epochs")}
            for seed, run in sorted(g.runs.items())
        }
        accs = [s["test_acc"] for s in seeds.values()]
        models[g.name] = {
            "role": g.role,
            "method": g.method,
            "method_params": g.method_params,
            "model": g.model.label() if g.model is not None else "TorchScript",
            "baseline": g.baseline,
            "seeds": seeds,
            "test_acc_mean": sum(accs) / len(accs),
        }
        if g.is_given:
            models[g.name]["given"] = {str(k): str(v.path) for k, v in sorted(g.given.items())}
    analyses = {
        o.analysis.name: o.result if o.skipped is None else {"skipped": o.skipped} for o in outcomes
    }
    return {
        "study": study.config.name,
        "kdscope_version": __version__,
        "environment": environment(study),
        "dataset": {
            "name": study.config.dataset.name,
            **study.config.dataset.params,
            "n_train": len(study.data.train),
            "student_n_train": len(study.student_data.train),
            "n_test": len(study.data.test),
            "num_classes": study.data.num_classes,
        },
        "models": models,
        **({"weight_search": study.weight_search} if study.weight_search else {}),
        "guards": study_guards(study, study.results),
        "analyses": analyses,
    }


def _seed_band(runs: list[list[dict[str, str]]], column: str) -> tuple[Any, Any, Any]:
    """Mean, minimum and maximum over seeds, per epoch, of ``column`` of the runs' rows."""
    values = np.array([[float(r[column]) for r in rows] for rows in runs])
    return values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def _phase_switches(rows: list[dict[str, str]]) -> list[tuple[int, str]]:
    """The epochs at which a run enters a new phase (``phase`` column), after the first."""
    phases = [r.get("phase", "") for r in rows]
    return [
        (int(rows[i]["epoch"]), phases[i])
        for i in range(1, len(rows))
        if phases[i] != phases[i - 1]
    ]


CURVES_CAPTION = (
    "How to read it: one colour per model; the line is the mean over its seeds and the shaded "
    "band spans the lowest to the highest seed (no band for a single seed, e.g. the teacher). "
    "Left: test accuracy after each epoch; right: the training loss the method minimises (the "
    "sum of its weighted terms, log scale; losses of different methods are not comparable). A "
    "vertical dashed line marks where a two-phase method (e.g. feature_mimic) switches phase, "
    "labelled with the phase it enters."
)


def _curves(study: StudyResult) -> str:
    """Test accuracy and training loss per epoch of every model group: the mean over seeds with
    a min–max band, and the phase switches of multi-phase methods as dashed lines. A damaged
    ``metrics.csv`` (cut mid-row, a header only) is a one-line error naming it, never a silently
    missing curve."""
    trained = [g for g in study.groups.values() if not g.is_given]
    if not trained:
        return "<p class='note'>Every model was given, not trained: no training curves.</p>"
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, g in enumerate(trained):
        runs = [
            read_metrics(run.dir / "metrics.csv", run.plan.train.epochs)
            for _seed, run in sorted(g.runs.items())
        ]
        ep = [int(r["epoch"]) for r in runs[0]]
        color = f"C{i % 10}"
        for ax, column in zip(axes, ("test_acc", "loss"), strict=True):
            mean, low, high = _seed_band(runs, column)
            ax.plot(
                ep,
                mean,
                color=color,
                label=f"{g.name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})",
            )
            if len(runs) > 1:
                ax.fill_between(ep, low, high, color=color, alpha=0.2, linewidth=0)
            for epoch, phase in _phase_switches(runs[0]):
                ax.axvline(epoch - 0.5, color=color, linestyle="--", linewidth=1)
                if ax is axes[0]:
                    ax.annotate(
                        f"{g.name}: {phase}",
                        (epoch - 0.5, 1.0),
                        xycoords=("data", "axes fraction"),
                        fontsize=7,
                        color=color,
                        rotation=90,
                        va="top",
                        ha="right",
                    )
    axes[0].set(
        xlabel="epoch", ylabel="test accuracy", title="Test accuracy (mean, min–max of seeds)"
    )
    axes[1].set(
        xlabel="epoch", ylabel="training loss", title="Training loss (sum of weighted terms)"
    )
    axes[1].set_yscale("log")
    for ax in axes:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    return (
        f"<figure>{figure_html(fig, 'training curves: mean over seeds with a min-max band')}"
        f"<figcaption>{html.escape(CURVES_CAPTION)}</figcaption></figure>"
    )


def _models_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, m in summary["models"].items():
        seeds = ", ".join(f"{k}: {v['test_acc']:.3f}" for k, v in m["seeds"].items())
        params = ", ".join(f"{k}={v}" for k, v in m["method_params"].items()) or "defaults"
        if "given" in m:  # trained elsewhere: the method is the user's word for it
            files = ", ".join(f"seed {k}: {Path(v).name}" for k, v in m["given"].items())
            params = f"given ({files})"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{m['role']}</td><td>{html.escape(m['method'])}</td>"
            f"<td>{html.escape(params)}</td><td>{html.escape(m['model'])}</td>"
            f"<td>{m['test_acc_mean']:.4f}</td><td>{seeds}</td></tr>"
        )
    return (
        "<table><tr><th>model</th><th>role</th><th>method</th><th>hyper-parameters</th>"
        "<th>architecture</th><th>mean test acc.</th><th>test acc. per seed</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _given_note(study: StudyResult, outcomes: list[AnalysisOutcome]) -> str:
    """For a study with given models: which were given, and what the analyses trained beyond
    them (with the recipes of study.yaml); nothing otherwise."""
    given = study.given_groups()
    if not given:
        return ""
    trained = [g.name for g in study.groups.values() if not g.is_given]
    extra = [
        f"<li><b>{html.escape(o.analysis.name)}</b>: {html.escape(o.analysis.extra_models())}</li>"
        for o in outcomes
        if o.skipped is None and o.analysis.extra_models()
    ]
    parts = [
        f"<p class='note'>Given, not trained by kdscope: {html.escape(', '.join(given))} (their "
        "files are in the table). "
        + (
            f"Trained by kdscope: {html.escape(', '.join(trained))}, with the recipes in the "
            "configuration below."
            if trained
            else "kdscope trained none of the study's models."
        )
        + "</p>"
    ]
    if extra:
        parts.append(
            "<p class='note'>Models the analyses trained beyond these, with the recipes in the "
            f"configuration below:</p><ul>{''.join(extra)}</ul>"
        )
    return "".join(parts)


def _guards_html(guards: list[dict[str, str]]) -> str:
    """The sanity guards as a box at the top of the report (nothing when none applies)."""
    if not guards:
        return (
            "<p class='note'>Sanity guards: none raised (every model above chance, the teacher "
            "ahead of its students, enough seeds and inputs).</p>"
        )
    items = "".join(
        f"<li><b class='{'worse' if g['severity'] == 'error' else 'inconclusive'}'>"
        f"{html.escape(g['guard'])}</b>: {html.escape(g['message'])}. "
        f"<i>Fix:</i> {html.escape(g['fix'])}.</li>"
        for g in guards
    )
    return (
        "<div class='guards'><h2>Read this first: what limits these verdicts</h2>"
        f"<ul>{items}</ul></div>"
    )


def _slug(title: str, taken: set[str]) -> str:
    """An ``id`` for a section titled ``title``, unique among ``taken`` (which it joins)."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _toc(sections: list[tuple[str, str]]) -> str:
    """The table of contents: a link per ``(id, title)`` section."""
    links = "".join(f"<li><a href='#{i}'>{html.escape(t)}</a></li>" for i, t in sections)
    return f"<nav class='toc' id='contents'><b>Contents</b><ol>{links}</ol></nav>"


def render_report(
    study: StudyResult, outcomes: list[AnalysisOutcome], summary: dict[str, Any]
) -> str:
    """The self-contained ``report.html``: the guards, the verdicts at a glance, a table of
    contents, then one section per part of the study, the configuration folded away last."""
    cfg = study.config
    taken = {"contents", "read-this-first"}
    sections: list[tuple[str, str]] = []
    body: list[str] = []

    def section(title: str, content: str) -> None:
        sid = _slug(title, taken)
        sections.append((sid, title))
        body.append(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{content}</section>")

    section("At a glance: what distillation put into each student", _glance_html(summary))
    section("Models", _models_table(summary) + _given_note(study, outcomes))
    if study.weight_search:
        section("Distillation-weight search", report_section(study.weight_search))
    section("Training curves", _curves(study))
    for o in outcomes:
        if o.skipped is not None:
            content = f"<p class='note'>Skipped: {html.escape(o.skipped)}</p>"
        else:
            assert o.result is not None
            content = o.analysis.report_section(o.result, study)
        section(o.analysis.title or o.analysis.name, content)
    section(
        "Configuration",
        "<details><summary>study.yaml (click to unfold)</summary>"
        f"<pre>{html.escape(cfg.to_yaml())}</pre></details>",
    )
    head = [
        f"<h1>kdscope study: {html.escape(cfg.name)}</h1>",
        f"<p class='note'>kdscope {__version__}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Dataset {html.escape(cfg.dataset.name)}: {study.data.num_classes} classes, "
        f"{len(study.data.test)} test inputs; the teacher trains on {len(study.data.train)} "
        f"training inputs, baselines and students on {len(study.student_data.train)}. "
        f"{html.escape(_computed_with(summary['environment']))}</p>",
        f"<div id='read-this-first'>{_guards_html(summary['guards'])}</div>",
    ]
    toc = _toc([("read-this-first", "Read this first: sanity guards"), *sections])
    page = "\n".join([*head, body[0], toc, *body[1:]])
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>kdscope: {html.escape(cfg.name)}</title><style>{_CSS}</style></head>"
        f"<body>{page}</body></html>\n"
    )


def write_summary_and_report(study: StudyResult, outcomes: list[AnalysisOutcome]) -> dict[str, Any]:
    summary = build_summary(study, outcomes)
    io.write_json(study.out_dir / "summary.json", summary)
    io.write_text(study.out_dir / "report.html", render_report(study, outcomes, summary))
    return summary


# --- "at a glance": plain sentences from the verdicts of summary.json --------------------------

#: per knowledge-point hypothesis: what a student does when it holds, and when it does not
_HYPOTHESIS_WORDS: dict[str, tuple[int, str, str]] = {
    "quantity_quality": (
        1,
        "encodes more foreground and fewer background knowledge points, of higher quality",
        "encodes fewer or worse knowledge points",
    ),
    "learning_speed": (
        2,
        "learns from a shorter, more simultaneous weight path",
        "learns from a longer weight path",
    ),
    "stability": (3, "learns its knowledge points more stably", "learns them less stably"),
}

#: per property-transfer verdict: what it says about the student (controls filled in later)
_TRANSFER_WORDS = {
    "transfers": "moves toward the teacher's{beyond}",
    "no transfer": "does not move toward the teacher's (equivalent to the independent student)",
    "away from the teacher": "moves away from the teacher's",
    "confounded": "moves toward the teacher's, but so does a control (confounded)",
    "control inconclusive": "moves toward the teacher's; whether beyond the controls is unclear",
    "no control": "moves toward the teacher's (no control to compare with)",
}

#: per accuracy verdict of a student minus its baseline
_ACCURACY_WORDS = {
    "better": "more accurate than {baseline}",
    "worse": "less accurate than {baseline}",
    "equivalent": "as accurate as {baseline} (equivalent)",
    "inconclusive": "no clear difference from {baseline} (inconclusive)",
}


def _signed(s: dict[str, Any] | None) -> str:
    """``+mean [lo, hi]`` of a summary, or "no estimate"."""
    text = fmt_summary(s, sign=True)
    return "no estimate" if text == "n/a" else text


def _accuracy_sentence(name: str, diff: dict[str, Any] | None, baseline: str) -> str | None:
    """Test accuracy of ``name`` against its baseline, or None without a difference."""
    if diff is None:
        return None
    verdict = diff.get("verdict", "inconclusive")
    words = _ACCURACY_WORDS.get(verdict, f"{verdict} against {{baseline}}").format(
        baseline=baseline
    )
    return f"test accuracy: {words} ({_signed(diff)})"


def _knowledge_point_sentence(name: str, result: dict[str, Any]) -> str | None:
    """Per layer, the knowledge-point hypotheses of ``name`` (comparisons meant for verdicts)."""
    layers = []
    for layer, found in result.get("layers", {}).items():
        c = found.get("comparisons", {}).get(name)
        if not c or not c.get("for_verdicts"):
            continue
        said = []
        for hypothesis, h in c.get("hypotheses", {}).items():
            number, holds, fails = _HYPOTHESIS_WORDS.get(hypothesis, (0, hypothesis, hypothesis))
            label = f"hypothesis {number}" if number else hypothesis.replace("_", " ")
            verdict = h.get("verdict", "inconclusive")
            if verdict == "holds":
                said.append(f"{holds} than {c.get('baseline', 'the baseline')} ({label} holds)")
            elif verdict == "does not hold":
                said.append(
                    f"{fails} than {c.get('baseline', 'the baseline')} ({label} does not hold)"
                )
            else:
                said.append(f"{label} {verdict}")
        if said:
            layers.append(f"at {layer}, " + ", ".join(said))
    return "knowledge points: " + "; ".join(layers) if layers else None


def _transfer_phrase(finding: str, r: dict[str, Any]) -> str:
    """One property-transfer record of a student as a phrase."""
    verdict = r["verdict"]
    controls = ", ".join(r.get("controls", {}))
    beyond = f", beyond the {controls} control" if controls else ""
    words = _TRANSFER_WORDS.get(verdict, verdict).format(beyond=beyond)
    scored = " (premise unmet: not scored)" if r.get("premise") == "unmet" else ""
    return f"{finding}: {words} ({_signed(r.get('gap'))}){scored}"


def _property_sentence(name: str, result: dict[str, Any]) -> str | None:
    """The property-transfer verdicts of one analysis for ``name``."""
    said = [
        _transfer_phrase(finding, students[name])
        for finding, students in result.get("verdicts", {}).items()
        if "verdict" in students.get(name, {})
    ]
    return "; ".join(said) if said else None


def _guard_sentence(name: str, guards: list[dict[str, str]]) -> str | None:
    """The guards whose message names the student ``name``."""
    kinds = sorted(
        {
            g["guard"]
            for g in guards
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", g["message"])
        }
    )
    return f"limited by the guard(s) {', '.join(kinds)} (see above)" if kinds else None


def glance_sentences(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Per distilled student of ``summary`` (a study's ``summary.json``), one plain sentence per
    family of verdicts: accuracy against its baseline, knowledge points, each property
    analysis, and the guards that name it."""
    analyses = {k: v for k, v in summary.get("analyses", {}).items() if "skipped" not in v}
    diffs = analyses.get("accuracy", {}).get("student_minus_baseline", {})
    out: dict[str, list[str]] = {}
    for name, m in summary["models"].items():
        if m["role"] != "student":
            continue
        found = [_accuracy_sentence(name, diffs.get(name), m.get("baseline") or "the baseline")]
        for analysis, result in analyses.items():
            if analysis == "knowledge_points":
                found.append(_knowledge_point_sentence(name, result))
            elif "verdicts" in result:
                found.append(_property_sentence(name, result))
        found.append(_guard_sentence(name, summary.get("guards", [])))
        said = [s for s in found if s]
        out[name] = [f"{name}: {s}." for s in said] or [f"{name}: no verdict was measured."]
    return out


def _study_claims(summary: dict[str, Any]) -> list[str]:
    """Study-wide sentences: the three-levels claims and the property-claims tally."""
    analyses = summary.get("analyses", {})
    said = [
        f"{c['claim']}: {c.get('verdict', 'no verdict')}."
        for c in analyses.get("three_levels", {}).get("claims", [])
    ]
    counts = analyses.get("property_claims", {}).get("counts", {})
    if counts:
        tally = ", ".join(f"{v} {k}" for k, v in counts.items())
        said.append(f"The property-transfer paper's findings: {tally}.")
    return said


def _glance_html(summary: dict[str, Any]) -> str:
    """The first section: what distillation put into each student, in plain sentences."""
    items = "".join(
        f"<li class='glance-student' data-student='{html.escape(name)}'><ul>"
        + "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
        + "</ul></li>"
        for name, sentences in glance_sentences(summary).items()
    )
    claims = _study_claims(summary)
    blocked = sum(g["severity"] == "error" for g in summary.get("guards", []))
    parts = [
        "<p class='note'>Each sentence restates a verdict of the sections below (95 % interval "
        "over seeds in brackets); <i>inconclusive</i> means the interval is too wide to tell.</p>",
    ]
    if blocked:
        parts.append(
            f"<p class='worse'>{blocked} guard(s) of severity error block these verdicts: "
            "read the box above first.</p>"
        )
    parts.append(f"<ul class='glance'>{items}</ul>" if items else "<p>No distilled student.</p>")
    if claims:
        parts.append(
            "<p>Study-wide claims:</p><ul class='glance-claims'>"
            + "".join(f"<li>{html.escape(c)}</li>" for c in claims)
            + "</ul>"
        )
    return "".join(parts)
