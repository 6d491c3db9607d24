"""Analyses: a registry of :class:`~kdscope.analyses.base.Analysis` classes run on a study."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdscope.analyses.base import Analysis
from kdscope.progress import progress
from kdscope.registry import ANALYSES

if TYPE_CHECKING:
    from kdscope.config import AnalysisConfig
    from kdscope.study import StudyResult


def register_analysis(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator registering an analysis under its ``name``."""
    return ANALYSES.register(cls.name)(cls)


@dataclass
class AnalysisOutcome:
    """An analysis' result, or the reason it was skipped."""

    analysis: Analysis
    result: dict[str, Any] | None
    skipped: str | None = None


def with_requirements(entries: Sequence[AnalysisConfig]) -> list[AnalysisConfig]:
    """The configured analyses in order, each preceded by the analyses it ``requires`` that are
    not configured earlier (with default parameters)."""
    from kdscope.config import AnalysisConfig  # config validates against this registry

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


def run_analyses(study: StudyResult, quiet: bool = False) -> list[AnalysisOutcome]:
    """Run the study's analyses in the configured order (requirements first); inapplicable ones
    are skipped with a note. Each result is also kept in ``study.results`` for later analyses."""
    outcomes = []
    for entry in progress(
        with_requirements(study.config.analyses), desc="analyses", unit="analysis", disable=quiet
    ):
        analysis = ANALYSES.get(entry.name)(**entry.params)
        analysis.quiet = quiet
        reason = analysis.applies_to(study)
        result = None if reason else analysis.run(study)
        if result is not None:
            study.results[entry.name] = result
        outcomes.append(AnalysisOutcome(analysis, result, reason))
    return outcomes


from kdscope.analyses import (  # noqa: E402,F401  (register the built-ins)
    accuracy,
    accuracy_matched,
    adversarial,
    calibration,
    class_geometry,
    decision_boundary,
    difficulty,
    domains,
    invariance,
    knowledge_points,
    localisation,
    property_claims,
    representation_similarity,
    rescaling,
    shape_bias,
    soft_labels,
    subgroups,
    teacher_check,
    three_levels,
)

__all__ = ["ANALYSES", "Analysis", "AnalysisOutcome", "register_analysis", "run_analyses"]
