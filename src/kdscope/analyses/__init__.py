"""Analyses: a registry of :class:`~kdscope.analyses.base.Analysis` classes run on a study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from kdscope.analyses.base import Analysis
from kdscope.registry import Registry

if TYPE_CHECKING:
    from kdscope.study import StudyResult

ANALYSES: Registry[type[Analysis]] = Registry("analysis")


def register_analysis(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator registering an analysis under its ``name``."""
    return ANALYSES.register(cls.name)(cls)


@dataclass
class AnalysisOutcome:
    """An analysis' result, or the reason it was skipped."""

    analysis: Analysis
    result: dict[str, Any] | None
    skipped: str | None = None


def run_analyses(study: StudyResult, quiet: bool = False) -> list[AnalysisOutcome]:
    """Run the study's analyses in the configured order; inapplicable ones are skipped with a note."""
    outcomes = []
    for entry in tqdm(study.config.analyses, desc="analyses", disable=quiet, leave=False):
        analysis = ANALYSES.get(entry.name)(**entry.params)
        analysis.quiet = quiet
        reason = analysis.applies_to(study)
        result = None if reason else analysis.run(study)
        outcomes.append(AnalysisOutcome(analysis, result, reason))
    return outcomes


from kdscope.analyses import accuracy, knowledge_points  # noqa: E402,F401  (register the built-ins)

__all__ = ["ANALYSES", "Analysis", "AnalysisOutcome", "register_analysis", "run_analyses"]
