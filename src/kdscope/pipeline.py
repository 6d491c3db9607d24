"""A whole study, end to end: train (or resume) its models (:func:`kdscope.study.train_study`),
then run its analyses and write ``summary.json`` and ``report.html``, all under the study's lock.

It sits above the studies, the analyses and the report, so that none of those imports another
upwards: the analyses may use the study's runs, and the study knows nothing of the analyses.
"""

from __future__ import annotations

from pathlib import Path

from kdscope.analyses import run_analyses
from kdscope.config import ExecutorConfig, StudyConfig
from kdscope.executor import Executor, build_executor
from kdscope.report import write_summary_and_report
from kdscope.study import StudyResult, train_study


def run_study(
    cfg: StudyConfig,
    out_dir: str | Path,
    quiet: bool = False,
    executor: Executor | None = None,
    teacher_only: bool = False,
) -> StudyResult:
    """Train (or resume) every model of the study, then run its analyses and write the report.
    With ``teacher_only`` only the teacher is trained (to check it before distilling). The
    output folder is locked while the study runs in it; a failed write is a one-line error."""

    def analyse(result: StudyResult) -> None:
        write_summary_and_report(result, run_analyses(result, quiet=quiet))

    settings = (cfg.executor or ExecutorConfig()).model_dump()
    with executor or build_executor(**settings, device=cfg.device) as ex:
        return train_study(
            cfg,
            out_dir,
            quiet=quiet,
            executor=ex,
            teacher_only=teacher_only,
            then=None if teacher_only else analyse,
        )
