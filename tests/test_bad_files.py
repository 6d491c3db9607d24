"""Every file kdscope reads back is loaded without running code, and checked: a damaged run file
is named in one line and rebuilt (the run retrains from scratch, the cache is recomputed) or
refused with the command that fixes it; new files get the user's umask; orphaned temporary
files are removed when a run starts."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from kdscope import io, load_preset, parse_study, run_study
from kdscope.analyses.knowledge_points.cache import _digest, cache_path
from kdscope.cli import main
from kdscope.datasets import DataSplits
from kdscope.errors import KdscopeError
from kdscope.trainer import RunPlan, load_checkpoint, read_metrics, train_run

GARBAGE = b"\x89kdscope\x00\xff not what kdscope wrote " * 16
KD0 = Path("models") / "kd" / "seed0"  # the run every test damages
#: what every run of a study rewrites: its summary, its report and where its time went
REWRITTEN = {"summary.json", "report.html", "timings.json"}
RETRAIN = "retraining kd seed 0 from scratch"
RECOMPUTE = "recomputing its entropy maps"


class Planted:
    """A pickled instance runs ``open(marker, "w")`` when unpickled: the code a planted file
    would run. Its marker file existing means the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@dataclass(frozen=True)
class Trained:
    """A finished study, its file, and a copy of its ``kd`` seed 0 run killed after epoch 1."""

    out: Path
    yaml: Path
    partial: Path
    plan: RunPlan
    data: DataSplits  # the data the run trained on
    teacher: nn.Module
    num_classes: int


@pytest.fixture(scope="module", autouse=True)
def _no_figure_drawing() -> Iterator[None]:
    """The report's figures are not what these tests check, and drawing them is most of a
    finished study's run time: figures are saved as nothing."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", lambda *args, **kwargs: None)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    data = load_preset("smoke").model_dump(mode="json")
    data["students"] = [{"method": "kd"}]
    data["analyses"] = [
        {"name": "accuracy"},
        {
            "name": "knowledge_points",
            "candidates": 4,
            "target": 2,
            "layers": ["conv"],
            "include_teacher": False,
        },
    ]
    cfg = parse_study(data)
    root = tmp_path_factory.mktemp("bad_files")
    yaml = root / "study.yaml"
    yaml.write_text(cfg.to_yaml(), encoding="utf-8")
    study = run_study(cfg, root / "study", quiet=True)
    plan = study.groups["kd"].runs[0].plan
    steps = {"n": 0}

    def kill_after_first_epoch(n: int) -> None:  # 192 examples, batches of 32: 6 steps an epoch
        steps["n"] += n
        if steps["n"] > 6:
            raise KeyboardInterrupt

    partial = root / "partial"
    with pytest.raises(KeyboardInterrupt):
        train_run(
            plan,
            study.student_data,
            partial,
            study.teacher_model,
            cfg.cache_teacher,
            kill_after_first_epoch,
        )
    assert (partial / "state.pt").exists() and not (partial / "result.json").exists()
    return Trained(
        root / "study",
        yaml,
        partial,
        plan,
        study.student_data,
        study.teacher_model,
        study.data.num_classes,
    )


# -- helpers ------------------------------------------------------------------------------------


def _copy(trained: Trained, tmp_path: Path) -> Path:
    """A copy of the finished study for one test to damage."""
    out = tmp_path / "study"
    shutil.copytree(trained.out, out)
    return out


def _incomplete(trained: Trained, out: Path) -> Path:
    """Make the ``kd`` seed 0 run of ``out`` the run killed after its first epoch."""
    run = out / KD0
    shutil.rmtree(run)
    shutil.copytree(trained.partial, run)
    return run


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _changed(before: dict[str, str], folder: Path) -> set[str]:
    after = _digests(folder)
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _run(trained: Trained, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run the study in ``out`` from the command line: exit code and stderr lines."""
    capsys.readouterr()
    code = main(["run", str(trained.yaml), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err.strip().splitlines()


def _one_line(lines: list[str], start: str, *fragments: str) -> None:
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines
    for fragment in fragments:
        assert fragment in lines[0], lines


def _message(error: pytest.ExceptionInfo[KdscopeError], path: Path) -> str:
    text = str(error.value)
    assert "\n" not in text and str(path) in text, text
    return text


def _result(out: Path) -> dict[str, Any]:
    return json.loads((out / KD0 / "result.json").read_text())


def _rebuilt(
    trained: Trained, out: Path, before: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The run is whole again, with its original result (the trainer now finds every file of
    it sound, without a word), and nothing changed outside it but the summary and the report."""
    original = json.loads((trained.out / KD0 / "result.json").read_text())
    capsys.readouterr()
    assert train_run(trained.plan, trained.data, out / KD0, trained.teacher) == original
    assert capsys.readouterr().err == ""
    assert not (out / KD0 / "state.pt").exists()
    outside = {k for k in _changed(before, out) if not k.startswith(f"{KD0}/")}
    assert outside <= REWRITTEN
    assert json.loads((out / "summary.json").read_text()) == json.loads(
        (trained.out / "summary.json").read_text()
    )


def _warned_and_rebuilt(
    trained: Trained,
    out: Path,
    capsys: pytest.CaptureFixture[str],
    path: Path,
    *fragments: str,
) -> None:
    """Run the study in ``out`` (whose file ``path`` was damaged): exit 0, one warning line
    naming ``path`` and ``fragments``, then the run is whole again (:func:`_rebuilt`)."""
    before = _digests(out)
    code, lines = _run(trained, out, capsys)
    assert code == 0
    _one_line(lines, "kdscope: warning: ", str(path), *fragments)
    _rebuilt(trained, out, before, capsys)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": GARBAGE}[how])


# -- finding 1: no pickle runs ------------------------------------------------------------------


def test_planted_pickle_would_run_if_unpickled(tmp_path: Path) -> None:
    """The control: the planted object runs its code under a plain unpickler."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Planted(marker)))
    assert marker.exists()


def test_load_torch_refuses_a_pickle_without_running_it(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "epoch_002.pt"
    torch.save({"conv.weight": Planted(marker)}, path)
    with pytest.raises(KdscopeError) as error:
        io.load_torch(path)
    assert "not a torch file of tensors and plain data" in _message(error, path)
    assert not marker.exists()


def test_planted_pickle_in_a_checkpoint_never_runs(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, marker = _copy(trained, tmp_path), tmp_path / "ran"
    path = out / KD0 / "checkpoints" / "epoch_002.pt"
    torch.save({"conv.0.weight": Planted(marker)}, path)
    before = _digests(out)
    code, lines = _run(trained, out, capsys)
    assert code == 0
    _one_line(lines, "kdscope: warning: ", str(path), "not a torch file", RETRAIN)
    assert not marker.exists()
    _rebuilt(trained, out, before, capsys)


def test_planted_pickle_in_state_pt_never_runs(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, marker = _copy(trained, tmp_path), tmp_path / "ran"
    path = _incomplete(trained, out) / "state.pt"
    path.write_bytes(pickle.dumps({"plan": Planted(marker)}))
    before = _digests(out)
    code, lines = _run(trained, out, capsys)
    assert code == 0
    _one_line(lines, "kdscope: warning: ", str(path), RETRAIN)
    assert not marker.exists()
    _rebuilt(trained, out, before, capsys)


# -- finding 4: file modes ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["022", "077", "002"])
def test_new_files_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    writers = {
        "a.txt": lambda p: io.write_text(p, "x"),
        "a.json": lambda p: io.write_json(p, {}),
        "a.csv": lambda p: io.write_csv(p, [{"a": 1}]),
        "a.pt": lambda p: io.save_torch(p, {}),
        "a.npz": lambda p: io.save_npz(p, a=np.zeros(1)),
    }
    previous = os.umask(umask)
    try:
        for name, write in writers.items():
            write(tmp_path / name)
    finally:
        os.umask(previous)
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in writers}
    assert modes == dict.fromkeys(writers, 0o666 & ~umask)


def test_report_is_shareable_under_the_users_umask(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    previous = os.umask(0o027)
    try:
        code, lines = _run(trained, out, capsys)
    finally:
        os.umask(previous)
    assert (code, lines) == (0, [])
    for name in REWRITTEN:
        assert (out / name).stat().st_mode & 0o777 == 0o640


# -- finding 7: metrics.csv ---------------------------------------------------------------------


def _cut_metrics(path: Path, how: str) -> None:
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    short = "".join(lines[:-1]) + lines[-1].rsplit(",", 1)[0] + "\r\n"
    cut = {"cut mid-row": text[:-9], "a field short": short, "header only": lines[0], "empty": ""}
    path.write_text(cut[how])


@pytest.mark.parametrize("how", ["cut mid-row", "a field short", "header only", "empty"])
def test_read_metrics_names_a_damaged_file_in_one_line(
    trained: Trained, tmp_path: Path, how: str
) -> None:
    path = tmp_path / "metrics.csv"
    shutil.copy(trained.out / KD0 / "metrics.csv", path)
    _cut_metrics(path, how)
    with pytest.raises(KdscopeError) as error:
        read_metrics(path, trained.plan.train.epochs)
    assert "delete it and run the same command again" in _message(error, path)


@pytest.mark.parametrize("how", ["cut mid-row", "header only"])
def test_damaged_metrics_csv_retrains_the_run(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _copy(trained, tmp_path)
    path = out / KD0 / "metrics.csv"
    _cut_metrics(path, how)
    _warned_and_rebuilt(trained, out, capsys, path, RETRAIN)
    assert len(read_metrics(path, trained.plan.train.epochs)) == trained.plan.train.epochs


# -- finding 8: knowledge-point cache ------------------------------------------------------------


def _tamper(path: Path, how: str, marker: Path) -> None:
    """Change a cached ``.npz`` while keeping its fingerprint (and, where said, a digest
    recomputed to match the change)."""
    if how in ("truncated", "garbage", "empty"):
        _damage(path, how)
        return
    arrays = io.load_npz(path)
    if how == "values changed":
        arrays["entropy"] = arrays["entropy"] + 1
    elif how == "shape changed, digest forged":
        arrays["entropy"] = arrays["entropy"][..., :10]
    elif how == "nan entropy, digest forged":
        arrays["entropy"][0, 0, 0] = np.nan
    elif how == "pickle inside":
        arrays["info"] = np.array([Planted(marker)], dtype=object)
    if "forged" in how:
        arrays["digest"] = np.array(_digest(arrays))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "how",
    [
        "values changed",
        "shape changed, digest forged",
        "nan entropy, digest forged",
        "pickle inside",
        "truncated",
        "garbage",
        "empty",
    ],
)
def test_damaged_knowledge_point_cache_is_recomputed(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out, marker = _copy(trained, tmp_path), tmp_path / "ran"
    path = cache_path(out, "kd", 0, "conv")
    original = io.load_npz(path)
    _tamper(path, how, marker)
    before = _digests(out)
    code, lines = _run(trained, out, capsys)
    assert code == 0
    _one_line(lines, "kdscope: warning: ", str(path), RECOMPUTE)
    assert not marker.exists()
    recomputed = io.load_npz(path)
    assert recomputed.keys() == original.keys()
    for key, array in original.items():
        assert np.array_equal(recomputed[key], array, equal_nan=array.dtype.kind == "f"), key
    assert _changed(before, out) <= {str(path.relative_to(out)), *REWRITTEN}
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((trained.out / "summary.json").read_text())


def test_cache_of_an_older_kdscope_is_recomputed_silently(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    path = cache_path(out, "kd", 0, "conv")
    arrays = io.load_npz(path)
    del arrays["digest"]
    np.savez(path, **arrays)
    assert _run(trained, out, capsys) == (0, [])
    assert "digest" in io.load_npz(path)


# -- finding 11: damaged run files ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "another model's weights"])
def test_damaged_checkpoint_retrains_the_run(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _copy(trained, tmp_path)
    path = out / KD0 / "checkpoints" / "epoch_001.pt"
    if how == "another model's weights":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    else:
        _damage(path, how)
    _warned_and_rebuilt(trained, out, capsys, path, RETRAIN)


def test_load_checkpoint_refuses_a_damaged_file_with_the_fix(
    trained: Trained, tmp_path: Path
) -> None:
    path = tmp_path / "epoch_002.pt"
    path.write_bytes(GARBAGE)
    with pytest.raises(KdscopeError) as error:
        load_checkpoint(trained.plan, trained.num_classes, path)
    assert "delete it and run the same command again" in _message(error, path)


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage"])
def test_damaged_state_pt_retrains_the_run_from_scratch(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _copy(trained, tmp_path)
    path = _incomplete(trained, out) / "state.pt"
    _damage(path, how)
    _warned_and_rebuilt(trained, out, capsys, path, RETRAIN)


def test_intact_state_pt_resumes_without_a_warning(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control of the state.pt tests: the run killed after epoch 1 resumes to the same
    result."""
    out = _copy(trained, tmp_path)
    _incomplete(trained, out)
    before = _digests(out)
    assert _run(trained, out, capsys) == (0, [])
    _rebuilt(trained, out, before, capsys)


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "a list", "no accuracies"])
def test_damaged_result_json_retrains_the_run(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _copy(trained, tmp_path)
    path = out / KD0 / "result.json"
    if how == "no accuracies":
        path.write_text(json.dumps({**_result(out), "test_acc": None}))
    elif how == "a list":
        path.write_text("[1, 2]")
    else:
        _damage(path, how)
    _warned_and_rebuilt(trained, out, capsys, path, RETRAIN)


def test_train_run_rebuilds_a_damaged_result_json(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trainer alone, without the study's checks around it: a result.json cut short makes
    the run retrain from scratch, to the same result."""
    run = tmp_path / "kd"
    shutil.copytree(trained.out / KD0, run)
    path = run / "result.json"
    _damage(path, "truncated")
    capsys.readouterr()
    result = train_run(trained.plan, trained.data, run, trained.teacher)
    _one_line(
        capsys.readouterr().err.strip().splitlines(), "kdscope: warning: ", str(path), RETRAIN
    )
    assert result == json.loads((trained.out / KD0 / "result.json").read_text())
    assert json.loads(path.read_text()) == result


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "series cut"])
def test_damaged_trajectory_json_retrains_the_run(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    out = _copy(trained, tmp_path)
    path = out / KD0 / "trajectory.json"
    if how == "series cut":
        traj = json.loads(path.read_text())
        traj["layers"]["conv"]["cumulative_distance"] = [0.0]
        path.write_text(json.dumps(traj))
    else:
        _damage(path, how)
    _warned_and_rebuilt(trained, out, capsys, path, RETRAIN)


def test_garbage_npz_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "conv.npz"
    path.write_bytes(GARBAGE)
    with pytest.raises(KdscopeError) as error:
        io.load_npz(path)
    assert "not an .npz file of plain arrays" in _message(error, path)


# -- finding 12: a crafted resume state -------------------------------------------------------


def _edit_state(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the resume state at ``path`` as ``edit`` changes it (a crafted state)."""
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


#: crafted resume states of a run killed after epoch 1 of 2: the edit, and why it is refused
CRAFTED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "epoch past the end": (lambda s: s.update(epoch=3), "its epoch 3 is outside 1..2"),
    "done after 1 of 2 epochs": (
        lambda s: s.update(epoch=2),
        "its metrics are not one row per epoch 1..2",
    ),
    "epoch 0": (lambda s: s.update(epoch=0), "its epoch 0 is outside 1..2"),
    "trajectory log cut": (
        lambda s: s["trajectory"]["per_epoch"].update(conv=[]),
        "its trajectory log does not cover epochs 1..1",
    ),
    "momentum of another shape": (
        lambda s: s["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(1)),
        "its optimiser buffers do not fit the run's parameters",
    ),
}


@pytest.mark.parametrize("how", list(CRAFTED))
def test_crafted_state_never_finishes_a_run_early(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    edit, reason = CRAFTED[how]
    out = _copy(trained, tmp_path)
    path = _incomplete(trained, out) / "state.pt"
    _edit_state(path, edit)
    _warned_and_rebuilt(trained, out, capsys, path, reason, RETRAIN)
    assert len(read_metrics(out / KD0 / "metrics.csv", 2)) == 2  # trained to the end


def test_state_of_other_settings_is_refused_and_nothing_changes(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    run = _incomplete(trained, out)
    _edit_state(run / "state.pt", lambda state: state["plan"].update(seed=99))
    before = _digests(out)
    code, lines = _run(trained, out, capsys)
    assert code == 2
    _one_line(
        lines, "kdscope: error: ", str(run), "holds an interrupted run trained with other settings"
    )
    assert _changed(before, out) == set()


# -- finding 13: orphaned temporary files -------------------------------------------------------


def test_orphan_tmp_files_are_removed_when_a_run_starts(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(trained, tmp_path)
    run = out / KD0
    orphans = [run / ".metrics.csv.k3x9_a2b.tmp", run / "checkpoints" / ".epoch_001.pt.0f3a.tmp"]
    kept = [run / ".notes.tmp", run / "keep.tmp", run / ".metrics.csv.tmp.bak"]
    for p in orphans + kept:
        p.write_bytes(b"half-written")
    before = _digests(out)
    assert _run(trained, out, capsys) == (0, [])
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in kept)
    removed = {str(p.relative_to(out)) for p in orphans}
    assert removed <= _changed(before, out) <= removed | REWRITTEN


def test_a_failed_write_leaves_no_tmp_file(tmp_path: Path) -> None:
    def fail(_f: Any) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io._atomic_write(tmp_path / "a.txt", fail, "w")
    assert list(tmp_path.iterdir()) == []
    assert io.clean_orphans(tmp_path) == []


def test_json_files_are_strict_json(tmp_path: Path) -> None:
    """An undefined number is written as null, never as the bare NaN or Infinity that strict
    readers (jq, JSON.parse) reject."""
    path = tmp_path / "a.json"
    io.write_json(path, {"mean": float("nan"), "ci95": (float("-inf"), 0.5), "n": 3, "ok": True})

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "mean": None,
        "ci95": [None, 0.5],
        "n": 3,
        "ok": True,
    }


def test_finished_run_with_an_undefined_loss_is_reused(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A diverged run's loss is NaN, written as null: the run is finished, not damaged, and
    reads back as NaN; its summary stays strict JSON."""
    out = _copy(trained, tmp_path)
    path = out / KD0 / "result.json"
    path.write_text(json.dumps({**_result(out), "test_loss": None}))
    capsys.readouterr()
    result = train_run(trained.plan, trained.data, out / KD0, trained.teacher)
    assert capsys.readouterr().err == ""
    assert np.isnan(result["test_loss"])
    assert result["test_acc"] == _result(trained.out)["test_acc"]
    assert _run(trained, out, capsys) == (0, [])
    assert "NaN" not in (out / "summary.json").read_text()
