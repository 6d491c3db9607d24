"""The Ray executor on a local Ray instance of 2 CPUs: jobs' results in order with their progress,
a failed job reported after the others ran, and a whole study identical to the local one."""

from __future__ import annotations

import executor_jobs as jobs
import pytest
from test_executor import Bar
from test_scaling import digests, small_study, without_environment

from kdscope import io, run_study
from kdscope.executor import Job, RayExecutor

ray = pytest.importorskip("ray", reason="Ray is the 'ray' extra (installed with 'test')")


@pytest.fixture(scope="module")
def ray_executor():
    ex = RayExecutor(cpus=2)
    try:
        ex.start()
    except Exception as e:  # noqa: BLE001  (the machine, not kdscope: say so and skip)
        pytest.skip(f"a local Ray instance does not start on this machine: {e}")
    with ex:
        yield ex


def test_ray_jobs_return_in_order_with_their_progress_on_pinned_workers(ray_executor, tmp_path):
    bar = Bar()
    squares = [Job(f"square {x}", jobs.square, (x,), cost=x) for x in (2, 5, 1)]
    assert ray_executor.map(squares, bar) == [4, 25, 1]
    assert bar.n == 8
    assert {t for t, _ in ray_executor.map([Job("t", jobs.threads_and_pid)] * 2)} == {1}
    work = [
        Job(f"job {name}", jobs.write_then_maybe_fail, (tmp_path, name, fail))
        for name, fail in (("a", ""), ("b", "bug"), ("c", ""))
    ]
    with pytest.raises(ValueError, match="planted bug in b"):
        ray_executor.map(work)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]


def test_a_study_on_ray_is_bit_identical_to_the_local_one(ray_executor, tmp_path):
    data = {"students": [{"method": "kd"}], "seeds": [0]}
    cfg = small_study(**data)
    local = run_study(cfg.executing("local", threads=1), tmp_path / "local", quiet=True).out_dir
    on_ray = run_study(cfg, tmp_path / "ray", quiet=True, executor=ray_executor).out_dir
    a, b = (io.read_json(p / "summary.json") for p in (local, on_ray))
    assert without_environment(a) == without_environment(b)
    assert b["environment"]["executor"]["name"] == "ray"
    assert digests(local) == digests(on_ray)
