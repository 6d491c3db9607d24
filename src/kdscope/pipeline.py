"""A whole study, end to end: train (or resume) its models (:func:`kdscope.study.train_study`),
then run its analyses and write ``summary.json``, ``report.html`` and ``timings.json`` (where
this invocation's wall-clock time went), all under the study's lock.

It sits above the studies, the analyses and the report, so that none of those imports another
upwards: the analyses may use the study's runs, and the study knows nothing of the analyses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kdscope import io
from kdscope.analyses import AnalysisOutcome, run_analyses
from kdscope.config import ExecutorConfig, StudyConfig
from kdscope.executor import Executor, build_executor
from kdscope.report import environment, write_summary_and_report
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

    start = time.perf_counter()

    def analyse(result: StudyResult) -> None:
        trained = time.perf_counter()
        outcomes = run_analyses(result, quiet=quiet)
        analysed = time.perf_counter()
        write_summary_and_report(result, outcomes)
        end = time.perf_counter()
        seconds = (trained - start, analysed - trained, end - analysed, end - start)
        io.write_json(result.out_dir / "timings.json", timings(result, outcomes, *seconds))

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


def timings(
    study: StudyResult,
    outcomes: list[AnalysisOutcome],
    training: float,
    analyses: float,
    report: float,
    total: float,
) -> dict[str, Any]:
    """``timings.json``: the wall-clock seconds of this invocation, by phase (training, which
    counts only the runs this invocation trained or resumed; each analysis; summary and report)
    and what they were measured on. Kept out of ``summary.json``, which is bit-identical from
    run to run."""
    return {
        "total": round(total, 2),
        "training": round(training, 2),
        "analyses": {o.analysis.name: round(o.seconds, 2) for o in outcomes},
        "analyses_total": round(analyses, 2),
        "summary_and_report": round(report, 2),
        "cpus": os.cpu_count(),
        "environment": environment(study),
    }


def format_timings(t: dict[str, Any]) -> str:
    """One line on where a run's time went (:func:`timings`), e.g. ``took 15 min 3 s: training
    6 min 54 s, knowledge_points 8 min 0 s, ...``."""
    parts = [("training", t["training"]), *t["analyses"].items()]
    parts.append(("summary and report", t["summary_and_report"]))
    shown = ", ".join(f"{name} {_duration(s)}" for name, s in parts if s >= 0.5)
    return f"took {_duration(t['total'])}" + (f": {shown}" if shown else "")


def _duration(seconds: float) -> str:
    """``8 min 0 s``, ``42 s`` or ``1.3 s``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"
