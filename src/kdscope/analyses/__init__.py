"""Analyses: :class:`~kdscope.analyses.base.Analysis` classes run on a study, registered by name.

Grouped by paper, one file per analysis: :mod:`.knowledge_points`, :mod:`.teacher_knowledge`
(three levels) and :mod:`.property_transfer`, each file named like the file of the functional
core (:mod:`kdscope.knowledge_points`, :mod:`kdscope.teacher_knowledge`,
:mod:`kdscope.property_transfer`) whose maths it runs; :mod:`.accuracy` serves all three. An
analysis registers itself with :func:`~kdscope.analyses.base.register_analysis`; this package
imports every file, so adding an analysis is adding a file and its import in its paper's
``__init__``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdscope.analyses import knowledge_points, property_transfer, teacher_knowledge
from kdscope.analyses.accuracy import AccuracyAnalysis
from kdscope.analyses.base import Analysis, register_analysis
from kdscope.config import AnalysisConfig
from kdscope.progress import progress
from kdscope.registry import ANALYSES

if TYPE_CHECKING:
    from kdscope.study import StudyResult


@dataclass
class AnalysisOutcome:
    """An analysis' result, or the reason it was skipped, and the wall-clock seconds it took."""

    analysis: Analysis
    result: dict[str, Any] | None
    skipped: str | None = None
    seconds: float = 0.0


def with_requirements(entries: Sequence[AnalysisConfig]) -> list[AnalysisConfig]:
    """The configured analyses in order, each preceded by the analyses it ``requires`` that are
    not configured earlier (with default parameters)."""
    ordered: list[AnalysisConfig] = []

    def add(entry: AnalysisConfig) -> None:
        for need in ANALYSES.get(entry.name).requires:
            if all(e.name != need for e in ordered):
                configured = [e for e in entries if e.name == need]
                add(configured[0] if configured else AnalysisConfig(name=need))
        if all(e.name != entry.name for e in ordered):
            ordered.append(entry)

    for entry in entries:
        add(entry)
    return ordered


def _unreadable_teacher(analysis: Analysis, study: StudyResult) -> str | None:
    """Why ``analysis`` cannot run on a TorchScript teacher (it reads the teacher's layers)."""
    if analysis.reads_teacher_layers and study.config.teacher.torchscript is not None:
        return (
            "it reads the teacher's layers, and a TorchScript teacher runs no Python hooks "
            "inside it (give the teacher as a checkpoint with its model)"
        )
    return None


def run_analyses(study: StudyResult, quiet: bool = False) -> list[AnalysisOutcome]:
    """Run the study's analyses in the configured order (requirements first); inapplicable ones
    are skipped with a note. Each result is also kept in ``study.results`` for later analyses."""
    outcomes = []
    for entry in progress(
        with_requirements(study.config.analyses), desc="analyses", unit="analysis", disable=quiet
    ):
        analysis = ANALYSES.get(entry.name)(**entry.params)
        analysis.quiet = quiet
        start = time.perf_counter()
        reason = _unreadable_teacher(analysis, study) or analysis.applies_to(study)
        result = None if reason else analysis.run(study)
        if result is not None:
            study.results[entry.name] = result
        outcomes.append(AnalysisOutcome(analysis, result, reason, time.perf_counter() - start))
    return outcomes


__all__ = [
    "ANALYSES",
    "AccuracyAnalysis",
    "Analysis",
    "AnalysisOutcome",
    "knowledge_points",
    "property_transfer",
    "register_analysis",
    "run_analyses",
    "teacher_knowledge",
]
