"""Executors run independent jobs (trainings of different seeds or methods).

The in-process executor runs them one after another; every job is resumable and writes only
inside its own run directory, so a distributed executor (e.g. Ray over several machines) can
replace it by implementing :meth:`map`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[A], R], jobs: Iterable[A]) -> list[R]: ...


class LocalExecutor:
    """Runs jobs sequentially in this process (torch already uses every core per job)."""

    def map(self, fn: Callable[[A], R], jobs: Iterable[A]) -> list[R]:
        return [fn(job) for job in jobs]
