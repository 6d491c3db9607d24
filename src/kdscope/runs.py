"""One run of a study: train it, resume it, or reuse it when finished, inside the study's
output folder only. Used by :mod:`kdscope.study` for the study's models and by
:mod:`kdscope.weight_search` for the search runs.

A run folder must lie inside the study folder (a student name such as ``/tmp/x`` or ``../../x``
must not lead a run out of it), and a finished run is reused only if it was trained with the plan
now asked of it. A failed write is a one-line user error naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from kdscope.datasets import DataSplits
from kdscope.errors import KdscopeError
from kdscope.trainer import Progress, RunPlan, check_run_plan, train_run


def os_error_text(e: OSError, path: Path | str | None = None) -> str:
    """``FILE: cause`` for a failed file-system call: the file the error names (else ``path``)
    and the system's reason in lower case (``read-only file system``)."""
    cause = e.strerror or str(e) or type(e).__name__
    cause = cause[:1].lower() + cause[1:]
    where = e.filename or path
    return f"{where}: {cause}" if where else cause


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a file-system failure while writing under ``path`` (a read-only or full disk, a
    name too long) into a one-line user error naming the file and the cause. torch.save reports
    a failed write as a RuntimeError raised while handling the OSError: unwrapped too. Other
    errors pass unchanged."""
    try:
        yield
    except OSError as e:
        raise KdscopeError(f"cannot write {os_error_text(e, path)}") from None
    except RuntimeError as e:
        if not isinstance(e.__context__, OSError):
            raise
        raise KdscopeError(f"cannot write {os_error_text(e.__context__, path)}") from None


def check_inside(out_dir: Path, path: Path) -> None:
    """A user error unless ``path``, resolved, lies inside the resolved ``out_dir`` (a student
    name such as ``/tmp/x`` or ``../../x`` must not lead a run out of the study folder)."""
    if not path.resolve().is_relative_to(out_dir.resolve()):
        raise KdscopeError(
            f"refusing to write {path}: it lies outside the output folder {out_dir} "
            "(a student name with '/' or '..'?)"
        )


def check_plans(out_dir: Path, jobs: Iterable[tuple[Path, RunPlan]]) -> None:
    """Refuse, before anything is written or trained, what training the runs ``jobs`` (run
    folder, plan) of the study in ``out_dir`` would refuse: a folder that holds a finished or
    interrupted run recorded with another plan (:func:`~kdscope.trainer.check_run_plan`, the
    trainer's message naming the settings that differ). A folder with no run or a damaged one
    passes: the trainer trains it from scratch."""
    for run_dir, plan in jobs:
        check_inside(out_dir, run_dir)
        check_run_plan(plan, run_dir)


def resume_run(
    out_dir: Path,
    plan: RunPlan,
    data: DataSplits,
    run_dir: Path,
    teacher: nn.Module | None,
    cache_teacher: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`~kdscope.trainer.train_run` (which reuses a finished run only if it was trained
    with ``plan``) for a run of the study in ``out_dir``, after checking that ``run_dir`` lies
    inside it; a failed write is a one-line error naming the file."""
    check_inside(out_dir, run_dir)
    with writing(run_dir):
        return train_run(plan, data, run_dir, teacher, cache_teacher, progress)
