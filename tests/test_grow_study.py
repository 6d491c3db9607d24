"""Growing a study in its output folder (docs/outputs.md, 'Growing a study'): new seeds,
students or analyses reuse every finished run whose plan is unchanged and train only the new
ones; a change of the data or the teacher, or of a run's plan, is refused before anything is
written or trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from kdscope import KdscopeError, parse_study, run_study
from kdscope import runs as runs_module
from kdscope.config import StudyConfig


def _study(**changes: Any) -> StudyConfig:
    """A tiny study (one KD student, one seed, two epochs) with top-level ``changes``."""
    data: dict[str, Any] = {
        "name": "grow",
        "dataset": {"name": "shapes", "n_train": 64, "n_test": 32, "size": 16, "num_classes": 4},
        "teacher": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 2}},
        "student": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 1}},
        "students": [{"method": "kd"}],
        "seeds": [0],
        "checkpoints": [1],
        "analyses": ["accuracy"],
    }
    data.update(changes)
    return parse_study(data)


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (group, seed) of every run trained from now on (reused finished runs not counted)."""
    calls: list[tuple[str, int]] = []
    real = runs_module.train_run

    def counting(plan: Any, data: Any, run_dir: Path, *args: Any) -> dict[str, Any]:
        if not (Path(run_dir) / "result.json").exists():
            calls.append((plan.name, plan.seed))
        return real(plan, data, run_dir, *args)

    monkeypatch.setattr(runs_module, "train_run", counting)
    return calls


def _files(out: Path) -> dict[str, int]:
    """Every file under ``out`` (relative path) with its modification time."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_new_seeds_reuse_the_finished_runs(tmp_path: Path, trained: list) -> None:
    out = tmp_path / "out"
    first = _study()
    run_study(first, out, quiet=True)
    before = {k: v for k, v in _files(out).items() if k.startswith("models/")}
    old = _summary(out)
    trained.clear()

    grown = _study(seeds=[0, 1])
    run_study(grown, out, quiet=True)
    assert sorted(trained) == [("baseline", 1), ("kd", 1)]  # the teacher has one seed
    after = _files(out)
    assert {k: after[k] for k in before} == before  # the seed-0 runs are untouched
    new = _summary(out)
    for name, model in new["models"].items():
        assert model["seeds"]["0"] == old["models"][name]["seeds"]["0"]
    for name in ("baseline", "kd"):
        assert set(new["models"][name]["seeds"]) == {"0", "1"}
        assert set(new["analyses"]["accuracy"]["groups"][name]["per_seed"]) == {"0", "1"}
    assert (out / "study.yaml").read_text(encoding="utf-8") == grown.to_yaml()
    assert (out / "study.previous.yaml").read_text(encoding="utf-8") == first.to_yaml()


def test_a_new_student_trains_alone_and_a_dropped_one_is_kept(
    tmp_path: Path, trained: list, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    trained.clear()
    two = [{"method": "kd"}, {"method": "kd", "name": "kd4", "tau": 2.0}]
    run_study(_study(students=two), out, quiet=True)
    assert trained == [("kd4", 0)]
    assert set(_summary(out)["models"]) == {"teacher", "baseline", "kd", "kd4"}

    capsys.readouterr()
    kd_files = {k: v for k, v in _files(out).items() if k.startswith("models/kd/")}
    run_study(_study(students=two[1:]), out, quiet=True)  # kd dropped: kept on disk, unused
    assert trained == [("kd4", 0)]
    assert "kept, not used: models/kd/seed0" in capsys.readouterr().err
    assert {k: v for k, v in _files(out).items() if k.startswith("models/kd/")} == kd_files
    assert set(_summary(out)["models"]) == {"teacher", "baseline", "kd4"}


def test_another_dataset_is_refused_and_nothing_is_written(tmp_path: Path, trained: list) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    before, trained[:] = _files(out), []
    bigger = {"name": "shapes", "n_train": 96, "n_test": 32, "size": 16, "num_classes": 4}
    with pytest.raises(KdscopeError) as e:
        run_study(_study(dataset=bigger), out, quiet=True)
    message = str(e.value)
    assert f"{out} holds study 'grow' with another dataset (n_train: 64 → 96)" in message
    assert "choose another --out" in message and "\n" not in message
    assert _files(out) == before and trained == []


def test_another_teacher_seed_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    with pytest.raises(KdscopeError, match=r"another teacher_seed \(0 → 1\)"):
        run_study(_study(teacher_seed=1), out, quiet=True)


def test_a_changed_method_parameter_is_refused_before_training(
    tmp_path: Path, trained: list
) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    before, trained[:] = _files(out), []
    students = [{"method": "kd", "tau": 2.0}, {"method": "kd", "name": "new"}]
    with pytest.raises(KdscopeError) as e:
        run_study(_study(students=students, seeds=[0, 1]), out, quiet=True)
    message = str(e.value)
    assert "models/kd/seed0 holds a finished run trained with other settings" in message
    assert "method_params.tau was unset, is now 2.0" in message
    assert trained == [] and _files(out) == before  # study.yaml untouched too


def test_an_interrupted_run_of_another_plan_is_refused_naming_the_setting(
    tmp_path: Path, trained: list
) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    run = out / "models" / "kd" / "seed0"
    plan = json.loads((run / "result.json").read_text(encoding="utf-8"))["plan"]
    (run / "result.json").unlink()  # as if killed before it finished: only its state is left
    state = {k: None for k in ("epoch", "model", "method", "optimizer", "trajectory", "metrics")}
    torch.save({**state, "plan": plan}, run / "state.pt")
    before, trained[:] = _files(out), []
    with pytest.raises(KdscopeError) as e:
        run_study(_study(students=[{"method": "kd", "alpha": 0.5}]), out, quiet=True)
    assert f"{run} holds an interrupted run trained with other settings" in str(e.value)
    assert "method_params.alpha was unset, is now 0.5" in str(e.value)
    assert trained == [] and _files(out) == before


def test_a_damaged_study_file_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_study(_study(), out, quiet=True)
    (out / "study.yaml").write_text("students: [\n", encoding="utf-8")
    with pytest.raises(KdscopeError) as e:
        run_study(_study(seeds=[0, 1]), out, quiet=True)
    assert "cannot be read as a study" in str(e.value) and "\n" not in str(e.value)
    assert "choose another --out" in str(e.value)


def test_a_grown_study_equals_the_same_study_run_from_scratch(tmp_path: Path) -> None:
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    run_study(_study(), grown, quiet=True)
    run_study(_study(seeds=[0, 1]), grown, quiet=True)
    two = [{"method": "kd"}, {"method": "kd", "name": "kd4", "tau": 2.0}]
    final = _study(seeds=[0, 1], students=two)
    run_study(final, grown, quiet=True)
    run_study(final, fresh, quiet=True)
    assert _summary(grown) == _summary(fresh)
    assert (grown / "study.yaml").read_text() == (fresh / "study.yaml").read_text()
