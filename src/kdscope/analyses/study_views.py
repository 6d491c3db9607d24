"""Per-seed views of a study's models that several analyses share: test correctness, paired
differences, the teacher's tempered outputs, the soft-target students and the dataset's class
hierarchy.

Every per-seed quantity is a dict ``{seed: array over inputs}``, the shape that
:func:`kdscope.stats.summarise` turns into per-seed values, a mean and a hierarchical-bootstrap
interval (seeds, then inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdscope.methods import BindContext, Method, build_method
from kdscope.methods.soft_target import SoftTargets
from kdscope.stats import summarise

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
    input by input."""
    return {
        g.name: summarise(paired(values[g.name], values[g.baseline]))
        for g in study.by_role("student")
        if g.name in values and g.baseline in values
    }


def control_students(study: StudyResult) -> list[str]:
    """The soft-label, no-teacher control students of the study (method ``soft_label``)."""
    return [g.name for g in study.by_role("student") if g.method == "soft_label"]


def transfer_verdict(gap: dict[str, Any], control: dict[str, Any] | None, null: float = 0.0) -> str:
    """The spec's rule (property transfer §1): **no transfer** when the gap's interval does not
    lie above ``null`` (teacher-ward is up); **no control** without a control gap; **confounded**
    when the control's interval also lies above ``null`` with at least half the gap's effect;
    else **transfers**."""
    if gap["ci95"][0] <= null:
        return "no transfer"
    if control is None:
        return "no control"
    if control["ci95"][0] > null and control["mean"] - null >= 0.5 * (gap["mean"] - null):
        return "confounded"
    return "transfers"


def oriented(summary: dict[str, Any] | None, sign: float) -> dict[str, Any] | None:
    """A summary with its per-seed values, mean and interval multiplied by ``sign``: turns a gap
    whose teacher-ward direction is down into one where it is up, for :func:`transfer_verdict`."""
    if summary is None:
        return None
    lo, hi = sorted(sign * v for v in summary["ci95"])
    per_seed = {k: sign * v for k, v in summary["per_seed"].items()}
    return {**summary, "per_seed": per_seed, "mean": sign * summary["mean"], "ci95": [lo, hi]}
