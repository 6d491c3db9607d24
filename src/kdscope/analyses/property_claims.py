"""The property-transfer paper's findings, checked against this study (spec §3): one row per
property and distilled student with the paper's direction, the measured verdict and its numbers.

Reads the results of the property analyses that ran before it (it does not add any: a study
measures the properties its teacher and data allow). The paper's direction per property and
method family (KD, Hint, CRD; the soft-label control is expected to show no transfer):

=====================  ======  ======  ======
property               KD      Hint    CRD
=====================  ======  ======  ======
localisation           yes     weak    yes
adversarial            yes     yes     yes
colour/crop/shift      yes     no      yes
unseen domains         yes     yes     weak
decision boundary      yes     yes     weak
representation (CKA)   yes     weak    weak
shape bias             weak    no      no
sub-group bias         yes     –       –
accuracy-matched adv.  yes     yes     yes
=====================  ======  ======  ======

("weak": the paper's effect is small or mixed; compared but not scored). A row is
**reproduced** when the measured verdict is "transfers" where the paper found transfer, or
"no transfer" where it found none; **not reproduced** when it is the opposite or the control
shows the same effect ("confounded"); **unscored** for weak or absent expectations and for
verdicts without a control.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import oriented
from kdscope.report import fmt_summary, table

if TYPE_CHECKING:
    from kdscope.study import StudyResult

Expect = str  # "yes", "no", "weak" or "–"
EXPECTED: dict[str, dict[str, Expect]] = {
    "localisation": {"kd": "yes", "hint": "weak", "crd": "yes"},
    "adversarial": {"kd": "yes", "hint": "yes", "crd": "yes"},
    "invariance": {"kd": "yes", "hint": "no", "crd": "yes"},
    "domains": {"kd": "yes", "hint": "yes", "crd": "weak"},
    "decision_boundary": {"kd": "yes", "hint": "yes", "crd": "weak"},
    "representation_similarity": {"kd": "yes", "hint": "weak", "crd": "weak"},
    "shape_bias": {"kd": "weak", "hint": "no", "crd": "no"},
    "subgroups": {"kd": "yes"},
    "accuracy_matched": {"kd": "yes", "hint": "yes", "crd": "yes"},
}

Row = tuple[str, str, str, dict[str, Any] | None]  # property, student, verdict, gap summary


def _localisation(r: dict[str, Any]) -> Iterator[Row]:
    for n, s in r["students"].items():
        yield "localisation (Grad-CAM win rate, %)", n, s["verdict"], s["win_rate"]


def _adversarial(r: dict[str, Any]) -> Iterator[Row]:
    gaps = r["sources"]["teacher, ε×1"]["gaps"]
    for n, v in r["verdicts"].items():
        yield "adversarial (fooling-rate gap)", n, v, gaps[n]["fooled"]


def _invariance(r: dict[str, Any]) -> Iterator[Row]:
    for transform, per in r["verdicts"].items():
        headline = r["transforms"][transform]["headline"]
        for n, v in per.items():
            yield f"{transform} invariance at {headline} (agreement gap)", n, v["verdict"], v["gap"]


def _domains(r: dict[str, Any]) -> Iterator[Row]:
    for where, per in r["verdicts"].items():
        for n, v in per.items():
            yield f"consensus on {where}", n, v["verdict"], v["gap"]


def _decision_boundary(r: dict[str, Any]) -> Iterator[Row]:
    for domain, d in r["domains"].items():
        if d.get("seen_by_students", False) and len(r["domains"]) > 1:
            continue  # the paper's claim is about the domains the students never saw
        for n, gap in d["gaps"].items():
            yield f"decision-boundary similarity, {domain}", n, d["verdicts"][n], gap


def _representation(r: dict[str, Any]) -> Iterator[Row]:
    for n, c in r["comparisons"].items():
        yield "representation (matched-layer CKA gap)", n, c["verdict"], c["difference"]


def _shape_bias(r: dict[str, Any]) -> Iterator[Row]:
    for n, s in r["students"].items():
        sign = 1.0 if r["teacher_ward"] == "higher" else -1.0
        yield (
            f"shape bias ({r['teacher_ward']} is teacher-ward)",
            n,
            s["verdict"],
            oriented(s["gap"], sign),
        )


def _subgroups(r: dict[str, Any]) -> Iterator[Row]:
    for n, s in r["students"].items():
        gap = oriented(s["shortfall"], -1.0)
        yield "gain elsewhere − gain on the teacher's weakest group", n, s["verdict"], gap


def _accuracy_matched(r: dict[str, Any]) -> Iterator[Row]:
    for n, s in r["students"].items():
        verdict = {"still transfers": "transfers"}.get(s["verdict"], s["verdict"])
        yield "fooling-rate gap at matched accuracy", n, verdict, s["fooling_gap"]


EXTRACT: dict[str, Callable[[dict[str, Any]], Iterator[Row]]] = {
    "localisation": _localisation,
    "adversarial": _adversarial,
    "invariance": _invariance,
    "domains": _domains,
    "decision_boundary": _decision_boundary,
    "representation_similarity": _representation,
    "shape_bias": _shape_bias,
    "subgroups": _subgroups,
    "accuracy_matched": _accuracy_matched,
}


def status(expected: Expect, verdict: str) -> str:
    """reproduced / not reproduced / unscored for one row."""
    if verdict == "control" or expected not in ("yes", "no"):
        return "unscored"
    if verdict == "confounded":
        return "not reproduced"
    if verdict in ("no control", "not matched"):
        return "unscored"
    transferred = verdict == "transfers"
    return "reproduced" if transferred == (expected == "yes") else "not reproduced"


@register_analysis
class PropertyClaimsAnalysis(Analysis):
    name = "property_claims"
    title = "Property transfer: which of the paper's findings reproduced"

    def applies_to(self, study: StudyResult) -> str | None:
        if not any(a in study.results for a in EXTRACT):
            return "no property analysis ran before it (list it after them)"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        methods = {g.name: g.method for g in study.by_role("student")}
        rows = []
        for analysis, extract in EXTRACT.items():
            result = study.results.get(analysis)
            if result is None:
                continue
            for prop, student, verdict, gap in extract(result):
                method = methods.get(student, "")
                expected = "no" if method == "soft_label" else EXPECTED[analysis].get(method, "–")
                rows.append(
                    {
                        "analysis": analysis,
                        "property": prop,
                        "student": student,
                        "method": method,
                        "paper": expected,
                        "verdict": verdict,
                        "gap": gap,
                        "status": status(expected, verdict),
                    }
                )
        counts = {s: sum(r["status"] == s for r in rows) for s in ("reproduced", "not reproduced")}
        measured = sorted({r["analysis"] for r in rows})
        return {
            "rows": rows,
            "counts": counts,
            "measured": measured,
            "not_measured": [a for a in EXTRACT if a not in measured],
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        css = {"reproduced": "better", "not reproduced": "worse"}
        rows = [
            [
                html.escape(r["property"]),
                html.escape(r["student"]),
                r["paper"],
                fmt_summary(r["gap"], sign=True) if r["gap"] else "–",
                r["verdict"],
                f"<span class='{css.get(r['status'], 'inconclusive')}'>{r['status']}</span>",
            ]
            for r in result["rows"]
        ]
        c = result["counts"]
        missing = ", ".join(result["not_measured"]) or "none"
        return "\n".join(
            [
                f"<p>{c['reproduced']} findings reproduced, {c['not reproduced']} not reproduced "
                f"(the others unscored: the paper's effect is weak, or no control ran). Not "
                f"measured in this study: {html.escape(missing)}. 'paper': whether the paper "
                "found transfer for this method family (spec §3); gaps are student − independent "
                "student, teacher-ward up, mean [95 % interval].</p>",
                table(["property", "student", "paper", "gap", "verdict", "status"], rows),
            ]
        )
