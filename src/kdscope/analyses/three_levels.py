"""The three levels of teacher knowledge, put together: the decomposition of the KD gain and the
paper's claims, each marked reproduced / not reproduced / inconclusive with its numbers.

Levels (spec §5): label smoothing carries the "universe" (a), KD-pt adds per-example re-weighting
(c), KD-sim adds class relations (b), KD carries all of them and per-instance relations. With the
controls of one study the accuracy gains decompose as

    (a) LS − CE,   (c) KD-pt − LS,   (b) KD-sim − LS,   KD − CE,   KD − KD-pt

where LS is the matched label-smoothing control (``ls_matched``; ``label_smoothing`` without it)
and every difference is paired by seed and test input. Claims (spec §14), with the rule used:

1. rescaling: Spearman(w, ρ¹_g) of the KD student at the first checkpoint after initialisation
   has an interval above 0 (reproduced) or below 0 (not reproduced);
2. temperature: the hierarchy score of the teacher's class–class correlation matrix R^τ is higher
   at the distillation τ than at τ = 1 (bootstrap over transfer inputs);
3. ordering KD-pt > KD-sim > LS: both adjacent paired accuracy differences above 0 (reproduced),
   either below 0 (not reproduced);
4. KD-topk beats KD: paired accuracy difference above / below 0;
5. geometry: the KD student's logit-layer hierarchy score exceeds the LS control's (paired by
   seed), i.e. the teacher's relations appear as block structure;
6. failure modes (needs the teacher zoo): the label-smoothed teacher is flagged relation-free (D1)
   and the over-trained teacher has a larger share of saturated ρ¹_g than the study's teacher.

Anything else is inconclusive; a claim whose models or analyses are missing is "not measured".
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.analyses.study_views import (
    correctness,
    paired,
    split_labels,
    superclass,
    teacher_logits,
)
from kdscope.methods import build_method
from kdscope.report import fmt_summary, table
from kdscope.stats import summarise
from kdscope.teacher_knowledge.geometry import hierarchy_score
from kdscope.teacher_knowledge.rescaling import softmax
from kdscope.teacher_knowledge.soft_labels import class_correlation

if TYPE_CHECKING:
    from kdscope.study import StudyResult

CHOICES = [
    "loss L(q) = (1 − λ) H(e_g, p) + λ τ² H(q, p^τ); targets from the tempered teacher unless "
    "target_temperature = post (spec §15.1–2)",
    "rescaling factor: exact L1 ratio, with the ground-truth component ratio w_g beside it (§15.5)",
    "LS control: ls_matched when present, else label_smoothing (§15.6)",
    "template similarity: centred cosine, biases ignored (§15.7)",
    "difficulty bins: the teacher's confidence on the test split; planted difficulty where the "
    "data has it (§15.8)",
    "D1 read at the distillation τ; thresholds are kdscope defaults (§11)",
    "statistics: paired by seed and input, 95 % hierarchical-bootstrap intervals (§15.10)",
]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_MEASURED = (
    "reproduced",
    "not reproduced",
    "inconclusive",
    "not measured",
)


def interval_verdict(ci: list[float]) -> str:
    """Reproduced when the interval lies above 0, not reproduced when below, else inconclusive."""
    if ci[0] > 0:
        return REPRODUCED
    if ci[1] < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def find_group(study: StudyResult, *methods: str) -> str | None:
    """The first student trained with one of ``methods`` (in that order of preference)."""
    for method in methods:
        for g in study.by_role("student"):
            if g.method == method:
                return g.name
    return None


def r_score_difference(
    logits: np.ndarray,
    labels: np.ndarray,
    sup: np.ndarray,
    tau: float,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Hierarchy score of R^τ minus that of R^1, with a bootstrap interval over inputs."""

    def diff(idx: np.ndarray) -> float:
        v = logits[idx]
        hi = hierarchy_score(class_correlation(softmax(v, tau)), sup)
        lo = hierarchy_score(class_correlation(softmax(v, 1.0)), sup)
        return float(hi - lo)

    rng = np.random.default_rng(seed)
    n = len(labels)
    boots = [diff(rng.integers(0, n, n)) for _ in range(n_boot)]
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return {"mean": diff(np.arange(n)), "ci95": [float(lo), float(hi)], "tau": tau}


@register_analysis
class ThreeLevelsAnalysis(Analysis):
    name = "three_levels"
    title = "Three levels of teacher knowledge: decomposition and the paper's claims"
    requires = ("accuracy", "rescaling", "soft_labels", "class_geometry", "teacher_check")

    def run(self, study: StudyResult) -> dict[str, Any]:
        names = {
            "CE": next((g.name for g in study.by_role("baseline")), None),
            "LS": find_group(study, "ls_matched", "label_smoothing"),
            "KD-pt": find_group(study, "kd_pt"),
            "KD-sim": find_group(study, "kd_sim"),
            "KD-topk": find_group(study, "kd_topk"),
            "KD": find_group(study, "kd"),
        }
        correct = {k: correctness(study, v) for k, v in names.items() if v is not None}

        def diff(a: str, b: str) -> dict[str, Any] | None:
            if a not in correct or b not in correct:
                return None
            return {"a": names[a], "b": names[b], **summarise(paired(correct[a], correct[b]))}

        decomposition = {
            "(a) universe: LS − CE": diff("LS", "CE"),
            "(c) instance: KD-pt − LS": diff("KD-pt", "LS"),
            "(b) domain: KD-sim − LS": diff("KD-sim", "LS"),
            "all: KD − CE": diff("KD", "CE"),
            "relations beyond GT mass: KD − KD-pt": diff("KD", "KD-pt"),
        }
        accuracy = {k: summarise(v) | {"group": names[k]} for k, v in correct.items()}
        claims = [
            self._rescaling_claim(study, names["KD"]),
            self._temperature_claim(study),
            self._ordering_claim(diff("KD-pt", "KD-sim"), diff("KD-sim", "LS")),
            _simple_claim(
                "KD-topk beats KD", "paired test accuracy KD-topk − KD", diff("KD-topk", "KD")
            ),
            self._geometry_claim(study, names["KD"], names["LS"]),
            self._failure_claim(study),
        ]
        return {
            "groups": names,
            "settings": {
                g.name: f"{g.method}({build_method(g.method, **g.method_params).extra_repr()})"
                for g in study.by_role("student")
            },
            "choices": CHOICES,
            "accuracy": accuracy,
            "ranking": sorted(accuracy, key=lambda k: -accuracy[k]["mean"]),
            "decomposition": decomposition,
            "claims": claims,
        }

    def _rescaling_claim(self, study: StudyResult, kd: str | None) -> dict[str, Any]:
        claim = (
            "the gradient rescaling factor correlates positively with the teacher's GT confidence"
        )
        res = study.results.get("rescaling")
        if kd is None or res is None or kd not in res["students"]:
            return _not_measured(claim)
        cps = res["students"][kd]["checkpoints"]
        epochs = sorted(cps, key=int)
        early = next((e for e in epochs if int(e) > 0), epochs[0])
        s = cps[early]["w"]["spearman"]
        partial = cps[early]["w"]["partial_spearman"]
        last = cps[epochs[-1]]["w"]["spearman"]
        return _claim(
            claim,
            f"Spearman(w, ρ¹_g) of {kd} at epoch {early}: {fmt_summary(s, sign=True)} "
            f"(at the last epoch {epochs[-1]}: {fmt_summary(last, sign=True)}; at equal student "
            f"confidence, partial Spearman given p_g: {fmt_summary(partial, sign=True)})",
            s,
        )

    def _temperature_claim(self, study: StudyResult) -> dict[str, Any]:
        claim = (
            "same-superclass classes correlate in the teacher's soft labels at high τ, not at τ = 1"
        )
        sup = superclass(study)
        if sup is None:
            return _not_measured(claim)
        tau = _distillation_tau(study)
        d = r_score_difference(
            teacher_logits(study, "train"), split_labels(study, "train"), sup, tau
        )
        return _claim(
            claim,
            f"hierarchy score of R^τ at τ = {tau:g} minus at τ = 1 (teacher, transfer "
            f"inputs): {fmt_summary(d, sign=True)}",
            d,
        )

    def _ordering_claim(
        self, pt_sim: dict[str, Any] | None, sim_ls: dict[str, Any] | None
    ) -> dict[str, Any]:
        claim = "benefit ordering KD-pt > KD-sim > LS"
        if pt_sim is None or sim_ls is None:
            return _not_measured(claim)
        verdicts = {interval_verdict(pt_sim["ci95"]), interval_verdict(sim_ls["ci95"])}
        verdict = (
            REPRODUCED
            if verdicts == {REPRODUCED}
            else NOT_REPRODUCED
            if NOT_REPRODUCED in verdicts
            else INCONCLUSIVE
        )
        return _claim(
            claim,
            f"KD-pt − KD-sim {fmt_summary(pt_sim, sign=True)}; KD-sim − LS "
            f"{fmt_summary(sim_ls, sign=True)} (paired test accuracy)",
            {"KD-pt − KD-sim": pt_sim, "KD-sim − LS": sim_ls},
            verdict,
        )

    def _geometry_claim(self, study: StudyResult, kd: str | None, ls: str | None) -> dict[str, Any]:
        claim = (
            "the teacher's class relations appear as block structure in the student's logit layer"
        )
        geo = study.results.get("class_geometry")
        if (
            kd is None
            or ls is None
            or geo is None
            or "hierarchy_score" not in geo["groups"].get(kd, {})
        ):
            return _not_measured(claim)
        a = geo["groups"][kd]["hierarchy_score"]["per_seed"]
        b = geo["groups"][ls]["hierarchy_score"]["per_seed"]
        d = summarise({int(s): np.array([a[s] - b[s]]) for s in a if s in b})
        return _claim(
            claim,
            f"logit-layer hierarchy score {kd} − {ls}, paired by seed: {fmt_summary(d, sign=True)}",
            d,
        )

    def _failure_claim(self, study: StudyResult) -> dict[str, Any]:
        claim = (
            "a label-smoothed teacher erases relations (D1); an over-trained teacher saturates "
            "its confidence"
        )
        check = study.results.get("teacher_check")
        if check is None or "label_smoothed" not in check["teachers"]:
            return _not_measured(claim + " (run teacher_check with zoo: true)")
        t = check["teachers"]
        ls_flag = t["label_smoothed"]["flags"]["D1_relation_free"]["flagged"]
        ce_sat = t["teacher"]["levels"]["instance"]["frac_above_0.99"]
        ot_sat = t["over_trained"]["levels"]["instance"]["frac_above_0.99"]
        ok = bool(ls_flag) and ot_sat > ce_sat
        return _claim(
            claim,
            f"D1 on the label-smoothed teacher: {'flagged' if ls_flag else 'not flagged'}; "
            f"share of ρ¹_g > 0.99: over-trained {ot_sat:.3f} vs study teacher {ce_sat:.3f}",
            {"ls_d1": ls_flag, "over_trained_saturated": ot_sat, "teacher_saturated": ce_sat},
            REPRODUCED if ok else NOT_REPRODUCED,
        )

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        acc_rows = [
            [html.escape(k), html.escape(v["group"]), fmt_summary(v, 4)]
            + [", ".join(f"{x:.4f}" for x in v["per_seed"].values())]
            for k, v in sorted(result["accuracy"].items(), key=lambda kv: -kv[1]["mean"])
        ]
        dec_rows = [
            [html.escape(k), fmt_summary(v, 4, sign=True) if v else "not measured"]
            for k, v in result["decomposition"].items()
        ]
        claim_rows = [
            [
                str(i + 1),
                html.escape(c["claim"]),
                html.escape(c["measure"]),
                f"<span class='{_css(c['verdict'])}'>{c['verdict']}</span>",
            ]
            for i, c in enumerate(result["claims"])
        ]
        return (
            "<p>Accuracy on the test split (mean over seeds [95 % hierarchical-bootstrap "
            "interval], per seed), ranked; the ranking is a measurement, never an assumption.</p>"
            + table(["level control", "student", "accuracy", "per seed"], acc_rows)
            + "<h3>Decomposition of the distillation gain (paired by seed and input)</h3>"
            + table(["difference", "test accuracy"], dec_rows)
            + "<h3>The paper's claims</h3>"
            + table(["#", "claim (Tang et al. 2020)", "what was measured", "verdict"], claim_rows)
            + "<h3>Settings used</h3>"
            + table(
                ["student", "method and parameters (defaults included)"],
                [[html.escape(k), html.escape(v)] for k, v in result["settings"].items()],
            )
            + "<ul>"
            + "".join(f"<li>{html.escape(c)}</li>" for c in result["choices"])
            + "</ul>"
        )


def _distillation_tau(study: StudyResult) -> float:
    from kdscope.analyses.teacher_check import distillation_settings

    return distillation_settings(study)[0]


def _claim(claim: str, measure: str, value: Any, verdict: str | None = None) -> dict[str, Any]:
    """A claim's row; the verdict defaults to the interval rule on ``value["ci95"]``."""
    if verdict is None:
        verdict = interval_verdict(value["ci95"])
    return {"claim": claim, "measure": measure, "value": value, "verdict": verdict}


def _simple_claim(claim: str, measure: str, d: dict[str, Any] | None) -> dict[str, Any]:
    if d is None:
        return _not_measured(claim)
    return _claim(claim, f"{measure}: {fmt_summary(d, 4, sign=True)}", d)


def _not_measured(claim: str) -> dict[str, Any]:
    return _claim(
        claim, "the models or analyses it needs are not in this study", None, NOT_MEASURED
    )


def _css(verdict: str) -> str:
    return {REPRODUCED: "better", NOT_REPRODUCED: "worse"}.get(verdict, "inconclusive")
