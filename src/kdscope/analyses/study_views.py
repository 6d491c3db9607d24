"""Per-seed views of a study's models that several analyses share: test correctness, paired
differences, the teacher's tempered outputs, the soft-target students and the dataset's class
hierarchy.

Every per-seed quantity is a dict ``{seed: array over inputs}``, the shape that
:func:`kdscope.stats.summarise` turns into per-seed values, a mean and a t interval with seeds
as the unit of replication. The transfer helpers at the end build the property-transfer verdict
records (gap, controls, premise, guard) that every property analysis writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdscope.methods import ANALYSIS_ROLES, METHODS, BindContext, Method, build_method
from kdscope.methods.controlled_targets import SoftTargets
from kdscope.stats import summarise
from kdscope.verdicts import ABOVE, TOO_FEW_SEEDS, chance_guard, classify, transfer

if TYPE_CHECKING:
    from kdscope.study import Group, StudyResult

PerSeed = dict[int, np.ndarray]


def correctness(study: StudyResult, group: str) -> PerSeed:
    """1.0 where the model of ``group`` (each seed) classifies a test input correctly, else 0.0."""
    labels = study.data.test.labels
    return {
        seed: (study.logits(group, seed).argmax(1) == labels).numpy().astype(np.float64)
        for seed in sorted(study.groups[group].runs)
    }


def paired(a: PerSeed, b: PerSeed) -> PerSeed:
    """a − b seed by seed (seeds present in both), input by input."""
    return {s: a[s] - b[s] for s in a if s in b}


def teacher_logits(study: StudyResult, split: str = "test") -> np.ndarray:
    """The teacher's logits (float64) on the test split or on the students' training data."""
    return study.logits("teacher", study.config.teacher_seed, split).double().numpy()  # type: ignore[arg-type]


def split_labels(study: StudyResult, split: str = "test") -> np.ndarray:
    data = study.student_data.train if split == "train" else study.data.test
    return data.labels.numpy()


def superclass(study: StudyResult) -> np.ndarray | None:
    """The dataset's superclass index per class, or None when it declares no hierarchy."""
    info = study.data.train.class_info.get("superclass")
    return None if info is None else info.numpy()


def bound_method(study: StudyResult, group: Group, seed: int) -> Method:
    """The distillation method of ``group`` built and bound as in training (class-level targets
    computed from the teacher on the training data)."""
    method = build_method(group.method, **group.method_params)
    train = study.student_data.train
    method.bind(
        BindContext(
            group.runs[seed].load(0 if 0 in group.runs[seed].plan.checkpoints else None),
            study.teacher_model if method.needs_teacher else None,
            train,
            train.batch(torch.arange(min(len(train), 64))),
        )
    )
    return method


def soft_target_groups(study: StudyResult) -> list[Group]:
    """The students whose method trains on a soft target (KD and its controlled variants, label
    smoothing): those whose method implements :class:`SoftTargets`."""
    out = []
    for g in study.by_role("student"):
        method = build_method(g.method, **g.method_params)
        if isinstance(method, SoftTargets):
            out.append(g)
    return out


def seed_pairs(a: list[int], b: list[int], distinct: bool = False) -> list[tuple[int, int]]:
    """(seed of a, seed of b) pairs: every combination, or with ``distinct`` the unordered pairs
    of different seeds (a control comparing a group with itself: Ind vs Ind')."""
    if distinct:
        return [(i, j) for i in a for j in b if i < j]
    return [(i, j) for i in a for j in b]


def test_subset(study: StudyResult, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded random subset of ``n`` test indices (all when the split is smaller), sorted."""
    total = len(study.data.test)
    if n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(total, generator=gen)[:n]).values


def trained_models(study: StudyResult) -> Iterator[tuple[Group, int, nn.Module]]:
    """(group, seed, final model) of every baseline and student, in study order."""
    for g in study.groups.values():
        if g.role != "teacher":
            for seed, run in sorted(g.runs.items()):
                yield g, seed, run.load()


def per_group(study: StudyResult, measure: Callable[[nn.Module], np.ndarray]) -> dict[str, PerSeed]:
    """``measure(model)`` (an array over inputs) for every seed of every baseline and student."""
    out: dict[str, PerSeed] = {}
    for g, seed, model in trained_models(study):
        out.setdefault(g.name, {})[seed] = measure(model)
    return out


def student_gaps(study: StudyResult, values: dict[str, PerSeed]) -> dict[str, dict[str, Any]]:
    """Per student: the summary of (student − its independent baseline), seed k against seed k,
    input by input on the same inputs (a seeds × inputs design)."""
    return {
        g.name: summarise(paired(values[g.name], values[g.baseline]), shared_inputs=True)
        for g in study.by_role("student")
        if g.name in values and g.baseline in values
    }


def control_students(study: StudyResult) -> list[str]:
    """The no-teacher control students of the study: those whose method declares itself the
    soft-label control (``Method.role == "control"``)."""
    return [g.name for g in study.by_role("student") if is_control(g)]


def is_control(g: Group) -> bool:
    """Whether the group's method is a no-teacher control (it declares ``role = "control"``)."""
    return getattr(METHODS.get(g.method), "role", None) == "control"


def has_role(g: Group, role: str) -> bool:
    """Whether the group's method declares ``role`` among its :attr:`Method.roles` (a key of
    :data:`kdscope.methods.ANALYSIS_ROLES`)."""
    if role not in ANALYSIS_ROLES:
        raise ValueError(f"unknown method role {role!r} (known: {', '.join(ANALYSIS_ROLES)})")
    return role in getattr(METHODS.get(g.method), "roles", frozenset())


def students_with_role(study: StudyResult, *roles: str) -> list[Group]:
    """The students whose method declares one of ``roles``, in that order of preference (those
    of the first role first, each in study order), each student once."""
    out: dict[str, Group] = {}
    for role in roles:
        for g in study.by_role("student"):
            if has_role(g, role):
                out.setdefault(g.name, g)
    return list(out.values())


def first_with_role(study: StudyResult, *roles: str) -> str | None:
    """The name of the first of :func:`students_with_role`, None when no student plays a role."""
    return next((g.name for g in students_with_role(study, *roles)), None)


def control_differences(
    values: dict[str, PerSeed], student: str, controls: list[str], statistic: Any = None
) -> dict[str, dict[str, Any]]:
    """Per control student: the summary of (student − control), seed k against seed k, input by
    input: the distilled gap minus the control's gap (both against the same independent
    student), i.e. the student's effect beyond what the control explains."""
    return {
        c: summarise(paired(values[student], values[c]), statistic, shared_inputs=True)
        for c in controls
        if c != student and c in values and student in values
    }


def oriented(summary: dict[str, Any] | None, sign: float) -> dict[str, Any] | None:
    """A summary with its per-seed values, mean and intervals multiplied by ``sign``: turns a gap
    whose teacher-ward direction is down into one where it is up."""
    if summary is None:
        return None
    flipped = {k: sorted(sign * v for v in summary[k]) for k in ("ci95", "ci90") if k in summary}
    per_seed = {k: sign * v for k, v in summary["per_seed"].items()}
    return {**summary, **flipped, "per_seed": per_seed, "mean": sign * summary["mean"]}


def chance_level(study: StudyResult) -> float:
    """Accuracy of always predicting the most frequent test class."""
    labels = study.data.test.labels.numpy()
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def seeds_at_chance(study: StudyResult, group: str, level: float = 0.05) -> list[int]:
    """The seeds of ``group`` whose test accuracy is not above chance: a one-sided binomial test
    of k correct out of n against the chance level does not reject at ``level``."""
    from scipy import stats as scipy_stats  # here: importing it costs a second

    p0, n = chance_level(study), len(study.data.test)
    out = []
    for seed, c in correctness(study, group).items():
        k = int(c.sum())
        if scipy_stats.binomtest(k, n, min(max(p0, 1e-12), 1.0), "greater").pvalue >= level:
            out.append(seed)
    return out


def pair_at_chance(study: StudyResult, student: str) -> dict[str, list[int]]:
    """The seeds at chance (:func:`seeds_at_chance`) of a student and of its baseline, by group
    name; empty when neither has one. A comparison involving such a seed reads **model at
    chance**: it says nothing about knowledge."""
    g = study.groups[student]
    return {n: s for n in (student, g.baseline or "") if n and (s := seeds_at_chance(study, n))}


PremiseStatus = str  # "met", "unmet", "uncertain" or "too few seeds"


def premise(study: StudyResult) -> dict[str, dict[str, Any]]:
    """The property-transfer paper's premise per distilled student: it is more accurate than its
    independent student (control students have none). **met** when the paired accuracy difference (seed k against seed k,
    input by input) has its interval above 0; **unmet** when its mean is not above 0; else
    **uncertain** (or **too few seeds**)."""
    out = {}
    for g in study.by_role("student"):
        if is_control(g):
            continue
        gap = summarise(
            paired(correctness(study, g.name), correctness(study, g.baseline or "")),
            shared_inputs=True,
        )
        c = classify(gap)
        status = (
            "unmet" if not gap["mean"] > 0 else "met" if c == ABOVE else
            "too few seeds" if c == TOO_FEW_SEEDS else "uncertain"
        )  # fmt: skip
        out[g.name] = {"status": status, "accuracy_gap": gap}
    return out


def transfer_record(
    study: StudyResult,
    student: str,
    gap: dict[str, Any] | None,
    controls: dict[str, dict[str, Any]],
    margin: float,
    premise_status: PremiseStatus,
    null: float = 0.0,
) -> dict[str, Any]:
    """One property-transfer verdict with everything behind it: the teacher-ward ``gap``, the
    student's effect beyond each control (``controls``), the equivalence ``margin``, the
    paper's premise for this student (from :func:`premise`) and the verdict of :func:`kdscope.verdicts.transfer`.
    When the student or its independent student has a seed at chance level, the verdict is
    **model at chance** (the comparison says nothing about knowledge)."""
    chance = pair_at_chance(study, student)
    verdict = transfer(gap, list(controls.values()), margin, null)
    record: dict[str, Any] = {
        "verdict": chance_guard(verdict, chance),
        "gap": gap,
        "controls": controls,
        "margin": margin,
        "premise": premise_status,
    }
    if chance:
        record["at_chance"] = chance
        record["verdict_without_guard"] = verdict
    return record
