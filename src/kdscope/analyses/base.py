"""The analysis contract: ``name``, ``applies_to(study)``, ``run(study) -> result``,
``report_section(result, study) -> html``.

``run`` returns a JSON-serialisable dict that goes into ``summary.json`` under the analysis'
name; ``report_section`` turns it into an HTML fragment (figures embedded with
:func:`kdscope.render.figure_html`) that becomes one section of ``report.html``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from kdscope.registry import ANALYSES

if TYPE_CHECKING:
    from kdscope.study import StudyResult


class Analysis:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    # analyses whose results ``run`` reads from ``study.results``; the runner adds missing ones
    # (with default parameters) before this one
    requires: ClassVar[tuple[str, ...]] = ()
    # the models it trains beyond the study's own (through the study service), in a phrase for
    # the report; "" when it trains none
    trains: ClassVar[str] = ""
    # whether it reads the teacher's intermediate layers (then a TorchScript teacher, whose
    # layers cannot be hooked, skips it with a note)
    reads_teacher_layers: ClassVar[bool] = False
    quiet: bool = False  # set by the runner: no progress bars

    def __init__(self) -> None:
        """Analyses with parameters take them as keyword arguments (from the study file)."""

    def applies_to(self, study: StudyResult) -> str | None:
        """None when the analysis applies to ``study``, else the reason it is skipped."""
        return None

    def extra_models(self) -> str:
        """What this configured analysis trains beyond the study's models (:attr:`trains`)."""
        return self.trains

    def run(self, study: StudyResult) -> dict[str, Any]:
        raise NotImplementedError

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        raise NotImplementedError


def register_analysis(cls: type[Analysis]) -> type[Analysis]:
    """Class decorator registering an analysis under its ``name``."""
    return ANALYSES.register(cls.name)(cls)
