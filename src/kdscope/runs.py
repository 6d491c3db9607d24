"""One run of a study: train it, resume it, or reuse it when finished, inside the study's
output folder only. Used by :mod:`kdscope.study` for the study's models and by
:mod:`kdscope.weight_search` for the search runs.

A run folder must lie inside the study folder (a student name such as ``/tmp/x`` or ``../../x``
must not lead a run out of it), and a finished run is reused only if it was trained with the plan
now asked of it. A failed write is a one-line user error naming the file.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from kdscope import io
from kdscope.datasets import DataSplits
from kdscope.errors import KdscopeError
from kdscope.trainer import Progress, RunPlan, train_run


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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys: ``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _differences(recorded: Any, wanted: dict[str, Any]) -> str:
    """What differs between a run's recorded plan and the one wanted (at most three settings)."""
    if not isinstance(recorded, dict):
        return "it records no settings"
    old, new = _flatten(recorded), _flatten(wanted)
    keys = [k for k in dict.fromkeys([*new, *old]) if old.get(k, ...) != new.get(k, ...)]
    shown = [f"{k} was {old.get(k, 'unset')}, is now {new.get(k, 'unset')}" for k in keys[:3]]
    more = [f"{len(keys) - 3} more"] if len(keys) > 3 else []
    return "; ".join(shown + more) or "its recorded settings differ"


def _check_finished(plan: RunPlan, run_dir: Path) -> None:
    """A user error if ``run_dir`` holds a finished run whose recorded plan is not ``plan`` (run
    folders copied from another study, a name leading into another run's folder): such a run
    is never adopted."""
    done = run_dir / "result.json"
    if not done.exists():
        return
    try:
        result = io.read_json(done)
    except KdscopeError:  # a damaged result: the trainer warns and retrains the run
        return
    if not isinstance(result, dict):
        return  # damaged too
    recorded = result.get("plan")
    wanted = json.loads(json.dumps(plan.fingerprint()))  # as result.json stores it
    if recorded != wanted:
        raise KdscopeError(
            f"{run_dir} holds a finished run trained with other settings "
            f"({_differences(recorded, wanted)}); to train it anew, run "
            f"'rm -r {shlex.quote(str(run_dir))}' and then the same command again"
        )


def resume_run(
    out_dir: Path,
    plan: RunPlan,
    data: DataSplits,
    run_dir: Path,
    teacher: nn.Module | None,
    cache_teacher: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """:func:`~kdscope.trainer.train_run` for a run of the study in ``out_dir``, after checking
    that ``run_dir`` lies inside it and that a finished run there was trained with ``plan``; a
    failed write is a one-line error naming the file."""
    check_inside(out_dir, run_dir)
    with writing(run_dir):
        _check_finished(plan, run_dir)
        return train_run(plan, data, run_dir, teacher, cache_teacher, progress)
