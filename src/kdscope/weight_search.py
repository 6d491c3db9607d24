"""Distillation-weight search (docs/study_file.md, 'Weight search'): pick each distilled student's
weight on a validation split so that, as in the paper, the distilled students are tuned to beat the
independent student before their properties are compared.

The students' training data D loses a validation split V (a seeded, per-class fraction); on the
fit split D \\ V the independent student and every searched student s, whose distillation weight
w_s (its ``distill_weight`` argument: KD alpha, Hint beta, ...) is multiplied by each factor f,
train with the search seeds S:

    acc_V(s, f) = (1/|S|) sum_{k in S} accuracy on V of s_k trained on D \\ V with weight f w_s
    f*_s        = argmax_f acc_V(s, f)            (ties: smallest |log f|, then smaller f)

The study's students then train on the whole of D with weight f*_s w_s; a student listed in
``share`` takes its source's f* (the soft-label control keeps the KD student's weights,
docs/property_transfer.md). ``beats_independent`` records whether acc_V(s, f*) exceeds the
independent student's; the chosen weights land in ``summary.json`` and the report. Runs live under
``DIR/weight_search/<student>/x<f>/seed<k>`` (the independent ones under
``DIR/weight_search/<baseline>/seed<k>``) and resume like any other run.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kdscope import io
from kdscope.config import WeightSearch
from kdscope.datasets import DataSplits, TensorDataset
from kdscope.errors import KdscopeError
from kdscope.methods import distillation_weight
from kdscope.render import table
from kdscope.seeding import derive_seed
from kdscope.trainer import RunPlan, run_steps

if TYPE_CHECKING:
    from kdscope.study import Group, StudyResult


def validation_split(
    train: TensorDataset, fraction: float, seed: int
) -> tuple[TensorDataset, TensorDataset]:
    """(fit, validation): of every class with n_c examples, round(fraction * n_c) chosen by a
    seeded permutation go to validation (at least one when n_c >= 2, never all of them); both
    keep dataset order."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    held = torch.zeros(len(train), dtype=torch.bool)
    for c in train.labels.unique():
        members = order[train.labels[order] == c]
        n = len(members)
        k = min(max(round(fraction * n), 1 if n >= 2 else 0), n - 1)
        held[members[:k]] = True
    if not held.any() or held.all() or int((~held).sum()) < 2:
        raise KdscopeError(
            f"weight_search: validation fraction {fraction} of {len(train)} training examples "
            "leaves no usable validation or fit split"
        )
    return train.subset((~held).nonzero().flatten()), train.subset(held.nonzero().flatten())


def choose_factor(accuracy: dict[float, float]) -> float:
    """The factor of highest accuracy; among ties, the one nearest 1 on a log scale, then the
    smaller (×0.5 before ×2: the gentler pull toward the teacher)."""
    best = max(accuracy.values())
    tied = [f for f, a in accuracy.items() if a == best]
    return min(tied, key=lambda f: (abs(math.log(f)), f))


def search_data(students: DataSplits, settings: WeightSearch) -> DataSplits:
    """The data the search runs train on: the fit split of the students' training data, and
    its validation split in the place of the test split."""
    return DataSplits(
        *validation_split(students.train, settings.validation, derive_seed("weight-search"))
    )


@dataclass(frozen=True)
class _Job:
    group: str
    factor: float | None  # None: the independent student
    plan: RunPlan
    run_dir: Path


class WeightSearchRun:
    """The search of one study: its jobs, run on an executor, and the choice applied to the
    study's student groups."""

    def __init__(self, study: StudyResult) -> None:
        cfg = study.config
        assert cfg.weight_search is not None
        self.settings: WeightSearch = cfg.weight_search
        self.study = study
        self.root = study.out_dir / "weight_search"
        split = search_data(study.student_data, self.settings)
        self.fit, self.validation = split.train, split.test
        groups = study.groups
        self.searched = [groups[name] for name in cfg.searched_students()]
        self.jobs: list[_Job] = []
        for name in dict.fromkeys(g.baseline for g in self.searched if g.baseline):
            self.jobs += [self._job(groups[name], None, seed) for seed in self.settings.seeds]
        for g in self.searched:
            for f in self.settings.factors:
                self.jobs += [self._job(g, f, seed) for seed in self.settings.seeds]

    def _job(self, g: Group, factor: float | None, seed: int) -> _Job:
        params, run_dir = dict(g.method_params), self.root / g.name / f"seed{seed}"
        if factor is not None:
            key, weight = distillation_weight(g.method, params)
            params[key] = weight * factor
            run_dir = self.root / g.name / f"x{factor:g}" / f"seed{seed}"
        plan = RunPlan(
            name=g.name if factor is None else f"{g.name}-x{factor:g}",
            seed=seed,
            model=g.model,
            method=g.method,
            method_params=params,
            train=g.train,
            checkpoints=(g.train.epochs,),
        )
        return _Job(g.name, factor, plan, run_dir)

    def steps(self) -> int:
        """Optimiser steps of every search run (for progress bars)."""
        return sum(run_steps(j.plan, len(self.fit)) for j in self.jobs)

    def finish(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """Given the results of :attr:`jobs` (in order; the study trains them on
        :func:`search_data`), choose each student's factor, set the chosen weights in the
        study's groups and write ``DIR/weight_search/search.json``."""
        table_: dict[tuple[str, float | None], dict[str, float]] = {}
        for job, res in zip(self.jobs, results, strict=True):
            # the "test" split of the search data is the validation split
            table_.setdefault((job.group, job.factor), {})[str(job.plan.seed)] = float(
                res["test_acc"]
            )
        result = self._choose(table_)
        self._apply(result)
        io.write_json(self.root / "search.json", result)
        return result

    def _choose(self, acc: dict[tuple[str, float | None], dict[str, float]]) -> dict[str, Any]:
        def entry(per_seed: dict[str, float]) -> dict[str, Any]:
            return {"per_seed": per_seed, "mean": sum(per_seed.values()) / len(per_seed)}

        independent = {name: entry(per_seed) for (name, f), per_seed in acc.items() if f is None}
        students: dict[str, Any] = {}
        for g in self.searched:
            key, weight = distillation_weight(g.method, g.method_params)
            tried = {f: entry(acc[(g.name, f)]) for f in self.settings.factors}
            best = choose_factor({f: t["mean"] for f, t in tried.items()})
            students[g.name] = {
                "weight": key,
                "base": weight,
                "independent": g.baseline,
                "tried": [{"factor": f, "value": weight * f, **t} for f, t in tried.items()],
                "factor": best,
                "value": weight * best,
                "beats_independent": g.baseline is not None
                and tried[best]["mean"] > independent[g.baseline]["mean"],
                "shared_from": None,
            }
        for name, source in self.settings.share.items():
            g = self.study.groups[name]
            key, weight = distillation_weight(g.method, g.method_params)
            factor = students[source]["factor"]
            students[name] = {
                "weight": key,
                "base": weight,
                "factor": factor,
                "value": weight * factor,
                "shared_from": source,
            }
        return {
            "validation": self.settings.validation,
            "n_fit": len(self.fit),
            "n_validation": len(self.validation),
            "factors": list(self.settings.factors),
            "seeds": list(self.settings.seeds),
            "independent": independent,
            "students": students,
        }

    def _apply(self, result: dict[str, Any]) -> None:
        for name, s in result["students"].items():
            g = self.study.groups[name]
            g.method_params = {**g.method_params, s["weight"]: s["value"]}


def report_section(result: dict[str, Any]) -> str:
    """The report's account of the search: every factor's validation accuracy and the choice."""
    rows = []
    for name, s in result["students"].items():
        if s["shared_from"] is not None:
            tried = f"takes {html.escape(s['shared_from'])}'s factor"
            ind = beats = "—"
        else:
            tried = ", ".join(f"×{t['factor']:g}: {t['mean']:.3f}" for t in s["tried"])
            ind_name = s["independent"]
            ind = f"{result['independent'][ind_name]['mean']:.3f}" if ind_name else "—"
            beats = "yes" if s["beats_independent"] else "<b>no</b>"
        rows.append(
            [
                html.escape(name),
                f"{s['weight']} = {s['base']:g}",
                tried,
                ind,
                f"×{s['factor']:g} → {s['weight']} = {s['value']:g}",
                beats,
            ]
        )
    return "\n".join(
        [
            f"<p>Distillation weights chosen on a validation split ({result['n_validation']} of "
            f"the students' {result['n_fit'] + result['n_validation']} training examples; the "
            f"search models trained on the other {result['n_fit']}, seeds "
            f"{', '.join(map(str, result['seeds']))}): the factor of highest mean validation "
            "accuracy wins, as the paper tuned its students to beat the independent one "
            "(Ojha et al. 2023). The students above trained on all their data with the chosen "
            "weights.</p>",
            table(
                [
                    "student",
                    "configured weight",
                    "validation accuracy per factor",
                    "independent (validation)",
                    "chosen",
                    "beats independent",
                ],
                rows,
            ),
        ]
    )
