"""HTML pieces shared by the report and the analyses' report sections: embedded figures,
tables, intervals, premise notes and verdict tables.

Take ``plt`` from here: it is pyplot, imported on first use with matplotlib's ``Agg`` backend
selected first (importing matplotlib costs about 0.6 s, which a worker process that never draws
a figure need not pay).
"""

from __future__ import annotations

import base64
import html
import io as _io
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kdscope.verdicts import css

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PREMISE_TEXT",
    "figure_html",
    "fmt_interval",
    "fmt_summary",
    "plt",
    "premise_note",
    "table",
    "verdict_table",
]


class _Pyplot:
    """matplotlib.pyplot, imported (with the ``Agg`` backend) on the first attribute read."""

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401  (whatever pyplot holds)
        return getattr(_pyplot(), name)


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


plt: Any = _Pyplot()


def figure_html(fig: Figure, alt: str = "") -> str:
    """Embed a matplotlib figure as a base64 PNG ``<img>`` (and close it)."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


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
