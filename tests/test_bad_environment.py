"""A study writes only inside its output folder, and a broken environment (a folder in use, a
file where the folder should be, a read-only or full disk, a name too long, SIGTERM, no memory)
ends in one line, not a traceback, with nothing already written damaged."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import kdscope.pipeline
from kdscope import cli, io
from kdscope.cli import main
from kdscope.config import StudyConfig, load_preset, parse_study

SMOKE = load_preset("smoke")


def _tiny(**student: Any) -> StudyConfig:
    """The smoke study cut to one KD student (``student``: its settings), one seed, one epoch."""
    data = SMOKE.model_dump(mode="json")
    data.update(students=[{"method": "kd", **student}], seeds=[0], checkpoints=[0, 1])
    data["teacher"]["train"]["epochs"] = data["student"]["train"]["epochs"] = 1
    return parse_study(data)


def _renamed(name: str) -> StudyConfig:
    """The tiny study with its student renamed past validation: the runner must refuse a bad
    name even if the configuration check lets one through."""
    cfg = _tiny()
    return cfg.model_copy(update={"students": (cfg.students[0].model_copy(update={"name": name}),)})


def _run(monkeypatch: pytest.MonkeyPatch, cfg: StudyConfig, out: Path | str) -> int:
    """``kdscope run ... --out out -q`` on the study ``cfg``."""
    monkeypatch.setattr(cli, "_config", lambda args: cfg)
    return main(["run", "--preset", "smoke", "--out", str(out), "-q"])


def _one_line(capsys: pytest.CaptureFixture[str], code: int, *fragments: str) -> str:
    """The command's single stderr line, after checking exit 2, the prefix and ``fragments``."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("kdscope: error: "), lines
    for f in fragments:
        assert f in lines[0]
    return lines[0]


def _files(root: Path) -> dict[Path, int]:
    """Every file under ``root`` with its modification time."""
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdscope.pipeline import run_study

    out = tmp_path_factory.mktemp("tiny") / "run"
    run_study(_tiny(), out, quiet=True)
    return out


# --- writes outside --out -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ABSOLUTE", "../../elsewhere"])
def test_a_student_name_cannot_lead_outside_the_output_folder(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    code = _run(monkeypatch, _renamed(name), tmp_path / "out")
    _one_line(capsys, code, "outside the output folder", str(tmp_path / "out"), "elsewhere")
    assert [p.name for p in tmp_path.iterdir()] in ([], ["out"])  # nothing beside --out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_finished_run_of_another_study_is_not_adopted(
    tiny_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other, out = _tiny(tau=2.0), tmp_path / "other"
    shutil.copytree(tiny_run / "models", out / "models")  # e.g. run folders copied over
    (out / "study.yaml").write_text(other.to_yaml())
    before = _files(out)
    line = _one_line(
        capsys,
        _run(monkeypatch, other, out),
        f"{out / 'models' / 'kd' / 'seed0'} holds a finished run",
        "method_params.tau",
        f"rm -r {out / 'models' / 'kd' / 'seed0'}",
    )
    assert "teacher" not in line and "baseline" not in line  # those plans are the same
    assert _files(out) == before
    shutil.rmtree(out / "models" / "kd" / "seed0")  # what the message says to do
    assert _run(monkeypatch, other, out) == 0
    reused = out / "models" / "teacher" / "seed0" / "result.json"
    assert reused.stat().st_mtime_ns == before[reused]
    assert io.read_json(out / "models" / "kd" / "seed0" / "result.json")["plan"][
        "method_params"
    ] == {"tau": 2.0}


@pytest.mark.parametrize("command", ["run", "check-teacher"])
def test_an_empty_out_is_refused(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    _one_line(capsys, main([command, "--preset", "smoke", "--out", "", "-q"]), "--out", "empty")
    assert list(tmp_path.iterdir()) == []


# --- interruption and concurrent studies ----------------------------------------------------


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "kdscope.cli", "run", "--preset", "smoke", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = out / "models" / "kd" / "seed0" / "state.pt"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip() == "kdscope: interrupted; run the same command again to resume"
    assert not (out / "summary.json").exists(), "the run finished before it could be stopped"
    assert not (out / ".lock").exists() and not list(out.rglob("*.tmp"))
    assert main(["run", "--preset", "smoke", "--out", str(out), "-q"]) == 0
    assert (out / "summary.json").exists()


def test_a_folder_in_use_by_another_process_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:  # what a running kdscope holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"{os.getpid()}\n")
        held.flush()
        code = _run(monkeypatch, _tiny(), out)
    _one_line(capsys, code, f"{out} is in use by another kdscope process (pid {os.getpid()})")
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_the_lock_of_a_killed_process_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # left by a process killed with SIGKILL
    assert _run(monkeypatch, _tiny(), out) == 0
    assert (out / "summary.json").exists() and not (out / ".lock").exists()


def test_two_studies_started_together_on_one_folder_do_not_mix(tmp_path: Path) -> None:
    out, procs = tmp_path / "out", []
    for i, cfg in enumerate([_tiny(), _tiny(tau=2.0)]):
        study = tmp_path / f"study{i}.yaml"
        study.write_text(cfg.to_yaml())
        cmd = [sys.executable, "-m", "kdscope.cli", "run", str(study), "--out", str(out), "-q"]
        procs.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], errors
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    lines = errors[loser].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdscope: error: "), errors[loser]
    assert any(  # the loser found the folder busy, or the winner's run of its kd student
        s in lines[0] for s in ("in use by another kdscope process", "trained with other settings")
    )
    assert (out / "study.yaml").read_text() == (tmp_path / f"study{winner}.yaml").read_text()


# --- file-system and memory faults ----------------------------------------------------------


def test_out_that_is_a_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.write_text("mine\n")
    _one_line(capsys, _run(monkeypatch, _tiny(), out), f"{out} is a file")
    assert out.read_text() == "mine\n" and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("inside", [False, True])
def test_an_unwritable_out_is_one_line(
    inside: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked if inside else locked / "out"  # --out itself, or the folder to create it in
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes into read-only folders (root)")
        _one_line(capsys, _run(monkeypatch, _tiny(), out), "cannot write", "permission denied")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def _full_disk(path: Path, obj: Any) -> None:
    """torch.save onto a disk that is full: torch reports the OSError as a RuntimeError."""

    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self) -> None:
            pass

    torch.save(obj, Full())


def _raising(error: OSError) -> Callable[[Path, Any], None]:
    """A ``save_torch`` that fails with ``error``."""

    def save(path: Path, obj: Any) -> None:
        raise error

    return save


@pytest.mark.parametrize(
    ("fail", "cause"),
    [
        (_full_disk, "no space left on device"),
        (_raising(OSError(errno.EROFS, "Read-only file system")), "read-only file system"),
        (_raising(PermissionError(errno.EACCES, "Permission denied")), "permission denied"),
    ],
)
def test_a_failed_write_mid_study_is_one_line_and_damages_nothing(
    fail: Callable[[Path, Any], None],
    cause: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, real = tmp_path / "out", io.save_torch
    student = out / "models" / "kd" / "seed0"

    def save_torch(path: Path, obj: Any) -> None:  # the disk fails once the student starts
        (fail if Path(path).is_relative_to(student) else real)(path, obj)

    with monkeypatch.context() as m:
        m.setattr(io, "save_torch", lambda path, obj: save_torch(path, obj))
        _one_line(capsys, _run(m, _tiny(), out), f"cannot write {student}: {cause}")
    assert not (out / ".lock").exists() and not list(out.rglob("*.tmp"))
    before = _files(out / "models")
    assert {p.parent.parent.name for p in before if p.name == "result.json"} == {
        "teacher",
        "baseline",
    }
    assert _run(monkeypatch, _tiny(), out) == 0  # space freed: the study resumes
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished runs reused


def test_a_student_name_too_long_for_the_file_system_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(monkeypatch, _renamed("k" * 300), tmp_path / "out")
    _one_line(capsys, code, "cannot write", "file name too long")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_running_out_of_memory_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> None:
        raise MemoryError

    monkeypatch.setattr(kdscope.pipeline, "run_analyses", no_memory)
    _one_line(capsys, _run(monkeypatch, _tiny(), tmp_path / "out"), "out of memory")


def test_an_os_error_outside_the_study_folder_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreadable(args: Any) -> None:
        raise OSError(errno.EIO, "Input/output error", "my_study.yaml")

    monkeypatch.setattr(cli, "_config", unreadable)
    code = main(["run", "my_study.yaml", "--out", "x", "-q"])
    assert _one_line(capsys, code) == "kdscope: error: my_study.yaml: input/output error"


def test_programming_errors_are_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(kdscope.pipeline, "run_analyses", bug)
    with pytest.raises(ValueError, match="a bug"):
        _run(monkeypatch, _tiny(), tmp_path / "out")
