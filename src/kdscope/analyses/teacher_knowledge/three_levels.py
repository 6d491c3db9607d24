"""The three levels of teacher knowledge, put together: the decomposition of the KD gain and the
paper's claims, each marked reproduced / not reproduced / inconclusive with its numbers.

Levels (Tang et al. 2020): label smoothing carries the "universe" (a), KD-pt adds per-example
re-weighting (c), KD-sim adds class relations (b), KD carries all of them and per-instance
relations. With the controls of one study the accuracy gains decompose as

    (a) LS − CE,   (c) KD-pt − LS,   (b) KD-sim − LS (per KD-sim variant),   KD − CE,   KD − KD-pt

where LS is the matched label-smoothing control (``ls_matched``; ``label_smoothing`` without it)
and every difference is paired by seed and test input. KD-sim has two variants, the class-mean
targets (kdscope's default) and the weight-cosine targets (paper-like); the first student of each
variant is used. Claims (docs/three_levels.md), with the rule used ("above 0" means the 95 %
interval lies above 0, "below 0" below it; anything else is inconclusive):

1. rescaling: the verdict reads the *partial* Spearman correlation of w with ρ¹_g given the
   student's own p_g (``rescaling``'s ``partial_spearman``) for the KD student at the first
   checkpoint after initialisation: above 0 reproduced, below 0 not reproduced. The plain
   Spearman correlation is not specific to the teacher's knowledge: a student that fits the
   teacher's easy examples first has p_g, hence w, tracking ρ¹_g under any target, and the
   LS-matched control (no per-example weighting) shows 0.5–0.8 too. Holding p_g fixed tests the
   paper's statement "at equal student confidence" directly. Guard: with the LS control's
   rescaling measured, KD's partial correlation must also exceed the control's (per-seed
   difference, paired by seed, above 0), else the verdict is at most inconclusive. The plain
   correlation is reported beside it;
2. temperature: the hierarchy score of the teacher's class–class correlation matrix R^τ is higher
   at the distillation τ than at τ = 1 (bootstrap over transfer inputs; one teacher, so inputs
   are the only replication; undefined resamples are counted, not dropped silently);
3. ordering KD-pt > KD-sim > LS, for each KD-sim variant present: both adjacent paired accuracy
   differences above 0 reproduced, either below 0 not reproduced. With both variants the claim
   is reproduced / not reproduced only when the variants agree; when they disagree it is
   inconclusive and the row says that the ordering depends on the KD-sim variant;
4. KD-topk beats KD: paired accuracy difference above / below 0;
5. geometry: the KD student's logit-layer hierarchy score exceeds the LS control's (paired by
   seed), i.e. the teacher's relations appear as block structure;
6. failure modes (needs the teacher zoo): the mechanism — the label-smoothed teacher is flagged
   relation-free (D1) and the over-trained teacher has a larger share of saturated ρ¹_g than the
   study's teacher (one teacher per recipe, so these are values without intervals) — and its
   consequence, a worse teacher: the KD student of each of the two teachers minus the study
   teacher's KD student (``teacher_check``'s ``kd_vs_teacher``, paired by seed and input) below 0.
   Reproduced only when the mechanism holds and both differences are below 0; not reproduced
   when the mechanism fails or a zoo teacher distils better (difference above 0); otherwise, and
   when the zoo's students were not trained, inconclusive.

A claim whose models or analyses are missing is "not measured".
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.study_views import (
    correctness,
    first_with_role,
    paired,
    split_labels,
    superclass,
    teacher_logits,
)
from kdscope.analyses.teacher_knowledge.teacher_check import distillation_settings
from kdscope.methods import build_method
from kdscope.methods.kd_sim import KDSim
from kdscope.render import fmt_summary, table
from kdscope.stats import summarise
from kdscope.teacher_knowledge.class_geometry import hierarchy_score
from kdscope.teacher_knowledge.rescaling import softmax
from kdscope.teacher_knowledge.soft_labels import class_correlation
from kdscope.verdicts import (
    INCONCLUSIVE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    all_reproduced,
    css,
    from_checks,
    reproduced_beyond,
    reproduction,
)

if TYPE_CHECKING:
    from kdscope.study import StudyResult

CHOICES = [
    "loss L(q) = (1 − λ) H(e_g, p) + λ τ² H(q, p^τ); targets from the tempered teacher unless "
    "target_temperature = post",
    "rescaling factor: exact L1 ratio, with the ground-truth component ratio w_g beside it",
    "LS control: ls_matched when present, else label_smoothing",
    "template similarity: centred cosine, biases ignored",
    "difficulty bins: the teacher's confidence on the test split; planted difficulty where the "
    "data has it",
    "D1 read at the distillation τ; thresholds are kdscope defaults",
    "KD-sim: the first student of each variant (class-mean, weight-cosine); the ordering claim "
    "is judged per variant",
    "rescaling claim: partial Spearman(w, ρ¹_g | p_g) of KD, which must exceed the LS control's; "
    "the plain Spearman is reported beside it",
    "failure claim: the zoo teachers' diagnostics and their KD students against the study "
    "teacher's KD student",
    "statistics: paired by seed and input, 95 % intervals of kdscope.stats.summarise",
]

KD_SIM = {"class_mean": "KD-sim (class-mean)", "weight_cosine": "KD-sim (weight-cosine)"}
FAILING_TEACHERS = ("label_smoothed", "over_trained")


def per_seed_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Summary of a − b over the seeds of two summaries (their ``per_seed`` values, paired by
    seed)."""
    pa, pb = a["per_seed"], b["per_seed"]
    return summarise({int(s): np.array([pa[s] - pb[s]]) for s in pa if s in pb})


def kd_sim_groups(study: StudyResult) -> dict[str, str | None]:
    """The first KD-sim student of each variant (None when absent), keyed by the variant's label
    in :data:`KD_SIM`."""
    out: dict[str, str | None] = dict.fromkeys(KD_SIM.values())
    for g in study.by_role("student"):
        method = build_method(g.method, **g.method_params)
        if isinstance(method, KDSim) and out[KD_SIM[method.variant]] is None:
            out[KD_SIM[method.variant]] = g.name
    return out


def r_score_difference(
    logits: np.ndarray,
    labels: np.ndarray,
    sup: np.ndarray,
    tau: float,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Hierarchy score of R^τ minus that of R^1, with a percentile bootstrap interval over inputs
    (the teacher is fixed: inputs are the only replication). Resamples whose difference is
    undefined (NaN) are left out of the interval and counted under ``undefined_resamples`` (when
    any); with none defined the interval is NaN."""

    def diff(idx: np.ndarray) -> float:
        v = logits[idx]
        hi = hierarchy_score(class_correlation(softmax(v, tau)), sup)
        lo = hierarchy_score(class_correlation(softmax(v, 1.0)), sup)
        return float(hi - lo)

    rng = np.random.default_rng(seed)
    n = len(labels)
    boots = np.array([diff(rng.integers(0, n, n)) for _ in range(n_boot)])
    defined = boots[np.isfinite(boots)]
    ci = np.quantile(defined, [0.025, 0.975]) if defined.size else [np.nan, np.nan]
    out = {"mean": diff(np.arange(n)), "ci95": [float(c) for c in ci], "tau": tau, "n_boot": n_boot}
    if defined.size < n_boot:
        out["undefined_resamples"] = int(n_boot - defined.size)
    return out


@register_analysis
class ThreeLevelsAnalysis(Analysis):
    """Tang et al.'s decomposition of what distillation adds: label smoothing (universe), class
    relations (domain) and per-instance rescaling, as the paired differences LS − CE,
    KD-pt − LS, KD-sim − LS, KD − CE and KD − KD-pt, and the paper's six claims, each reproduced
    / not reproduced / inconclusive with its numbers; runs after the analyses it reads
    (docs/three_levels.md).
    """

    name = "three_levels"
    title = "Three levels of teacher knowledge: decomposition and the paper's claims"
    requires = ("accuracy", "rescaling", "soft_labels", "class_geometry", "teacher_check")

    def run(self, study: StudyResult) -> dict[str, Any]:
        names = {
            "CE": next((g.name for g in study.by_role("baseline")), None),
            "LS": first_with_role(study, "label_smoothing_matched", "label_smoothing"),
            "KD-pt": first_with_role(study, "true_class_target"),
            **kd_sim_groups(study),
            "KD-topk": first_with_role(study, "topk_target"),
            "KD": first_with_role(study, "logit_kd"),
        }
        correct = {k: correctness(study, v) for k, v in names.items() if v is not None}

        def diff(a: str, b: str) -> dict[str, Any] | None:
            if a not in correct or b not in correct:
                return None
            return {
                "a": names[a],
                "b": names[b],
                **summarise(paired(correct[a], correct[b]), shared_inputs=True),
            }

        decomposition = {
            "(a) universe: LS − CE": diff("LS", "CE"),
            "(c) instance: KD-pt − LS": diff("KD-pt", "LS"),
            **{f"(b) domain: {v} − LS": diff(v, "LS") for v in KD_SIM.values()},
            "all: KD − CE": diff("KD", "CE"),
            "relations beyond GT mass: KD − KD-pt": diff("KD", "KD-pt"),
        }
        accuracy = {
            k: summarise(v, shared_inputs=True) | {"group": names[k]} for k, v in correct.items()
        }
        claims = [
            self._rescaling_claim(study, names["KD"], names["LS"]),
            self._temperature_claim(study),
            self._ordering_claim({v: (diff("KD-pt", v), diff(v, "LS")) for v in KD_SIM.values()}),
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

    def _rescaling_claim(
        self, study: StudyResult, kd: str | None, ls: str | None
    ) -> dict[str, Any]:
        claim = (
            "the gradient rescaling factor correlates positively with the teacher's GT confidence"
        )
        res = study.results.get("rescaling")
        if kd is None or res is None or kd not in res["students"]:
            return _not_measured(claim)
        cps = res["students"][kd]["checkpoints"]
        epochs = sorted(cps, key=int)
        early = next((e for e in epochs if int(e) > 0), epochs[0])
        w = cps[early]["w"]
        control = res["students"].get(ls or "", {}).get("checkpoints", {}).get(early)
        value = {"partial_spearman": w["partial_spearman"], "spearman": w["spearman"]}
        measure = (
            f"partial Spearman(w, ρ¹_g | p_g) of {kd} at epoch {early}: "
            f"{fmt_summary(w['partial_spearman'], sign=True)}"
        )
        plain = (
            f"plain Spearman, not specific to the teacher: {kd} "
            f"{fmt_summary(w['spearman'], sign=True)}"
        )
        if control is not None:
            value["partial_minus_control"] = per_seed_difference(
                w["partial_spearman"], control["w"]["partial_spearman"]
            )
            measure += (
                f"; minus the LS control {ls}'s, paired by seed: "
                f"{fmt_summary(value['partial_minus_control'], sign=True)}"
            )
            plain += f", {ls} {fmt_summary(control['w']['spearman'], sign=True)}"
        last = cps[epochs[-1]]["w"]["partial_spearman"]
        measure += (
            f" ({plain}; partial at the last epoch {epochs[-1]}: {fmt_summary(last, sign=True)})"
        )
        verdict = reproduced_beyond(w["partial_spearman"], value.get("partial_minus_control"))
        return _claim(claim, measure, value, verdict)

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
            f"inputs): {fmt_summary(d, sign=True)}"
            + (
                f" ({d['undefined_resamples']} of {d['n_boot']} bootstrap resamples undefined)"
                if "undefined_resamples" in d
                else ""
            ),
            d,
        )

    def _ordering_claim(
        self, orderings: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]
    ) -> dict[str, Any]:
        """``orderings``: per KD-sim variant label, (KD-pt − KD-sim, KD-sim − LS) paired accuracy
        summaries (None when a student is missing). Each measured variant gets its own verdict;
        the claim's verdict is theirs when they agree, else inconclusive."""
        claim = "benefit ordering KD-pt > KD-sim > LS"
        measured = {v: (a, b) for v, (a, b) in orderings.items() if a is not None and b is not None}
        if not measured:
            return _not_measured(claim)
        verdicts = {
            v: all_reproduced([reproduction(a), reproduction(b)]) for v, (a, b) in measured.items()
        }
        agree = len(set(verdicts.values())) == 1
        parts = [
            f"{v}: KD-pt − KD-sim {fmt_summary(a, sign=True)}, KD-sim − LS "
            f"{fmt_summary(b, sign=True)} → {verdicts[v]}"
            for v, (a, b) in measured.items()
        ]
        measure = ("" if agree else "the ordering depends on the KD-sim variant; ") + (
            "; ".join(parts) + " (paired test accuracy)"
        )
        value = {
            v: {"KD-pt − KD-sim": a, "KD-sim − LS": b, "verdict": verdicts[v]}
            for v, (a, b) in measured.items()
        }
        verdict = next(iter(verdicts.values())) if agree else INCONCLUSIVE
        return _claim(claim, measure, value, verdict)

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
            "a label-smoothed teacher erases relations (D1) and an over-trained teacher "
            "saturates its confidence, so both distil worse"
        )
        check = study.results.get("teacher_check")
        if check is None or not all(n in check["teachers"] for n in FAILING_TEACHERS):
            return _not_measured(claim + " (run teacher_check with zoo: true)")
        t = check["teachers"]
        ls_flag = t["label_smoothed"]["flags"]["D1_relation_free"]["flagged"]
        excess = {
            n: t[n]["levels"]["domain"].get("relational_excess")
            for n in ("label_smoothed", "teacher")
        }
        saturated = {
            n: t[n]["levels"]["instance"]["frac_above_0.99"] for n in ("over_trained", "teacher")
        }
        gains = {n: t[n].get("kd_vs_teacher") for n in FAILING_TEACHERS}
        # D1 flags the label-smoothed teacher; the over-trained one saturates more often
        mechanism = from_checks([ls_flag, saturated["over_trained"] > saturated["teacher"]])
        worse = {n: None if g is None else reproduction(g, "lower") for n, g in gains.items()}
        verdict = all_reproduced(
            [mechanism, *(INCONCLUSIVE if v is None else v for v in worse.values())]
        )
        d1 = {True: "flagged", False: "not flagged", None: "not checked"}[ls_flag]
        measure = (
            f"mechanism ({mechanism}; one teacher per recipe, no interval): D1 on the "
            f"label-smoothed teacher {d1} (relational excess at τ "
            f"{_value(excess['label_smoothed'])} vs study teacher {_value(excess['teacher'])}); "
            f"share of ρ¹_g > 0.99: over-trained {_value(saturated['over_trained'])} vs study "
            f"teacher {_value(saturated['teacher'])}. " + _consequence(gains, worse)
        )
        value = {
            "ls_d1": ls_flag,
            "relational_excess": excess,
            "saturated": saturated,
            "mechanism": mechanism,
            "kd_vs_teacher": gains,
            "worse_teacher": worse,
        }
        return _claim(claim, measure, value, verdict)

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
                f"<span class='{css(c['verdict'])}'>{c['verdict']}</span>",
            ]
            for i, c in enumerate(result["claims"])
        ]
        return (
            "<p>Accuracy on the test split (mean over seeds [95 % interval], per seed), ranked; "
            "the ranking is a measurement, never an assumption.</p>"
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


def _consequence(gains: dict[str, dict[str, Any] | None], worse: dict[str, str | None]) -> str:
    """Claim 6's consequence as text: each failing teacher's KD student minus the study
    teacher's."""
    if any(g is None for g in gains.values()):
        return "Consequence not measured: the zoo's KD students were not trained (zoo_students)."
    parts = [f"{n.replace('_', '-')} {fmt_summary(g, sign=True)}" for n, g in gains.items()]
    if NOT_REPRODUCED in worse.values():
        note = " — the measured KD gains contradict it: a zoo teacher distils better."
    elif INCONCLUSIVE in worse.values():
        note = " — the measured KD gains do not confirm a worse teacher."
    else:
        note = "."
    return (
        "Consequence, KD student of the zoo teacher − the study teacher's KD student (test "
        "accuracy, paired by seed and input): " + "; ".join(parts) + note
    )


def _value(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _distillation_tau(study: StudyResult) -> float:

    return distillation_settings(study)[0]


def _claim(claim: str, measure: str, value: Any, verdict: str | None = None) -> dict[str, Any]:
    """A claim's row; the verdict defaults to the interval rule on ``value["ci95"]``."""
    if verdict is None:
        verdict = reproduction(value)
    return {"claim": claim, "measure": measure, "value": value, "verdict": verdict}


def _simple_claim(claim: str, measure: str, d: dict[str, Any] | None) -> dict[str, Any]:
    if d is None:
        return _not_measured(claim)
    return _claim(claim, f"{measure}: {fmt_summary(d, 4, sign=True)}", d)


def _not_measured(claim: str) -> dict[str, Any]:
    return _claim(
        claim, "the models or analyses it needs are not in this study", None, NOT_MEASURED
    )
