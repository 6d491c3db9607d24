"""Executors (kdscope.executor): every executor returns the jobs' results in order, reports their
progress on one bar, pins its workers' threads, knows the user's registered code, keeps the
other jobs' results when one fails and stops its workers on Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import executor_jobs as jobs
import pytest

from kdscope.errors import KdscopeError
from kdscope.executor import Job, LocalExecutor, ProcessExecutor, build_executor


class Bar:
    """A progress bar that records what it is told."""

    def __init__(self) -> None:
        self.n = 0
        self.descriptions: list[str] = []

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description(self, desc: str) -> None:
        self.descriptions.append(desc)


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(workers=2, threads=1) as ex:
        yield ex


def test_local_and_process_executors_return_results_in_order_with_all_progress(pool):
    squares = [Job(f"square {x}", jobs.square, (x,)) for x in (5, 1, 7, 3)]
    for ex in (LocalExecutor(), pool):
        bar = Bar()
        assert ex.map(squares, bar) == [25, 1, 49, 9]
        assert bar.n == 5 + 1 + 7 + 3  # every unit reported, none twice
        assert any("square 7" in d for d in bar.descriptions)
    assert pool.map([]) == []


def test_workers_are_separate_processes_pinned_to_their_thread_count(pool):
    out = pool.map([Job(f"j{i}", jobs.threads_and_pid) for i in range(4)])
    assert {threads for threads, _ in out} == {1}
    assert os.getpid() not in {pid for _, pid in out}
    with ProcessExecutor(workers=1, threads=2) as two:
        assert two.map([Job("j", jobs.threads_and_pid)])[0][0] == 2


def test_a_failed_job_is_reported_with_its_traceback_and_the_others_still_finish(
    pool, tmp_path, capsys
):
    for ex in (LocalExecutor(), pool):
        folder = tmp_path / ex.name
        folder.mkdir()
        work = [
            Job(f"job {name}", jobs.write_then_maybe_fail, (folder, name, fail))
            for name, fail in (("a", ""), ("b", "bug"), ("c", ""), ("d", ""))
        ]
        with pytest.raises(ValueError, match="planted bug in b"):
            ex.map(work)
        assert sorted(p.name for p in folder.iterdir()) == ["a", "c", "d"]
        err = capsys.readouterr().err
        assert "job 'job b' failed" in err
        assert "Traceback" in err and "write_then_maybe_fail" in err


def test_a_user_error_in_a_job_is_raised_as_is_without_a_traceback(pool, tmp_path, capsys):
    work = [Job("bad", jobs.write_then_maybe_fail, (tmp_path, "x", "user"))]
    with pytest.raises(KdscopeError, match="planted user error in x"):
        pool.map(work)
    assert capsys.readouterr().err == ""


def test_a_worker_killed_midway_is_one_line_and_the_pool_starts_again(pool):
    with pytest.raises(KdscopeError, match="a worker process died while running 'victim'"):
        pool.map([Job("victim", jobs.die)])
    assert pool.map([Job("square 3", jobs.square, (3,))]) == [9]  # a new pool


def test_workers_know_the_models_the_users_code_registered(tmp_path, monkeypatch):
    (tmp_path / "my_registered_models.py").write_text(
        "from torch import nn\n"
        "import kdscope\n"
        "@kdscope.register_model('model_from_user_code')\n"
        "def build(num_classes: int) -> nn.Module:\n"
        "    return nn.Linear(4, num_classes)\n"
    )
    from kdscope.plugins import import_modules

    import_modules(["my_registered_models"], tmp_path)
    with ProcessExecutor(workers=1) as ex:
        assert ex.map([Job("j", jobs.model_registered, ("model_from_user_code",))]) == [True]


def test_ctrl_c_stops_the_workers_at_once(tmp_path):
    ex = ProcessExecutor(workers=2)
    work = [Job(f"sleep {i}", jobs.sleep_then_write, (tmp_path, 60.0)) for i in range(4)]
    # a real SIGINT, as Ctrl-C sends, once the workers have started
    timer = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.map(work)
    finally:
        timer.cancel()
        ex.close()
    assert time.monotonic() - start < 30
    started = list(tmp_path.glob("*.started"))
    assert started and not list(tmp_path.glob("*.done"))
    for marker in started:  # the workers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(marker.stem), 0)


def test_bad_executor_settings_are_user_errors():
    with pytest.raises(KdscopeError, match="workers must be at least 1"):
        ProcessExecutor(workers=0)
    with pytest.raises(KdscopeError, match="unknown executor 'slurm'"):
        build_executor("slurm")


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(KdscopeError, match=r"pip install 'kdscope\[ray\]'"):
        build_executor("ray")


def test_executor_results_do_not_depend_on_the_file_path(tmp_path: Path):
    """Sanity: results of a pure job are the same from either executor (used by the study
    tests for whole studies)."""
    work = [Job(f"square {x}", jobs.square, (x,)) for x in range(6)]
    with ProcessExecutor(workers=2) as ex:
        assert ex.map(work) == LocalExecutor().map(work)
