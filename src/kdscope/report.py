"""``summary.json`` and the self-contained ``report.html`` of a study."""

from __future__ import annotations

import base64
import html
import io as _io
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kdscope import __version__, io  # noqa: E402

if TYPE_CHECKING:
    from kdscope.analyses import AnalysisOutcome
    from kdscope.study import StudyResult

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.better,.holds{color:#067d17;font-weight:bold}.worse,.contradicts{color:#b00020;font-weight:bold}
.inconclusive{color:#8a6d00}.note{color:#666}pre{background:#f7f7f7;padding:1em;overflow:auto}
img{max-width:100%}.guards{border:2px solid #b00020;padding:0 1em;margin:1em 0}
"""


def figure_html(fig: Figure, alt: str = "") -> str:
    """Embed a matplotlib figure as a base64 PNG ``<img>`` (and close it)."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def build_summary(study: StudyResult, outcomes: list[AnalysisOutcome]) -> dict[str, Any]:
    from kdscope.analyses.guards import study_guards

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
            "model": g.model.label(),
            "baseline": g.baseline,
            "seeds": seeds,
            "test_acc_mean": sum(accs) / len(accs),
        }
    analyses = {
        o.analysis.name: o.result if o.skipped is None else {"skipped": o.skipped} for o in outcomes
    }
    return {
        "study": study.config.name,
        "kdscope_version": __version__,
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


def _curves(study: StudyResult) -> str:
    """Test accuracy and training loss per epoch of every run; a damaged ``metrics.csv`` (cut
    mid-row, a header only) is a one-line error naming it, never a silently missing curve."""
    from kdscope.trainer import (
        read_metrics,
    )  # not at the top: trainer -> config -> analyses -> report

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for g in study.groups.values():
        for i, (_seed, run) in enumerate(sorted(g.runs.items())):
            rows = read_metrics(run.dir / "metrics.csv", run.plan.train.epochs)
            ep = [int(r["epoch"]) for r in rows]
            label = g.name if i == 0 else None
            color = f"C{list(study.groups).index(g.name) % 10}"
            axes[0].plot(
                ep, [float(r["test_acc"]) for r in rows], color=color, alpha=0.8, label=label
            )
            axes[1].plot(ep, [float(r["loss"]) for r in rows], color=color, alpha=0.8, label=label)
    axes[0].set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy (every seed)")
    axes[1].set(
        xlabel="epoch", ylabel="training loss", title="Training loss (sum of weighted terms)"
    )
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    return figure_html(fig, "training curves")


def _models_table(summary: dict[str, Any]) -> str:
    rows = []
    for name, m in summary["models"].items():
        seeds = ", ".join(f"{k}: {v['test_acc']:.3f}" for k, v in m["seeds"].items())
        params = ", ".join(f"{k}={v}" for k, v in m["method_params"].items()) or "defaults"
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


def render_report(
    study: StudyResult, outcomes: list[AnalysisOutcome], summary: dict[str, Any]
) -> str:
    cfg = study.config
    parts = [
        f"<h1>kdscope study: {html.escape(cfg.name)}</h1>",
        f"<p class='note'>kdscope {__version__}, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Dataset {html.escape(cfg.dataset.name)}: {study.data.num_classes} classes, "
        f"{len(study.data.test)} test inputs; the teacher trains on {len(study.data.train)} "
        f"training inputs, baselines and students on {len(study.student_data.train)}.</p>",
        _guards_html(summary["guards"]),
        "<h2>Models</h2>",
        _models_table(summary),
    ]
    if study.weight_search:
        from kdscope.weight_search import report_section

        parts += ["<h2>Distillation-weight search</h2>", report_section(study.weight_search)]
    parts += ["<h2>Training curves</h2>", _curves(study)]
    for o in outcomes:
        parts.append(f"<h2>{html.escape(o.analysis.title or o.analysis.name)}</h2>")
        if o.skipped is not None:
            parts.append(f"<p class='note'>Skipped: {html.escape(o.skipped)}</p>")
        else:
            assert o.result is not None
            parts.append(o.analysis.report_section(o.result, study))
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(cfg.to_yaml())}</pre>"]
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>kdscope: {html.escape(cfg.name)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_summary_and_report(study: StudyResult, outcomes: list[AnalysisOutcome]) -> dict[str, Any]:
    summary = build_summary(study, outcomes)
    io.write_json(study.out_dir / "summary.json", summary)
    io.write_text(study.out_dir / "report.html", render_report(study, outcomes, summary))
    return summary


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already (escape text with ``html.escape``)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fmt_interval(s: dict[str, Any], digits: int = 3, sign: bool = False) -> str:
    """``[lo, hi]`` of a :func:`kdscope.stats.summarise` result; with too few seeds for an
    interval, ``no interval (k seed)``."""
    lo, hi = s["ci95"]
    if lo != lo or hi != hi:  # NaN
        n = s.get("n_seeds", 0)
        return f"no interval ({n} seed{'s' if n != 1 else ''})"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def fmt_summary(s: dict[str, Any] | None, digits: int = 3, sign: bool = False) -> str:
    """``mean [lo, hi]`` of a :func:`kdscope.stats.summarise` result (``n/a`` when missing or
    undefined); undefined seeds are counted after it."""
    if not s or s.get("mean") is None or s["mean"] != s["mean"]:  # missing or NaN
        return "n/a"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    out = f"{f.format(s['mean'])} {fmt_interval(s, digits, sign)}"
    if s.get("undefined_seeds"):
        out += f" ({len(s['undefined_seeds'])} seed(s) undefined)"
    return out


PREMISE_TEXT = {
    "met": "met",
    "unmet": "<b>unmet</b>",
    "uncertain": "uncertain",
    "too few seeds": "too few seeds",
}


def premise_note(premises: dict[str, str]) -> str:
    """The property-transfer premise per distilled student, as a sentence."""
    if not premises:
        return ""
    items = "; ".join(
        f"{html.escape(n)} {PREMISE_TEXT.get(p, html.escape(p))}" for n, p in premises.items()
    )
    return (
        "<p class='note'>Premise of the paper (the distilled student is more accurate than its "
        f"independent student; paired accuracy interval above 0): {items}. Verdicts under an "
        "unmet premise are shown but not scored as the paper's findings.</p>"
    )


def verdict_table(verdicts: dict[str, dict[str, dict[str, Any]]], gap: str, margin: float) -> str:
    """One row per transfer record (:func:`kdscope.analyses.study_views.transfer_record`):
    where it was measured, the student, its teacher-ward gap, its effect beyond each control,
    the premise and the verdict."""
    from kdscope.verdicts import css

    rows = [
        [
            html.escape(where),
            html.escape(n),
            fmt_summary(r["gap"], sign=True),
            "; ".join(
                f"{html.escape(c)}: {fmt_summary(d, sign=True)}" for c, d in r["controls"].items()
            )
            or "none",
            PREMISE_TEXT.get(r["premise"], html.escape(r["premise"])),
            f"<span class='{css(r['verdict'])}'>{html.escape(r['verdict'])}</span>",
        ]
        for where, per in verdicts.items()
        for n, r in per.items()
    ]
    return (
        f"<p class='note'>Verdict rule: <i>no transfer</i> needs the 90 % interval of the gap "
        f"inside ±{margin:g} (two one-sided tests); <i>transfers</i> needs the 95 % interval "
        "above 0 and the student's effect beyond every control above 0 (e.g. distilled − "
        "soft-label control, paired by seed); <i>confounded</i> when a control shows the "
        "effect too (its difference equivalent to 0 or below it), <i>control inconclusive</i> "
        "when a difference is too uncertain to tell.</p>"
        + table(
            [
                "measured on",
                "student",
                html.escape(gap),
                "effect beyond each control",
                "premise",
                "verdict",
            ],
            rows,
        )
    )
