"""Models trained elsewhere in a study: checkpoints (with the common wrappers), TorchScript,
the user's factory; what runs on them and what is skipped with a note."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kdscope.config import load_study, parse_study
from kdscope.errors import ConfigError, KdscopeError
from kdscope.given import Given, load_given, unwrap_state_dict
from kdscope.models import build_model
from kdscope.pipeline import run_study

DATA = {"name": "shapes", "n_train": 96, "n_test": 64, "size": 16, "num_classes": 4}
NET = {"name": "cnn_small", "width": 4}


def study(**extra: Any) -> dict[str, Any]:
    """A tiny study dict; ``extra`` replaces or adds top-level keys."""
    base = {
        "name": "given",
        "dataset": DATA,
        "teacher": {"model": NET, "train": {"epochs": 2}},
        "student": {"model": NET, "train": {"epochs": 1}},
        "students": [{"method": "kd"}],
        "seeds": [0, 1],
        "checkpoints": [0, 1],
        "analyses": ["accuracy"],
    }
    return base | extra


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study trained by kdscope, whose models the tests give back as files."""
    out = tmp_path_factory.mktemp("trained")
    run_study(parse_study(study()), out, quiet=True)
    return out


def weights(trained: Path, group: str, seed: int) -> dict[str, torch.Tensor]:
    return torch.load(trained / "models" / group / f"seed{seed}" / "checkpoints" / "epoch_001.pt")


def accuracies(out: Path) -> dict[str, dict[str, float]]:
    models = json.loads((out / "summary.json").read_text())["models"]
    return {g: {s: r["test_acc"] for s, r in m["seeds"].items()} for g, m in models.items()}


def test_unwraps_the_common_checkpoint_formats(tmp_path: Path) -> None:
    model = build_model("cnn_small", 4, width=4)
    state = model.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    for obj in (state, {"state_dict": state}, {"model": prefixed}, {"epoch": 3, "net": state}):
        got = unwrap_state_dict(obj, tmp_path / "x.pt")
        assert list(got) == list(state) and all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(KdscopeError, match=r"x\.pt: holds a mapping with keys epoch, lr"):
        unwrap_state_dict({"epoch": 3, "lr": 0.1}, tmp_path / "x.pt")


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    state = build_model("cnn_small", 4, width=4).state_dict()
    state.pop("fc3.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    cfg = parse_study(study())
    with pytest.raises(KdscopeError) as e:
        load_given(Given("checkpoint", path), cfg.student.model, 4)
    message = str(e.value)
    assert str(path) in message and "1 missing (fc3.weight)" in message
    assert "1 unexpected (extra.weight)" in message and "\n" not in message
    wide = build_model("cnn_small", 4, width=6).state_dict()
    torch.save(wide, path)
    with pytest.raises(KdscopeError, match="of another shape"):
        load_given(Given("checkpoint", path), cfg.student.model, 4)


def test_given_teacher_trains_students_like_the_trained_one(trained: Path, tmp_path: Path) -> None:
    # the teacher of the trained study, saved as a training script would (wrapped, DataParallel)
    teacher = torch.load(trained / "models" / "teacher" / "seed0" / "checkpoints" / "epoch_002.pt")
    path = tmp_path / "teacher.pt"
    torch.save({"epoch": 2, "state_dict": {f"module.{k}": v for k, v in teacher.items()}}, path)
    cfg = study(teacher={"model": NET, "checkpoint": str(path)})
    out = tmp_path / "out"
    run_study(parse_study(cfg), out, quiet=True)
    got, want = accuracies(out), accuracies(trained)
    # the given teacher is the trained one: same accuracy, and the students distilled from it
    # are bit-identical to those of the study that trained it
    assert got == want
    assert json.loads((out / "models/teacher/seed0/result.json").read_text())["given"]["path"] == (
        str(path)
    )
    html = (out / "report.html").read_text()
    assert "Given, not trained by kdscope: teacher" in html
    assert "Trained by kdscope: baseline, kd" in html


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit: TorchScript is deprecated
def test_a_study_of_given_models_trains_nothing(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {}
    teacher = build_model("cnn_small", 4, **{k: v for k, v in NET.items() if k != "name"})
    teacher.load_state_dict(
        torch.load(trained / "models" / "teacher" / "seed0" / "checkpoints" / "epoch_002.pt")
    )
    files["teacher"] = tmp_path / "teacher.ts"
    example = torch.rand(2, 3, 16, 16)
    torch.jit.save(torch.jit.trace(teacher.eval(), example), files["teacher"])
    for group in ("baseline", "kd"):
        for seed in (0, 1):
            files[f"{group}{seed}"] = tmp_path / f"{group}{seed}.pt"
            torch.save(weights(trained, group, seed), files[f"{group}{seed}"])

    import kdscope.trainer

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a study of given models trained a model")

    monkeypatch.setattr(kdscope.trainer, "train_run", no_training)
    cfg = study(
        teacher={"torchscript": str(files["teacher"])},
        baseline={"checkpoint": {0: str(files["baseline0"]), 1: str(files["baseline1"])}},
        students=[
            {"method": "kd", "given": {"checkpoint": {0: str(files["kd0"]), 1: str(files["kd1"])}}}
        ],
        analyses=["accuracy", "calibration", "knowledge_points", "representation_similarity"],
        layers=["conv"],
    )
    out = tmp_path / "out"
    run_study(parse_study(cfg), out, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    assert accuracies(out) == accuracies(trained)
    # the knowledge points of the given models are measured; learning speed and stability,
    # which need a checkpoint series, are not (and say why)
    kp = summary["analyses"]["knowledge_points"]["layers"]["conv"]
    assert set(kp["networks"]) == {"baseline", "kd"}
    hypotheses = kp["comparisons"]["kd"]["hypotheses"]
    assert hypotheses["learning_speed"]["verdict"] == "not measured"
    assert hypotheses["stability"]["verdict"] == "not measured"
    assert hypotheses["quantity_quality"]["verdict"] != "not measured"
    cka = summary["analyses"]["representation_similarity"]
    assert "TorchScript teacher" in cka["skipped"]  # its layers cannot be hooked
    rho = kp["comparisons"]["kd"]["metrics"]["rho"]
    assert "one checkpoint only" in rho["not_measured"] and rho["mean"] is None
    assert (
        "calibration" in summary["analyses"] and "skipped" not in summary["analyses"]["calibration"]
    )
    html = (out / "report.html").read_text()
    assert "Given, not trained by kdscope: teacher, baseline, kd" in html
    assert "kdscope trained none of the study's models" in html
    assert "seed 0: kd0.pt, seed 1: kd1.pt" in html  # the models table names the files
    # a second run reuses the recorded evaluation; a changed file is evaluated again
    first = (out / "models/kd/seed0/result.json").read_text()
    run_study(parse_study(cfg), out, quiet=True)
    assert (out / "models/kd/seed0/result.json").read_text() == first
    torch.save(weights(trained, "kd", 1), files["kd0"])  # another model in the same file
    run_study(parse_study(cfg), out, quiet=True)
    assert accuracies(out)["kd"]["0"] == accuracies(trained)["kd"]["1"]


def test_given_files_are_checked_when_the_study_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        parse_study(study(teacher={"model": NET, "checkpoint": str(tmp_path / "none.pt")}))
    path = tmp_path / "b.pt"
    torch.save({}, path)
    with pytest.raises(ConfigError, match=r"seeds \[0\], the study has seeds \[0, 1\]"):
        parse_study(study(baseline={"checkpoint": {0: str(path)}}))
    with pytest.raises(ConfigError, match="one checkpoint file for 2 seeds"):
        parse_study(study(baseline={"checkpoint": str(path)}))
    with pytest.raises(ConfigError, match="needs a 'model'"):
        parse_study(study(teacher={"checkpoint": str(path)}))


def test_the_users_own_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes, hidden=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, hidden), nn.ReLU(),\n"
        "                         nn.Linear(hidden, num_classes))\n"
        "def not_a_model():\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = study(
        teacher={"model": {"factory": "my_nets:tiny", "hidden": 16}, "train": {"epochs": 1}},
        seeds=[0],
    )
    out = tmp_path / "out"
    run_study(parse_study(cfg), out, quiet=True)
    assert "0" in accuracies(out)["teacher"]
    with pytest.raises(ConfigError, match="unknown parameter 'depth'"):
        parse_study(study(teacher={"model": {"factory": "my_nets:tiny", "depth": 2}}))
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        parse_study(study(teacher={"model": {"factory": "no_such_module:f"}}))
    with pytest.raises(KdscopeError, match="returned int, not a torch nn.Module"):
        run_study(parse_study(study(teacher={"model": {"factory": "my_nets:not_a_model"}})), out)
    sys.modules.pop("my_nets", None)


def test_paths_in_a_study_file_are_relative_to_it(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    torch.save(build_model("cnn_small", 4, width=4).state_dict(), folder / "teacher.pt")
    (folder / "study.yaml").write_text(
        yaml.safe_dump(study(teacher={"model": NET, "checkpoint": "teacher.pt"}))
    )
    cfg = load_study(folder / "study.yaml")  # read from another working folder
    assert cfg.teacher.checkpoint == (folder / "teacher.pt").resolve()
    assert str(folder / "teacher.pt") in cfg.to_yaml()  # study.yaml records the absolute path


def test_roles_in_the_study_file_make_any_module_addressable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain_nets.py").write_text(
        "from torch import nn\n"
        "def mlp(num_classes, hidden=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, hidden), nn.ReLU(),\n"
        "                         nn.Linear(hidden, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    net = {"factory": "plain_nets:mlp", "roles": {"penultimate": "2", "logits": "3"}}
    cfg = study(
        teacher={"model": net, "train": {"epochs": 1}},
        student={"model": net, "train": {"epochs": 1}},
        students=[{"method": "crd", "n_negatives": 16}],  # contrasts penultimate features
        seeds=[0],
        layers=["1"],  # a module path of the user's network
    )
    out = tmp_path / "out"
    run_study(parse_study(cfg), out, quiet=True)
    assert set(accuracies(out)) == {"teacher", "baseline", "crd"}
    bare = {"factory": "plain_nets:mlp"}
    with pytest.raises(KdscopeError, match="unknown layer 'penultimate'"):
        run_study(parse_study(cfg | {"student": {"model": bare}}), tmp_path / "bare", quiet=True)
    bad = {"factory": "plain_nets:mlp", "roles": {"penultimate": "9"}}
    with pytest.raises(KdscopeError, match="unknown layer '9'"):
        run_study(parse_study(cfg | {"student": {"model": bad}}), tmp_path / "bad", quiet=True)
    sys.modules.pop("plain_nets", None)


def test_a_bad_given_file_writes_nothing(tmp_path: Path) -> None:
    wide = tmp_path / "wide.pt"
    torch.save(build_model("cnn_small", 4, width=6).state_dict(), wide)
    broken = tmp_path / "broken.ts"
    broken.write_bytes(b"not a zip archive")
    for teacher in ({"model": NET, "checkpoint": str(wide)}, {"torchscript": str(broken)}):
        out = tmp_path / "out"
        with pytest.raises(KdscopeError) as e:
            run_study(parse_study(study(teacher=teacher)), out, quiet=True)
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
        assert not out.exists()


def test_a_factory_beside_the_study_file_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored after the test
    (tmp_path / "beside_nets.py").write_text(
        "from torch import nn\n"
        "def mlp(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, num_classes))\n"
    )
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump(study(teacher={"model": {"factory": "beside_nets:mlp"}}))
    )
    monkeypatch.chdir(tmp_path.parent)
    assert load_study(tmp_path / "study.yaml").teacher.model.factory == "beside_nets:mlp"
    sys.modules.pop("beside_nets", None)


KP = {"name": "knowledge_points", "candidates": 8, "target": 4}


def test_a_given_checkpoint_series_measures_speed_and_stability(tmp_path: Path) -> None:
    """Given back as checkpoint series, the trained models' knowledge points are those of the
    study that trained them: identical with the path lengths their training logged, and with
    the series alone (a checkpoint per epoch) the learning speed is the per-epoch displacement."""
    trained_cfg = study(
        student={"model": NET, "train": {"epochs": 2}},
        checkpoints=[0, 1, 2],
        layers=["conv"],
        analyses=[KP],
    )
    trained = tmp_path / "trained"
    run_study(parse_study(trained_cfg), trained, quiet=True)

    def series(group: str, seed: int) -> dict[int, str]:
        folder = trained / "models" / group / f"seed{seed}"
        return {e: str(folder / "checkpoints" / f"epoch_{e:03d}.pt") for e in (0, 1, 2)}

    def given(group: str, logged: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"checkpoints": {s: series(group, s) for s in (0, 1)}}
        if logged:
            out["path_lengths"] = {
                s: str(trained / "models" / group / f"seed{s}" / "trajectory.json") for s in (0, 1)
            }
        return out

    def kp(out: Path) -> dict[str, Any]:
        return json.loads((out / "summary.json").read_text())["analyses"]["knowledge_points"]

    want = kp(trained)
    for logged in (True, False):
        teacher = trained / "models/teacher/seed0/checkpoints/epoch_002.pt"
        cfg = trained_cfg | {
            "teacher": {"model": NET, "checkpoint": str(teacher)},
            "baseline": given("baseline", logged),
            "students": [{"method": "kd", "given": given("kd", logged)}],
        }
        out = tmp_path / f"given_{logged}"
        run_study(parse_study(cfg), out, quiet=True)
        got = kp(out)
        for name in ("baseline", "kd"):
            ours = got["layers"]["conv"]["networks"][name]["metrics"]
            theirs = want["layers"]["conv"]["networks"][name]["metrics"]
            assert ours["rho"] == theirs["rho"] and ours["n_fg"] == theirs["n_fg"]
            if logged:
                assert ours["d_mean"] == theirs["d_mean"]
            else:  # one checkpoint per epoch: the displacement between them is D_epoch
                assert ours["d_mean"]["mean"] == pytest.approx(theirs["d_epoch_mean"]["mean"])
        if logged:  # the teacher is given without a series here: its own entry differs
            ours, theirs = got["layers"]["conv"], want["layers"]["conv"]
            assert ours["comparisons"] == theirs["comparisons"]
            for name in ("baseline", "kd"):
                assert ours["networks"][name] == theirs["networks"][name]
            assert got["settings"]["distance_for_verdicts"] == "per-step path length"
        else:
            assert "a lower bound" in got["settings"]["distance_for_verdicts"]
