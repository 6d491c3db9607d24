"""Executors: where a study's jobs run. In this process one after another (``local``), in a
pool of local worker processes (``processes``), or on a Ray cluster (``ray``).

A :class:`Job` is one unit of work (a training run, the knowledge-point maps of one network,
seed and layer, a retraining inside an analysis): a picklable description in (a module-level
function and its arguments), a result out, and files written only inside its own folder. No
job reads another's mutable state, so an executor may run them in any order and in any process,
and every job seeds itself: the results are bit-identical whichever executor runs them (each
worker's torch runs with the thread count the executor gives it; see docs/scaling.md for what
holds on a GPU).

Every job runs even when another fails, so that the others' results are kept on disk; then the
first failure is raised (a failure that is not a user error is printed first, with its job and
traceback, to stderr). Ctrl-C (or SIGTERM) stops the workers at once; the files written so far
are whole (every write is atomic) and the same command resumes.

Progress: a job reports its work units through the ``progress`` keyword its function receives;
the executor adds them to one bar, whose description names the jobs running.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch

from kdscope import device
from kdscope.errors import KdscopeError
from kdscope.plugins import UserCode, user_code

R = TypeVar("R")
#: seconds between a worker's progress messages (its units are summed meanwhile)
PROGRESS_INTERVAL = 0.2


class Bar(Protocol):
    """The part of a progress bar an executor uses (:func:`kdscope.progress.progress`)."""

    def update(self, n: int = 1) -> Any: ...  # noqa: ANN401  (tqdm returns bool | None)

    def set_description(self, desc: str) -> Any: ...  # noqa: ANN401


@dataclass(frozen=True)
class Job(Generic[R]):
    """One unit of work: ``fn(*args, progress=callback)`` returns its result.

    ``fn`` is a module-level function and ``args`` are picklable (a worker process or a Ray
    node receives them); ``label`` names the job in progress lines and error messages. The job
    computes on its process's current device (:mod:`kdscope.device`), which the executor sets
    in each worker. ``cost`` (any unit, the same for the jobs of one :meth:`Executor.map`)
    orders the submission to a pool: the costliest first, so that no long job starts last."""

    label: str
    fn: Callable[..., R]
    args: tuple[Any, ...] = ()
    cost: float = 0.0

    def __call__(self, progress: Callable[[int], None]) -> R:
        return self.fn(*self.args, progress=progress)


def _ignore(n: int) -> None:
    """A progress callback that counts nothing."""


class Executor(ABC):
    """Runs jobs and returns their results in job order (module docstring). Used as a context
    manager, it releases its workers on exit; :meth:`map` may be called many times between."""

    name: ClassVar[str] = ""

    def map(self, jobs: Sequence[Job[R]], bar: Bar | None = None) -> list[R]:
        """The results of ``jobs``, in order; the first failure raised once all have run."""
        if not jobs:
            return []
        outcomes = self._run(list(jobs), bar)
        failures = [(j, o) for j, o in zip(jobs, outcomes, strict=True) if isinstance(o, _Failed)]
        for job, failed in failures:
            if not isinstance(failed.error, KdscopeError):
                print(f"kdscope: job {job.label!r} failed:\n{failed.text}", file=sys.stderr)
        if failures:
            raise failures[0][1].error
        return outcomes  # type: ignore[return-value]

    @abstractmethod
    def _run(self, jobs: list[Job[R]], bar: Bar | None) -> list[R | _Failed]:
        """Each job's result, or its failure."""

    def close(self) -> None:  # noqa: B027  (an executor without workers has none to release)
        """Release the workers (a later :meth:`map` starts them again)."""

    def describe(self) -> dict[str, Any]:
        """The executor as ``summary.json`` records it."""
        return {"name": self.name, "threads": self.job_threads()}

    def job_threads(self) -> int:
        """torch's threads in each job (a study is bit-identical at the same count)."""
        return torch.get_num_threads()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Failed:
    """A job's exception and its traceback as text."""

    error: BaseException
    text: str

    @classmethod
    def of(cls, error: BaseException) -> _Failed:
        cause = error.__cause__  # a worker's traceback, as concurrent.futures attaches it
        text = (
            str(cause) if cause is not None and type(cause).__name__ == "_RemoteTraceback" else ""
        )
        return cls(error, text or "".join(traceback.format_exception(error)))


class LocalExecutor(Executor):
    """Runs jobs one after another in this process, with torch's threads pinned to ``threads``
    while they run (None: this process's own count)."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise KdscopeError(f"threads must be at least 1, not {threads}")
        self.threads = threads

    def job_threads(self) -> int:
        return self.threads or torch.get_num_threads()

    def _run(self, jobs: list[Job[R]], bar: Bar | None) -> list[R | _Failed]:
        out: list[R | _Failed] = []
        with pinned_threads(self.threads):
            for job in jobs:
                if bar is not None:
                    bar.set_description(job.label)
                try:
                    out.append(job(bar.update if bar is not None else _ignore))
                except Exception as e:  # noqa: BLE001  (kept; raised once the others have run)
                    out.append(_Failed.of(e))
        return out


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes (default: one per core), each with torch pinned
    to ``threads`` threads (default 1) so that the workers do not fight over the cores.

    Workers are started (:meth:`start_method`) at the first :meth:`map` and kept until
    :meth:`close`, so that what a worker caches (a study's data, its teacher) serves its
    later jobs."""

    name = "processes"

    def __init__(
        self, workers: int | None = None, threads: int = 1, device: str | None = None
    ) -> None:
        if workers is not None and workers < 1:
            raise KdscopeError(f"workers must be at least 1, not {workers}")
        if threads < 1:
            raise KdscopeError(f"threads must be at least 1, not {threads}")
        self.workers = workers or default_workers()
        self.threads = threads
        self.device = device
        self._pool: ProcessPoolExecutor | None = None
        self._messages: Any = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workers": self.workers,
            "threads": self.threads,
            "start": self.start_method(),
        }

    def job_threads(self) -> int:
        return self.threads

    def start_method(self) -> str:
        """How workers start: ``fork`` (at once, sharing this process's data and teacher
        copy-on-write) where it is safe, i.e. on the CPU with one thread per worker, as
        PyTorch's DataLoader workers do (a forked child must not enter an OpenMP parallel
        region, nor touch CUDA); ``spawn`` (a fresh interpreter) otherwise."""
        cpu = device.resolve(self.device).type == "cpu"
        forks = "fork" in mp.get_all_start_methods()
        return "fork" if forks and cpu and self.threads == 1 else "spawn"

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = mp.get_context(self.start_method())
            self._messages = ctx.Queue()
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(self.threads, self.device, self._messages, user_code()),
            )
            # start every worker now, before this process starts any thread of its own (a
            # forked child inherits no thread, and no lock one of them held)
            self._pool.submit(pin_threads, self.threads).result()
        return self._pool

    def _run(self, jobs: list[Job[R]], bar: Bar | None) -> list[R | _Failed]:
        pool = self._start()
        with _listening(self._messages, jobs, bar):
            futures: list[Future[R]] = [None] * len(jobs)  # type: ignore[list-item]
            for i in by_cost(jobs):
                futures[i] = pool.submit(_run_in_worker, i, jobs[i])
            try:
                while wait(futures, timeout=0.5).not_done:  # a timeout: Ctrl-C gets through
                    pass
            except BaseException:
                self._stop()
                raise
        outcomes = [_outcome(f, job) for f, job in zip(futures, jobs, strict=True)]
        if any(isinstance(o, _Failed) and isinstance(o.error, _Died) for o in outcomes):
            self._stop()  # a broken pool runs nothing more: the next map starts a new one
        return outcomes

    def _stop(self) -> None:
        """Stop the workers now (Ctrl-C): queued jobs are dropped, running ones killed."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(5)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def by_cost(jobs: Sequence[Job[Any]]) -> list[int]:
    """The jobs' indices, costliest first (ties in job order)."""
    return sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)


class _Died(KdscopeError):
    """A worker process died (killed, out of memory) while it ran a job."""


def _outcome(future: Future[R], job: Job[R]) -> R | _Failed:
    """A finished future's result, or its failure (a worker's death as a user error naming
    the job: the machine, not the job's code, is at fault)."""
    error = future.exception()
    if isinstance(error, BrokenProcessPool):
        error = _Died(
            f"a worker process died while running {job.label!r} or beside it (killed, or out "
            "of memory?); the finished jobs are kept: run the same command again to resume"
        )
    return _Failed.of(error) if error is not None else future.result()


#: the queue a worker process reports progress on (set by :func:`_init_worker`)
_MESSAGES: Any = None


def _init_worker(threads: int, dev: str | None, messages: Any, code: UserCode) -> None:  # noqa: ANN401
    """Pin a worker's torch to ``threads`` threads, make ``dev`` its device and import the
    user's code the parent imported; Ctrl-C is the parent's to handle (it stops the workers),
    so workers ignore it."""
    global _MESSAGES  # noqa: PLW0603  (a worker's one queue)
    _MESSAGES = messages
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the CLI's handler
    pin_threads(threads)
    device.use(dev)
    code.load()


def pin_threads(threads: int) -> None:
    """Give torch ``threads`` intra-op threads and as many inter-op threads (where it still may:
    inter-op threads are fixed once torch has used them)."""
    torch.set_num_threads(threads)
    with suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def _run_in_worker(index: int, job: Job[R]) -> R:
    """Run job ``index`` in a worker, reporting its start and its progress to the parent."""
    report = _Reporter(_MESSAGES, index)
    _MESSAGES.put((index, "start", 0))
    try:
        return job(report)
    finally:
        report.flush()
        _MESSAGES.put((index, "end", 0))


class _Reporter:
    """A worker's progress callback: units summed, sent at most every :data:`PROGRESS_INTERVAL`."""

    def __init__(self, messages: Any, index: int) -> None:  # noqa: ANN401
        self.messages, self.index = messages, index
        self.pending, self.last = 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        if time.monotonic() - self.last >= PROGRESS_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.messages.put((self.index, "progress", self.pending))
        self.pending, self.last = 0, time.monotonic()


@contextmanager
def _listening(messages: Any, jobs: Sequence[Job[Any]], bar: Bar | None) -> Iterator[None]:  # noqa: ANN401
    """While the body runs, a thread moves the workers' messages (:func:`_run_in_worker`) onto
    ``bar``: progress units, and the labels of the jobs running as its description."""
    done = threading.Event()
    running: dict[int, str] = {}

    def listen() -> None:
        while not (done.is_set() and messages.empty()):
            try:
                index, kind, n = messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if bar is None:
                continue
            if kind == "progress":
                bar.update(n)
                continue
            if kind == "start":
                running[index] = jobs[index].label
            else:
                running.pop(index, None)
            if running:
                bar.set_description(", ".join(running.values()))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class RayExecutor(Executor):
    """Jobs as Ray tasks: on the cluster at ``address`` (``auto``: the one this machine
    belongs to), or on a local Ray instance started with ``cpus`` CPUs when ``address`` is
    None. Each task takes ``threads`` CPUs (torch pinned to as many threads) and, when the
    study's device is CUDA (``auto``: when the cluster has GPUs), ``gpus`` GPUs (``num_gpus``;
    a fraction shares a GPU among jobs); Ray hides the others, so the task's device is
    ``cuda``.

    Ray is an optional extra: ``pip install 'kdscope[ray]'``. Every node must reach the
    study folder (a shared file system) and the data files at the same paths."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        threads: int = 1,
        gpus: float = 1.0,
        cpus: int | None = None,
        device: str | None = None,
    ) -> None:
        self.ray = import_ray()
        self.address, self.threads, self.gpus, self.cpus = address, threads, gpus, cpus
        self.device = device
        self._started = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "threads": self.threads}

    def job_threads(self) -> int:
        return self.threads

    def start(self) -> None:
        """Connect to the cluster (or start the local instance) now, rather than at the first
        :meth:`map`."""
        self._init()

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        # Ray's own start-up notes are not the user's business; its errors still show
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        if self.address is None and "RAY_ADDRESS" not in os.environ:
            options["num_cpus"] = self.cpus or default_workers()
        ray.init(address=self.address, **options)
        self._started = True

    def _run(self, jobs: list[Job[R]], bar: Bar | None) -> list[R | _Failed]:
        ray = self.ray
        self._init()
        from ray.util.queue import Queue

        messages, code = Queue(), user_code()
        gpus = self.gpus if self._on_gpus() else 0
        task = ray.remote(_run_ray_task).options(
            num_cpus=self.threads, num_gpus=gpus, max_retries=0
        )
        dev = "cuda" if gpus else "cpu"
        refs: list[Any] = [None] * len(jobs)
        for i in by_cost(jobs):
            # pickled here, unpickled in the task once the user's code is imported there
            refs[i] = task.remote(i, pickle.dumps(jobs[i]), self.threads, dev, messages, code)
        with _listening(_RayQueue(messages), jobs, bar):
            try:
                pending = list(refs)
                while pending:
                    _, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            except BaseException:
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
        out: list[R | _Failed] = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, BaseException) else e
                out.append(_Failed(cause, str(e)))
        return out

    def _on_gpus(self) -> bool:
        """Whether the jobs run on GPUs: the device is CUDA, or ``auto`` on a cluster with
        GPUs."""
        if self.device is not None and self.device.startswith("cuda"):
            return True
        return self.device in (None, "auto") and self.ray.cluster_resources().get("GPU", 0) > 0

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


class _RayQueue:
    """A Ray queue with the ``get(timeout)`` / ``empty()`` of a multiprocessing queue."""

    def __init__(self, q: Any) -> None:  # noqa: ANN401
        self.q = q

    def get(self, timeout: float) -> Any:  # noqa: ANN401
        from ray.util.queue import Empty

        try:
            return self.q.get(timeout=timeout)
        except Empty:
            raise queue.Empty from None

    def empty(self) -> bool:
        return bool(self.q.empty())


def _run_ray_task(
    index: int,
    job: bytes,
    threads: int,
    dev: str,
    messages: Any,  # noqa: ANN401  (a Ray queue)
    code: UserCode,
) -> R:
    """A Ray task: pin torch's threads, set the device, import the user's code, then run the
    job reporting to ``messages``."""
    global _MESSAGES  # noqa: PLW0603
    pin_threads(threads)
    device.use(dev)
    code.load()
    _MESSAGES = messages
    return _run_in_worker(index, pickle.loads(job))


def import_ray() -> Any:  # noqa: ANN401  (the ray module)
    """The ``ray`` module; a user error naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError:
        raise KdscopeError(
            "executor 'ray' needs Ray, which is not installed: pip install 'kdscope[ray]' "
            "(or use executor 'processes' on one machine)"
        ) from None
    return ray


def build_executor(
    name: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    gpus: float = 1.0,
    device: str | None = None,
) -> Executor:
    """The executor ``name`` with its settings (:class:`kdscope.config.ExecutorConfig`):
    ``threads`` per job (for ``local``, None leaves this process's threads as they are), on
    the study's ``device``."""
    if name == "local":
        return LocalExecutor(threads)
    if name == "processes":
        return ProcessExecutor(workers, threads or 1, device)
    if name == "ray":
        return RayExecutor(address, threads or 1, gpus, device=device)
    raise KdscopeError(f"unknown executor {name!r}; use local, processes or ray")
