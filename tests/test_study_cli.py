"""End to end: the smoke preset from the command line, resumption after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdscope.cli import main
from kdscope.config import load_preset
from kdscope.pipeline import format_timings

SMOKE = load_preset("smoke")


def _kdscope(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kdscope.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _accuracies(out: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((out / "summary.json").read_text())
    return {
        name: {seed: r["test_acc"] for seed, r in m["seeds"].items()}
        for name, m in summary["models"].items()
    }


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = _kdscope("run", "--preset", "smoke", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_smoke_run_writes_every_documented_file(smoke_run: Path) -> None:
    out = smoke_run
    assert (out / "study.yaml").read_text() == SMOKE.to_yaml()
    summary = json.loads((out / "summary.json").read_text())
    names = {"teacher", "baseline", *(s.label for s in SMOKE.students)}
    assert set(summary["models"]) == names
    for name, m in summary["models"].items():
        seeds = [str(SMOKE.teacher_seed)] if name == "teacher" else [str(s) for s in SMOKE.seeds]
        assert list(m["seeds"]) == seeds
        for seed in seeds:
            assert 0.0 <= m["seeds"][seed]["test_acc"] <= 1.0
            run = out / "models" / name / f"seed{seed}"
            assert (run / "metrics.csv").exists() and (run / "trajectory.json").exists()
            assert not (run / "state.pt").exists()
            epochs = m["seeds"][seed]["epochs"]
            ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
            assert ckpts == [
                f"epoch_{e:03d}.pt" for e in sorted({*SMOKE.checkpoints, epochs}) if e <= epochs
            ]
            traj = json.loads((run / "trajectory.json").read_text())
            assert set(traj["layers"]) == set(SMOKE.layers)
            assert len(traj["layers"]["conv"]["cumulative_distance"]) == epochs + 1
    assert summary["dataset"]["n_train"] == 256 and summary["dataset"]["student_n_train"] == 192
    assert "accuracy" in summary["analyses"]
    acc = summary["analyses"]["accuracy"]
    assert set(acc["student_minus_baseline"]) == {s.label for s in SMOKE.students}
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 1 and "<h2>Accuracy" in report
    assert 'src="http' not in report  # self-contained
    t = json.loads((out / "timings.json").read_text())  # this invocation's time, by phase
    assert list(t["analyses"]) == [a.name for a in SMOKE.analyses]
    phases = t["training"] + t["analyses_total"] + t["summary_and_report"]
    assert t["training"] > 0 and abs(phases - t["total"]) < 0.05
    assert abs(sum(t["analyses"].values()) - t["analyses_total"]) < 0.05
    assert t["environment"] == summary["environment"]


def test_format_timings_names_each_phase() -> None:
    t = {"total": 903.2, "training": 414.0, "analyses": {"accuracy": 0.2, "kp": 480.0}}
    t["summary_and_report"] = 9.0
    line = format_timings(t)
    assert line == "took 15 min 3 s: training 6 min 54 s, kp 8 min 0 s, summary and report 9.0 s"


def test_rerun_is_a_no_op_with_the_same_summary(smoke_run: Path) -> None:
    before = _accuracies(smoke_run)
    assert main(["run", "--preset", "smoke", "--out", str(smoke_run), "--quiet"]) == 0
    assert _accuracies(smoke_run) == before


def test_killed_run_resumes_to_the_same_accuracies(smoke_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kdscope.cli", "run", "--preset", "smoke", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "models" / "kd" / "seed0" / "state.pt"  # mid-way: inside a student's run
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    assert main(["run", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    assert _accuracies(out) == _accuracies(smoke_run)


def _one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdscope: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path: Path) -> None:
    _one_line_error(
        _kdscope("run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")), "not found"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.to_yaml().replace("method: kd\n", "method: kdd\n", 1))
    _one_line_error(_kdscope("run", str(bad), "--out", str(tmp_path / "o")), "unknown method 'kdd'")
    _one_line_error(
        _kdscope("run", "--preset", "nope", "--out", str(tmp_path / "o")), "unknown preset"
    )
    layer = tmp_path / "layer.yaml"
    layer.write_text(SMOKE.to_yaml().replace("- conv\n", "- conv9\n", 1))
    _one_line_error(
        _kdscope("run", str(layer), "--out", str(tmp_path / "o2")), "unknown layer 'conv9'"
    )
    big = tmp_path / "big.yaml"
    big.write_text(SMOKE.to_yaml().replace("transfer_size: 192", "transfer_size: 9999"))
    _one_line_error(_kdscope("run", str(big), "--out", str(tmp_path / "o")), "exceeds the 256")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_different_study_never_overwrites_existing_results(
    smoke_run: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(SMOKE.to_yaml().replace("transfer_size: 192", "transfer_size: 128"))
    before = {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()}
    _one_line_error(
        _kdscope("run", str(other), "--out", str(smoke_run)), "another transfer_size (192 → 128)"
    )
    assert {p: p.stat().st_mtime_ns for p in smoke_run.rglob("*") if p.is_file()} == before


def test_class_count_mismatch_is_reported(tmp_path: Path) -> None:
    from torch import nn

    from kdscope import KdscopeError, parse_study, register_model, run_study
    from kdscope.models import MODELS

    @register_model("test_fixed10")
    def fixed10(num_classes: int) -> nn.Module:  # ignores num_classes: always 10 logits
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(10))

    try:
        data = SMOKE.model_dump(mode="json")
        data["teacher"]["model"] = {"name": "test_fixed10"}
        data["layers"] = []
        with pytest.raises(
            KdscopeError, match=r"outputs \(10,\) logits but the dataset has 4 classes"
        ):
            run_study(parse_study(data), tmp_path / "o", quiet=True)
        assert not (tmp_path / "o").exists()  # nothing written for a study that cannot run
        data["teacher"]["model"] = {"name": "mlp", "input_size": 8}
        with pytest.raises(KdscopeError, match=r"cannot process inputs of shape \(3, 16, 16\)"):
            run_study(parse_study(data), tmp_path / "o", quiet=True)
    finally:
        MODELS._entries.pop("test_fixed10")
