"""The property-transfer paper's findings, checked against this study: one row per measured
verdict, and one count per distinct finding.

Reads the results of the property analyses that ran before it. Each writes ``verdicts``:
``{what: {student: record}}`` with the record of
:func:`kdscope.analyses.study_views.transfer_record` (the verdict, the teacher-ward gap, the
student's effect beyond each control, the equivalence margin, the premise). The paper's
direction per property and method family (the soft-label control is a control, never a
finding):

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
=====================  ======  ======  ======

Scoring of a row (:func:`kdscope.verdicts.claim_status`):

* the paper found transfer ("yes"): **reproduced** when the verdict is *transfers*; **not
  reproduced** when it is *no transfer* (equivalence shown), *away from the teacher* or
  *confounded* (a control shows the effect too: equivalent to the student, or beyond it);
* the paper found none ("no"): **reproduced** only when equivalence within the stated margin
  was shown (*no transfer*); **not reproduced** when the verdict is *transfers*. A wide interval
  around 0 is absence of evidence, not evidence of absence;
* everything else is **not scored**, with the reason: a weak or absent expectation,
  *inconclusive*, *control inconclusive*, *too few seeds*, *no control*, *model at chance*, or
  the paper's premise
  unmet (the distilled student is not more accurate than the independent one, the condition
  under which the paper made its claims).

A **finding** is one property (the sub-properties the paper reports separately count apart:
colour, crop, shift; unseen domains and renderings) for one method family; the rows behind it
(several students of one family, several unseen domains) count once: reproduced when every
scored row is, not reproduced when every scored row is not, mixed otherwise
(:func:`kdscope.verdicts.combine_statuses`). The accuracy-matched rows re-measure the adversarial
finding on retrained students: shown, never counted.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.render import fmt_summary, table
from kdscope.verdicts import (
    MIXED,
    NOT_REPRODUCED,
    NOT_SCORED,
    REPRODUCED,
    claim_status,
    combine_statuses,
    css,
)

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
#: analyses whose rows re-measure another analysis' finding: shown, not counted
ROBUSTNESS = {"accuracy_matched": "adversarial"}


def finding_name(analysis: str, what: str) -> str:
    """The finding a verdict belongs to: the decision boundaries of several unseen domains are
    one finding, and so are the renderings; other keys are findings of their own."""
    if analysis == "decision_boundary":
        return "decision-boundary similarity on unseen domains"
    if analysis == "domains" and what.endswith("rendering"):
        return "consensus on renderings"
    return what


@register_analysis
class PropertyClaimsAnalysis(Analysis):
    """One table of Ojha et al.'s findings per property and method family (KD, Hint, CRD,
    soft-label): the measured gap, its verdict against the controls, and whether the paper's
    finding reproduced, was contradicted, or could not be scored and why
    (docs/property_transfer.md).
    """

    name = "property_claims"
    title = "Property transfer: which of the paper's findings reproduced"

    def applies_to(self, study: StudyResult) -> str | None:
        if not any(a in study.results for a in EXPECTED):
            return "no property analysis ran before it (list it after them)"
        return None

    def run(self, study: StudyResult) -> dict[str, Any]:
        methods = {g.name: g.method for g in study.by_role("student")}
        rows = []
        for analysis in EXPECTED:
            result = study.results.get(analysis)
            for what, per in (result or {}).get("verdicts", {}).items():
                for student, rec in per.items():
                    method = methods.get(student, "")
                    expected = EXPECTED[analysis].get(method, "–")
                    st, reason = claim_status(expected, rec["verdict"], rec.get("premise", "met"))
                    counted = analysis not in ROBUSTNESS
                    rows.append(
                        {
                            "analysis": analysis,
                            "property": what,
                            "finding": finding_name(ROBUSTNESS.get(analysis, analysis), what),
                            "student": student,
                            "method": method,
                            "family": method,
                            "paper": expected,
                            "verdict": rec["verdict"],
                            "premise": rec.get("premise"),
                            "gap": rec.get("gap"),
                            "margin": rec.get("margin"),
                            "status": st if counted else f"robustness check: {st}",
                            "reason": reason,
                            "counted": counted,
                        }
                    )
        findings: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            if r["counted"]:
                findings.setdefault((r["finding"], r["family"]), []).append(r)
        table_ = [
            {
                "finding": f,
                "family": fam,
                "paper": rs[0]["paper"],
                "rows": len(rs),
                "status": combine_statuses([r["status"] for r in rs]),
            }
            for (f, fam), rs in findings.items()
        ]
        counts = {
            s: sum(f["status"] == s for f in table_)
            for s in (REPRODUCED, NOT_REPRODUCED, MIXED, NOT_SCORED)
        }
        measured = sorted({r["analysis"] for r in rows})
        return {
            "rows": rows,
            "findings": table_,
            "counts": counts,
            "measured": measured,
            "not_measured": [a for a in EXPECTED if a not in measured],
        }

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        findings = [
            [
                html.escape(f["finding"]),
                html.escape(f["family"]),
                f["paper"],
                str(f["rows"]),
                f"<span class='{css(f['status'])}'>{f['status']}</span>",
            ]
            for f in result["findings"]
        ]
        rows = [
            [
                html.escape(r["property"]),
                html.escape(r["student"]),
                r["paper"],
                (fmt_summary(r["gap"], sign=True) if r["gap"] else "–")
                + (f" (±{r['margin']:g})" if r.get("margin") is not None else ""),
                f"<span class='{css(r['verdict'])}'>{html.escape(r['verdict'])}</span>",
                html.escape(r["premise"] or "–"),
                f"<span class='{css(r['status'])}'>{html.escape(r['status'])}</span>"
                + (
                    f" <small class='note'>({html.escape(r['reason'])})</small>"
                    if r["reason"]
                    else ""
                ),
            ]
            for r in result["rows"]
        ]
        c = result["counts"]
        missing = ", ".join(result["not_measured"]) or "none"
        return "\n".join(
            [
                f"<p>Distinct findings: {c[REPRODUCED]} reproduced, {c[NOT_REPRODUCED]} not "
                f"reproduced, {c[MIXED]} mixed, {c[NOT_SCORED]} not scored. Not measured in this "
                f"study: {html.escape(missing)}. A finding expected to be absent counts as "
                "reproduced only when equivalence within the stated margin was shown (two "
                "one-sided tests, 90 % interval inside ±margin); a finding expected to be "
                "present only when the distilled student's effect also exceeds every control's. "
                "Findings under an unmet premise (the distilled student not more accurate than "
                "the independent one) are not scored.</p>",
                table(["finding", "method family", "paper", "rows", "status"], findings),
                "<h3>Every measured verdict</h3>",
                "<p class='note'>Gaps: student − independent student, teacher-ward up, mean "
                "[95 % interval] (± the equivalence margin).</p>",
                table(
                    ["property", "student", "paper", "gap", "verdict", "premise", "status"], rows
                ),
            ]
        )
