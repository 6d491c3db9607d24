"""Job functions for tests/test_executor.py: module-level, so that worker processes (which import
this module by name, the tests folder being on the path the parent hands them) can run them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kdscope.errors import KdscopeError


def square(x: int, progress: Callable[[int], None]) -> int:
    """x², reporting x units of progress one at a time."""
    for _ in range(x):
        progress(1)
    return x * x


def threads_and_pid(progress: Callable[[int], None]) -> tuple[int, int]:
    """The torch thread count and process id of the process running the job."""
    return torch.get_num_threads(), os.getpid()


def write_then_maybe_fail(
    folder: Path, name: str, fail: str, progress: Callable[[int], None]
) -> str:
    """Write ``folder/name`` (after a pause, so that the failing job fails first), then raise
    ``fail`` (``bug``: a ValueError, ``user``: a KdscopeError) or return ``name``."""
    if fail == "bug":
        raise ValueError(f"planted bug in {name}")
    if fail == "user":
        raise KdscopeError(f"planted user error in {name}")
    time.sleep(0.3)
    (folder / name).write_text(name)
    return name


def sleep_then_write(folder: Path, seconds: float, progress: Callable[[int], None]) -> int:
    """Write ``folder/<pid>.started``, sleep, then write ``folder/<pid>.done``."""
    (folder / f"{os.getpid()}.started").write_text("")
    time.sleep(seconds)
    (folder / f"{os.getpid()}.done").write_text("")
    return os.getpid()


def model_registered(name: str, progress: Callable[[int], None]) -> bool:
    """Whether the process running the job knows model ``name``."""
    from kdscope.models import MODELS

    return name in MODELS


def die(progress: Callable[[int], None]) -> None:
    """Kill the process running the job, as the system's out-of-memory killer would."""
    os.kill(os.getpid(), 9)
