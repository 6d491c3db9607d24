"""``summary.json`` and the self-contained ``report.html`` of a study."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from kdscope import __version__, io
from kdscope.analyses.guards import study_guards
from kdscope.render import figure_html, plt
from kdscope.trainer import read_metrics
from kdscope.weight_search import report_section

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
