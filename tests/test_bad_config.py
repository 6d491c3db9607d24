"""Every parameter of a study is checked when the study is read: a bad model, dataset, method,
analysis, per-student override, student name, preset name or study file ends in one line naming
the culprit, and nothing is written into --out (nothing trains)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib.figure import Figure

import kdscope.datasets
from kdscope.cli import main
from kdscope.config import PRESET_DIR, load_preset, load_study, parse_study
from kdscope.datasets import build
from kdscope.errors import ConfigError, KdscopeError

Study = dict[str, Any]


def _tiny() -> Study:
    """The smoke study cut to one KD student, one seed and one epoch (it would train in seconds
    if a check let a bad value through)."""
    data = load_preset("smoke").model_dump(mode="json")
    data.update(students=[{"method": "kd"}], seeds=[0], checkpoints=[0, 1], layers=[])
    data["teacher"]["train"]["epochs"] = data["student"]["train"]["epochs"] = 1
    return data


def _text(study: Study) -> str:
    """The study as a YAML file's text."""
    return yaml.safe_dump(study, sort_keys=False)


def _student(**settings: Any) -> Callable[[Study], None]:
    """A change adding ``settings`` to the study's one student."""
    return lambda s: s["students"][0].update(settings)


def _analysis(entry: Any) -> Callable[[Study], None]:
    """A change replacing the analyses by ``entry``."""
    return lambda s: s.update(analyses=[entry])


def _role_model(role: str, model: Any) -> Callable[[Study], None]:
    """A change giving the teacher or the students' recipe ``model``."""
    return lambda s: s[role].update(model=model)


def _dataset(**params: Any) -> Callable[[Study], None]:
    """A change adding ``params`` to the dataset's."""
    return lambda s: s["dataset"].update(params)


def _one_line(err: str, code: int, *fragments: str) -> str:
    """The command's only stderr line, after checking exit 2, the prefix and ``fragments``."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("kdscope: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def _nothing_written(out: Path) -> None:
    """--out was not created, or is still empty."""
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


def _refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, *fragments: str
) -> str:
    """``kdscope run study.yaml --out out`` on a file holding ``text``: one line naming the file
    and ``fragments``, exit 2 and nothing in --out."""
    path, out = tmp_path / "study.yaml", tmp_path / "out"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    code = main(["run", str(path), "--out", str(out), "-q"])
    line = _one_line(capsys.readouterr().err, code, str(path), *fragments)
    _nothing_written(out)
    return line


# --- finding 5: per-student `train` overrides are checked like any recipe ---------------------

OVERRIDES = {
    "optimizer_adamw": ({"optimizer": "adamw"}, "optimizer"),
    "schedule_linear": ({"schedule": "linear"}, "schedule"),
    "epochs_0": ({"epochs": 0}, "epochs"),
    "batch_size_0": ({"batch_size": 0}, "batch_size"),
    "lr_negative": ({"lr": -0.05}, "lr"),
    "augment_typo": ({"augment": ["fliip"]}, "augment[0]"),
    "unknown_setting": ({"epoch": 3}, "'epoch'"),
}


@pytest.mark.parametrize("case", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_bad_per_student_train_override(
    case: tuple[dict[str, Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    override, key = case
    study = _tiny()
    _student(train=override)(study)
    _refused(tmp_path, capsys, _text(study), "students[0].train", key)


def test_a_valid_override_gives_a_validated_recipe() -> None:
    study = _tiny()
    _student(train={"augment": ["flip"], "optimizer": "adam", "lr": 1})(study)
    cfg = parse_study(study)
    train = cfg.student_train(cfg.students[0])
    assert train.augment == ("flip",) and train.optimizer == "adam" and train.lr == 1.0
    assert train.batch_size == cfg.student.train.batch_size
    assert cfg.students[0].train == {"augment": ["flip"], "optimizer": "adam", "lr": 1}  # as given


# --- finding 10: method, analysis, model and dataset parameters ------------------------------

PARAMETERS = {
    "kd_tau_0": (_student(tau=0), "students[0]", "method 'kd'", "tau must be positive"),
    "kd_tau_text": (_student(tau="four"), "students[0]", "tau", "valid number"),
    "kd_tau_inf": (_student(tau=float("inf")), "students[0]", "tau", "finite"),
    "kd_alpha_negative": (_student(alpha=-1e9), "students[0]", "alpha must be >= 0"),
    "ce_unknown_parameter": (_student(method="ce", foo=1), "students[0]", "method 'ce'", "foo"),
    "hint_beta_negative": (_student(method="hint", beta=-2), "students[0]", "beta must be >= 0"),
    "attention_p_0": (_student(method="attention", p=0), "students[0]", "p must be positive"),
    "kp_candidates_text": (
        _analysis({"name": "knowledge_points", "candidates": "lots"}),
        "analyses[0]",
        "analysis 'knowledge_points'",
        "candidates",
    ),
    "kp_projections_0": (
        _analysis({"name": "knowledge_points", "projections": 0}),
        "analyses[0]",
        "projections",
    ),
    "difficulty_one_bin": (
        _analysis({"name": "difficulty", "n_bins": 1}),
        "analyses[0]",
        "analysis 'difficulty'",
        "n_bins",
    ),
    "teacher_check_zoo_text": (
        _analysis({"name": "teacher_check", "zoo": "yes"}),
        "analyses[0]",
        "zoo",
        "valid boolean",
    ),
    "adversarial_unknown_foreign_model": (
        _analysis({"name": "adversarial", "foreign": {"name": "vgg_smal"}}),
        "analyses[0]",
        "foreign",
        "unknown model 'vgg_smal'",
    ),
    "model_width_text": (
        _role_model("teacher", {"name": "cnn_small", "width": "wide"}),
        "teacher.model",
        "width",
    ),
    "model_missing_parameter": (
        _role_model("student", {"name": "test_needs_depth"}),
        "student.model",
        "needs the parameter(s) depth",
    ),
    "text_model_on_images": (
        _role_model("student", "text_cnn"),
        "student",
        "model 'text_cnn' reads token ids",
        "dataset 'shapes' holds image inputs",
    ),
    "dataset_size_text": (_dataset(size="32"), "dataset", "size", "valid integer"),
    "dataset_too_big_for_memory": (
        _dataset(n_train=10**13),
        "dataset 'shapes'",
        "10,000,000,000,128 examples",
        "more than the",
    ),
}


@pytest.fixture
def needs_depth() -> Iterator[None]:
    """A registered model with a required parameter besides ``num_classes``."""
    from torch import nn

    from kdscope.models import MODELS, register_model

    @register_model("test_needs_depth")
    def make(num_classes: int, depth: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    yield
    MODELS._entries.pop("test_needs_depth")


@pytest.mark.parametrize("case", PARAMETERS.values(), ids=PARAMETERS.keys())
def test_bad_parameter(
    case: tuple[Any, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str], needs_depth: None
) -> None:
    change, *fragments = case
    study = _tiny()
    change(study)
    _refused(tmp_path, capsys, _text(study), *fragments)


def test_bad_parameter_of_check_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _tiny()
    _student(tau=0)(study)
    path, out = tmp_path / "study.yaml", tmp_path / "out"
    path.write_text(_text(study))
    code = main(["check-teacher", str(path), "--out", str(out), "-q"])
    _one_line(capsys.readouterr().err, code, str(path), "students[0]", "tau must be positive")
    _nothing_written(out)


def test_exponent_without_dot_is_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML 1.1 (PyYAML) reads ``-1e9`` as text; a study reads it as the number it looks like,
    so the bound check, not a type error, rejects it."""
    text = _text(_tiny()).replace("- method: kd\n", "- method: kd\n  alpha: -1e9\n", 1)
    _refused(tmp_path, capsys, text, "students[0]", "alpha must be >= 0, got -1000000000.0")
    ok = _text(_tiny()).replace("- method: kd\n", "- method: kd\n  alpha: 1e-1\n", 1)
    (tmp_path / "ok.yaml").write_text(ok)
    assert load_study(tmp_path / "ok.yaml").students[0].params == {"alpha": 0.1}


def test_memory_estimate_is_compared_with_available_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smoke = load_preset("smoke").model_dump(mode="json")
    monkeypatch.setattr(kdscope.datasets.registry, "available_memory", lambda: 1_000_000)
    with pytest.raises(ConfigError, match=r"384 examples of 3\.3 KiB each need at least 1\.2 MiB"):
        parse_study(smoke, "smoke.yaml")
    params = {k: v for k, v in smoke["dataset"].items() if k != "name"}
    with pytest.raises(KdscopeError, match="dataset 'shapes': 384 examples"):
        build("shapes", **params)  # the Python API checks too, before generating


# --- finding 6 and 11: the file itself ------------------------------------------------------


def test_duplicate_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _text(_tiny()) + "seeds: [1]\n"
    first = text.splitlines().index("seeds:") + 1
    last = len(text.splitlines())
    _refused(
        tmp_path, capsys, text, f"line {last}", f"key 'seeds' given twice (first at line {first})"
    )


def test_duplicate_key_inside_a_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _text(_tiny()).replace("- method: kd\n", "- {method: kd, tau: 2, tau: 3}\n", 1)
    _refused(tmp_path, capsys, text, "key 'tau' given twice")


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = _text(_tiny()).replace(
        "- method: kd\n", "- &kd {method: kd, tau: 2}\n- {<<: *kd, tau: 3, name: kd3}\n", 1
    )
    (tmp_path / "s.yaml").write_text(text)
    assert [s.params for s in load_study(tmp_path / "s.yaml").students] == [{"tau": 2}, {"tau": 3}]


def test_file_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _text(_tiny()).replace("name: smoke", "name: sm\u00f6ke").encode("latin-1")
    _refused(tmp_path, capsys, text, "not UTF-8 text (byte 0xf6 at line 1)")


def test_control_character(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _text(_tiny()).replace("name: smoke", "name: sm\x00oke")
    _refused(tmp_path, capsys, text, "not valid YAML at line 1", "#x0")


# --- finding 2: student names are safe folder and figure-label names ---------------------------

BAD_NAMES = ["a/b", "..", ".", ".hidden", "_private", "-rf", "a b", "$x^$", "a" * 65, "a\x00b", "é"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[ascii(n) for n in BAD_NAMES])
def test_bad_student_name(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _tiny()
    _student(name=name)(study)
    _refused(tmp_path, capsys, _text(study), f"student name {name!r}", "letters, digits")


GOOD_NAMES = ["kd_alpha0.1", "x_1", "a-b.c_d", "Z9", "k" * 64]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_allowed_names_are_accepted_and_render_in_figures(name: str) -> None:
    study = _tiny()
    _student(name=name)(study)
    assert parse_study(study).students[0].label == name
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label=name)
    ax.set(title=name, xlabel=name, xticks=[0], xticklabels=[name])
    ax.legend()
    fig.suptitle(f"{name} vs baseline-{name}")
    fig.savefig(io.BytesIO(), format="png")  # mathtext would raise on '$...^$'


# --- finding 3: presets by name only -----------------------------------------------------------


def _relative_to_presets(tmp_path: Path) -> str:
    """A path from the preset folder to a valid study file under ``tmp_path`` (no suffix)."""
    (tmp_path / "elsewhere.yaml").write_text(_text(_tiny()))
    return os.path.relpath(tmp_path / "elsewhere", PRESET_DIR)


@pytest.mark.parametrize("name", ["RELATIVE", "../presets/smoke", "./smoke", "smoke.yaml", "SMOKE"])
def test_preset_is_a_name_not_a_path(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _relative_to_presets(tmp_path) if name == "RELATIVE" else name
    out = tmp_path / "out"
    code = main(["run", "--preset", name, "--out", str(out), "-q"])
    _one_line(capsys.readouterr().err, code, f"unknown preset {name!r}", "(presets: default, ")
    _nothing_written(out)


def test_show_reads_presets_by_name_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _relative_to_presets(tmp_path)
    code = main(["show", name])
    printed = capsys.readouterr()
    _one_line(printed.err, code, f"unknown preset {name!r}")
    assert printed.out == ""  # not a line of the file
    assert main(["show", "smoke"]) == 0
    assert capsys.readouterr().out == (PRESET_DIR / "smoke.yaml").read_text(encoding="utf-8")
