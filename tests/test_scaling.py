"""Whole studies on every executor: the same numbers and files whichever executor runs the jobs
(at the same thread count per job), the executor and device recorded, and the command line's
execution options."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdscope import io, load_preset, parse_study, run_study
from kdscope.cli import main
from kdscope.config import StudyConfig
from kdscope.errors import KdscopeError

#: files whose bytes every executor must reproduce (metrics.csv holds wall-clock seconds)
COMPARED = ("*.pt", "*.npz", "result.json", "trajectory.json", "search.json")


def small_study(**changes: object) -> StudyConfig:
    """The smoke study with two students, two seeds, and the knowledge-point analysis on a
    few inputs (jobs of every kind: training, knowledge-point maps)."""
    data = load_preset("smoke").model_dump(mode="json")
    data["students"] = [{"method": "kd"}, {"method": "hint"}]
    data["analyses"] = ["accuracy", {"name": "knowledge_points", "candidates": 4, "target": 2}]
    data.update(changes)
    return parse_study(data)


def digests(out: Path) -> dict[str, str]:
    """SHA-256 of every compared file under a study folder, by relative path."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for pattern in COMPARED
        for p in out.rglob(pattern)
    }


def without_environment(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "environment"}


@pytest.fixture(scope="module")
def local_and_pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("executors")
    cfg = small_study()
    run_study(cfg.executing("local", threads=1), root / "local", quiet=True)
    run_study(cfg.executing("processes", workers=2), root / "pool", quiet=True)
    return root / "local", root / "pool"


def test_a_study_is_bit_identical_on_the_local_and_process_executors(local_and_pool):
    local, pool = local_and_pool
    a, b = (io.read_json(p / "summary.json") for p in local_and_pool)
    assert without_environment(a) == without_environment(b)
    files = digests(local)
    # (the teacher + 3 networks x 2 seeds) x 2 layers
    assert len([f for f in files if f.endswith(".npz")]) == (1 + 3 * 2) * 2
    assert files == digests(pool)


def test_the_summary_records_executor_threads_and_device(local_and_pool):
    local, pool = local_and_pool
    a, b = (io.read_json(p / "summary.json")["environment"] for p in local_and_pool)
    assert a["threads"] == b["threads"] == 1 and a["device"] == b["device"] == "cpu"
    assert a["executor"] == {"name": "local", "threads": 1}
    assert b["executor"] == {"name": "processes", "workers": 2, "threads": 1, "start": "fork"}
    assert a["torch"] == torch.__version__


def test_a_grown_study_on_another_executor_reuses_every_run(local_and_pool, tmp_path):
    """The executor is not part of a run's plan: a study folder made on one executor is
    resumed on another without retraining, and the other settings stay as they were."""
    local, _ = local_and_pool
    before = {p: p.stat().st_mtime_ns for p in local.rglob("*.pt")}
    run_study(small_study().executing("processes", workers=2), local, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in local.rglob("*.pt")} == before
    assert not (local / "study.previous.yaml").exists()


def test_executor_and_device_in_the_study_file_are_checked():
    with pytest.raises(KdscopeError, match="executor.workers"):
        small_study(executor={"name": "processes", "workers": 0})
    with pytest.raises(KdscopeError, match="'address' is a setting of executor 'ray'"):
        small_study(executor={"name": "local", "address": "auto"})
    with pytest.raises(KdscopeError, match="device 'gpu'"):
        small_study(device="gpu")


def test_a_cuda_device_on_a_machine_without_one_is_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code = main(["run", "--preset", "smoke", "--out", str(tmp_path / "s"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "device 'cuda'" in err and "sees no CUDA GPU" in err
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_command_line_execution_options_are_checked(tmp_path, capsys):
    out = str(tmp_path / "s")
    assert (
        main(["run", "--preset", "smoke", "--out", out, "--executor", "local", "--workers", "2"])
        == 2
    )
    assert "'workers' is a setting of executor 'processes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--preset", "smoke", "--out", out, "--executor", "slurm"])


def test_ctrl_c_on_the_process_executor_stops_the_study_and_it_resumes(tmp_path):
    """A study on the process pool interrupted while its students train exits 130, leaves no
    worker behind, and the same command finishes it with the files of an uninterrupted run."""
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "kdscope.cli", "run", "--preset", "smoke", "--out", str(out)]
    cmd += ["--workers", "2", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "models").glob("*/seed*/checkpoints/epoch_001.pt")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert subprocess.run(cmd, env=env).returncode == 0
    assert (out / "summary.json").exists()


def test_bench_executor_finds_the_pool_identical_to_one_process_at_its_thread_count():
    """``kdscope bench executor`` (its speed is measured, not tested: benchmarks, not tests,
    hold speed targets)."""
    from kdscope.bench import bench_executor

    rows = bench_executor()
    assert [r["summary_as_pool"] for r in rows][1:] == ["yes", "yes"]
    assert rows[1]["gate"] == "pass"
    assert all(float(r["seconds"]) > 0 for r in rows)


def test_bench_device_says_when_there_is_no_gpu():
    from kdscope.bench import bench_device

    rows = bench_device()
    if not torch.cuda.is_available():
        assert rows == [
            {"check": "cuda", "result": "skipped: torch sees no CUDA GPU on this machine"}
        ]
