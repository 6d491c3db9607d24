"""What the terminal shows: the results table after a run, progress in a log, --version,
'kdscope list' with descriptions and a filter, and the default output folder."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tqdm import tqdm

from kdscope import __version__
from kdscope.cli import main
from kdscope.config import load_preset
from kdscope.progress import STEPS, LineProgress, progress
from kdscope.summary_table import MAX_LINES, format_summary


@pytest.fixture(scope="module")
def smoke_cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in which the smoke study ran without --out and with stderr going to a file
    (not a terminal); its stdout is in ``stdout.txt``, its stderr in ``stderr.txt``."""
    cwd = tmp_path_factory.mktemp("terminal")
    cmd = [sys.executable, "-m", "kdscope.cli", "run", "--preset", "smoke"]
    with open(cwd / "stderr.txt", "w") as err:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.returncode == 0, (cwd / "stderr.txt").read_text()
    (cwd / "stdout.txt").write_text(proc.stdout)
    return cwd


def test_run_without_out_writes_into_runs_and_the_study_name(smoke_cwd: Path) -> None:
    out = smoke_cwd / "runs" / "smoke"
    assert (out / "summary.json").exists() and (out / "report.html").exists()
    lines = (smoke_cwd / "stdout.txt").read_text().splitlines()
    assert lines[0] == f"study smoke: writing into {Path('runs/smoke')}"
    assert (
        lines[-1] == f"wrote {Path('runs/smoke/summary.json')} and {Path('runs/smoke/report.html')}"
    )


def test_run_ends_with_a_results_table(smoke_cwd: Path) -> None:
    summary = json.loads((smoke_cwd / "runs" / "smoke" / "summary.json").read_text())
    table = (smoke_cwd / "stdout.txt").read_text().splitlines()[1:-1]
    assert table[0] == "results of smoke:" and len(table) <= MAX_LINES
    rows = {line.split()[0]: line for line in table if line.startswith("  ")}
    for name, group in summary["analyses"]["accuracy"]["groups"].items():
        assert f"{group['mean']:.3f}" in rows[name]
    verdicts = summary["analyses"]["accuracy"]["student_minus_baseline"]
    assert all(v["verdict"] in rows[name] for name, v in verdicts.items())
    assert "read this first:" in table
    assert any(line.startswith("  ! few seeds") for line in table)


def test_progress_in_a_log_is_plain_lines(smoke_cwd: Path) -> None:
    log = (smoke_cwd / "stderr.txt").read_bytes()
    assert b"\r" not in log and len(log) < 20_000
    lines = log.decode().splitlines()
    assert len(lines) > 5
    assert any(line.startswith("teacher seed 0: ") for line in lines)
    assert any(line.startswith("analyses: ") for line in lines)


def test_check_teacher_without_out_uses_the_same_folder(
    smoke_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(smoke_cwd)
    assert main(["check-teacher", "--preset", "smoke"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"study smoke: writing into {Path('runs/smoke')}"
    assert out[-1] == f"wrote {Path('runs/smoke/teacher_check.json')}"
    assert (smoke_cwd / "runs" / "smoke" / "teacher_check.json").exists()


def test_a_study_name_that_is_no_folder_name_needs_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(load_preset("smoke").to_yaml().replace("name: smoke", "name: ../up"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(study)]) == 2
    assert "give --out" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _record(mean: float, verdict: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"per_seed": {"0": mean, "1": mean}, "mean": mean}
    record["ci95"] = [mean - 0.01, mean + 0.01]
    return {**record, "verdict": verdict} if verdict else record


def test_the_table_shows_every_kind_of_verdict_and_stops_at_its_length() -> None:
    comparison = {"for_verdicts": True, "hypotheses": {"stability": {"verdict": "holds"}}}
    summary = {
        "study": "planted",
        "guards": [{"guard": "premise unmet", "message": "kd is not more accurate"}],
        "analyses": {
            "accuracy": {
                "groups": {"baseline": _record(0.5), "kd": _record(0.6)},
                "student_minus_baseline": {"kd": _record(0.1, "better")},
            },
            "knowledge_points": {"layers": {"conv": {"comparisons": {"kd": comparison}}}},
            "invariance": {"verdicts": {"crop invariance": {"kd": {"verdict": "transfers"}}}},
            "three_levels": {"claims": [{"claim": "KD-topk beats KD", "verdict": "reproduced"}]},
        },
    }
    text = format_summary(summary, "out/report.html")
    assert "! premise unmet: kd is not more accurate" in text
    assert "+0.100 [+0.090, +0.110] better" in text
    for row in ("stability (conv)  kd holds", "crop invariance", "KD-topk beats KD"):
        assert row in text
    claims = [{"claim": f"claim {i}", "verdict": "inconclusive"} for i in range(60)]
    summary["analyses"]["three_levels"]["claims"] = claims
    lines = format_summary(summary, "out/report.html").splitlines()
    assert len(lines) == MAX_LINES and lines[-1] == "... see out/report.html"


def test_progress_without_a_terminal_prints_a_line_per_tenth_and_description(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress(total=1000, unit="step")
    assert isinstance(bar, LineProgress)
    for run in ("teacher seed 0", "kd seed 0"):
        bar.set_description(run)
        for _ in range(500):
            bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == STEPS + 2 and lines[0].startswith("teacher seed 0: 0/1000 step (0%)")
    assert lines[-1].startswith("kd seed 0: 1000/1000 step (100%)")
    assert list(progress(range(3), desc="analyses")) == [0, 1, 2]
    quiet = io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    progress(total=10, desc="x", disable=True).update(10)
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_is_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress(total=10)
    assert isinstance(bar, tqdm)
    bar.close()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"kdscope {__version__}\n"


def test_list_describes_entries_with_their_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "methods", "kd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert "kd" in names and all("kd" in n for n in names) and "crd" not in names
    assert any(line.startswith("kd ") and "Hinton" in line for line in lines)
    assert any("tau=4.0" in line for line in lines)
    assert main(["list", "presets"]) == 0
    assert "smoke  " in capsys.readouterr().out
    assert main(["list", "analyses", "no-such-name"]) == 2
    assert "no analyses contain 'no-such-name'" in capsys.readouterr().err


def test_threads_are_capped_while_the_study_runs_and_recorded(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    out = tmp_path / "s"
    assert main(["run", "--preset", "smoke", "--out", str(out), "-q", "--threads", "1"]) == 0
    assert torch.get_num_threads() == before  # given back once the study is done
    environment = json.loads((out / "summary.json").read_text())["environment"]
    assert environment == {
        "torch": torch.__version__,
        "threads": 1,
        "device": "cpu",
        "executor": {"name": "local", "threads": 1},
    }
    with pytest.raises(SystemExit):
        main(["run", "--preset", "smoke", "--threads", "0"])
