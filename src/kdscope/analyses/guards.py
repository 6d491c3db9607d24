"""Sanity guards: the conditions under which a study's verdicts mean little, each named with what
to change. They go to ``summary.json`` (``guards``) and to the top of ``report.html``.

* **too few seeds**: a model group with fewer than :data:`kdscope.stats.MIN_SEEDS` seeds has no
  seed-to-seed variance, so every verdict about it reads "too few seeds"; with exactly that
  many the t quantile is large (12.7 for 2 seeds) and only large effects can be detected;
* **model at chance**: a seed whose test accuracy is not above the majority-class rate (one-sided
  binomial test at 5 %); comparisons involving it read "model at chance";
* **teacher below a student**: the teacher is less accurate than the mean of a baseline or
  student group, so it has little to teach;
* **few effective inputs**: a knowledge-point comparison rests on fewer than
  :data:`MIN_EFFECTIVE_INPUTS` inputs in some seed;
* **premise unmet**: a distilled student is not more accurate than its independent student, the
  premise of the property-transfer paper; its property verdicts are not scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdscope.analyses.study_views import chance_level, correctness, premise, seeds_at_chance
from kdscope.stats import MIN_SEEDS

if TYPE_CHECKING:
    from kdscope.study import StudyResult

MIN_EFFECTIVE_INPUTS = 10
PROPERTY_ANALYSES = (
    "localisation",
    "adversarial",
    "invariance",
    "domains",
    "decision_boundary",
    "representation_similarity",
    "shape_bias",
    "subgroups",
)


def _guard(kind: str, severity: str, message: str, fix: str) -> dict[str, str]:
    return {"guard": kind, "severity": severity, "message": message, "fix": fix}


def seed_guards(study: StudyResult) -> list[dict[str, str]]:
    out = []
    for g in study.groups.values():
        if g.role == "teacher":
            continue
        k = len(g.runs)
        if k < MIN_SEEDS:
            out.append(
                _guard(
                    "too few seeds",
                    "error",
                    f"{g.name} has {k} seed: no seed-to-seed variance, so no verdict about it",
                    f"train at least {MIN_SEEDS} seeds (3 to 5 recommended): seeds: [0, 1, 2]",
                )
            )
        elif k == MIN_SEEDS:
            out.append(
                _guard(
                    "few seeds",
                    "warning",
                    f"{g.name} has {k} seeds: intervals use a t quantile with 1 degree of "
                    "freedom (12.7 × the standard error), so only large effects are detected",
                    "use 3 to 5 seeds for useful power",
                )
            )
    return out


def accuracy_guards(study: StudyResult) -> list[dict[str, str]]:
    out = []
    chance = chance_level(study)
    teacher_acc = float(correctness(study, "teacher")[study.config.teacher_seed].mean())
    for g in study.groups.values():
        seeds = seeds_at_chance(study, g.name)
        if seeds:
            out.append(
                _guard(
                    "model at chance",
                    "error",
                    f"{g.name} seed(s) {', '.join(map(str, seeds))} are not above chance "
                    f"({chance:.3f}, the majority-class rate): comparisons with them say "
                    "nothing about knowledge",
                    "train longer or fix the recipe (learning rate, epochs) of this model",
                )
            )
        if g.role == "teacher":
            continue
        mean = float(sum(c.mean() for c in correctness(study, g.name).values()) / len(g.runs))
        if mean > teacher_acc:
            out.append(
                _guard(
                    "teacher below a student",
                    "warning",
                    f"the teacher ({teacher_acc:.3f}) is less accurate than {g.name} "
                    f"({mean:.3f}): it has little to teach",
                    "train a stronger teacher (more epochs or a larger model)",
                )
            )
    return out


def input_guards(results: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    kp = results.get("knowledge_points")
    for layer, res in (kp or {}).get("layers", {}).items():
        for name, cmp in res.get("comparisons", {}).items():
            sizes = cmp.get("inputs_per_seed", {})
            if sizes and min(sizes.values()) < MIN_EFFECTIVE_INPUTS:
                out.append(
                    _guard(
                        "few effective inputs",
                        "warning",
                        f"knowledge points of {name} vs {cmp.get('baseline')} at {layer} rest "
                        f"on {min(sizes.values())}–{max(sizes.values())} effective inputs per "
                        f"seed (fewer than {MIN_EFFECTIVE_INPUTS})",
                        "raise the knowledge_points analysis' candidates (or train the "
                        "networks until they discard the background)",
                    )
                )
    return out


def premise_guards(study: StudyResult, results: dict[str, Any]) -> list[dict[str, str]]:
    if not any(a in results for a in PROPERTY_ANALYSES):
        return []
    out = []
    for name, p in premise(study).items():
        if p["status"] == "unmet":
            gap = p["accuracy_gap"]["mean"]
            out.append(
                _guard(
                    "premise unmet",
                    "warning",
                    f"{name} is not more accurate than its independent student ({gap:+.3f}): "
                    "the property-transfer paper's premise fails, its verdicts are not scored",
                    "tune the distillation weight (weight_search) or the recipe",
                )
            )
    return out


def study_guards(study: StudyResult, results: dict[str, Any]) -> list[dict[str, str]]:
    """Every guard that applies to the study and its analysis results."""
    return [
        *seed_guards(study),
        *accuracy_guards(study),
        *input_guards(results),
        *premise_guards(study, results),
    ]
