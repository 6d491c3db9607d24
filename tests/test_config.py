"""Study files are validated into typed config; every error names the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdscope.config import load_preset, load_study, parse_study, preset_names
from kdscope.errors import ConfigError

BASE = {
    "teacher": {"model": "cnn_small"},
    "student": {"model": {"name": "cnn_small", "width": 4}},
    "students": [{"method": "kd", "tau": 2.0}],
}


def _with(**changes: object) -> dict:
    return {**BASE, **changes}


def test_minimal_study_gets_defaults() -> None:
    cfg = parse_study(BASE)
    assert cfg.dataset.name == "shapes" and cfg.seeds == (0,) and cfg.checkpoints == "auto"
    assert cfg.students[0].params == {"tau": 2.0} and cfg.student.model.params == {"width": 4}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_with(teachr={}), "my.yaml: teachr: unknown key"),
        (_with(seeds=[0, 0]), "seeds: seeds must be distinct"),
        (_with(students=[{"method": "kdd"}]), "students[0]: unknown method 'kdd'"),
        (
            _with(students=[{"method": "kd", "temperature": 3}]),
            "unknown parameter 'temperature' for method 'kd'",
        ),
        (
            _with(student={"model": {"name": "cnn_small", "depth": 3}}),
            "unknown parameter 'depth' for model 'cnn_small'",
        ),
        (
            _with(student={"model": "cnn_small", "train": {"epochs": 0}}),
            "student.train.epochs: Input should be greater than or equal to 1",
        ),
        (_with(student={"model": "cnn_small", "train": {"lr": "fast"}}), "student.train.lr"),
        (
            _with(dataset={"name": "shapes", "n_trian": 5}),
            "unknown parameter 'n_trian' for dataset 'shapes'",
        ),
        (_with(analyses=["nope"]), "unknown analysis 'nope'"),
        (_with(students=[{"method": "kd"}, {"method": "kd"}]), "student names must be unique"),
        (
            _with(students=[{"method": "kd", "name": "baseline"}]),
            "student name 'baseline' is reserved",
        ),
        (
            _with(students=[{"method": "ce", "name": "teacher"}]),
            "student name 'teacher' is reserved",
        ),
        (
            _with(students=[{"method": "kd", "train": {"epoch": 3}}]),
            "unknown training setting(s) ['epoch']",
        ),
        ([1, 2], "a study must be a YAML mapping"),
    ],
)
def test_bad_studies_are_rejected_naming_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_study(data, "my.yaml")
    assert str(e.value).startswith("my.yaml: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_study(bad)


def test_student_train_overrides_only_named_fields() -> None:
    cfg = parse_study(_with(students=[{"method": "kd", "train": {"epochs": 7}}]))
    train = cfg.student_train(cfg.students[0])
    assert train.epochs == 7 and train.lr == cfg.student.train.lr


@pytest.mark.parametrize("name", preset_names())
def test_presets_are_valid_and_round_trip(name: str) -> None:
    cfg = load_preset(name)
    assert parse_study(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_preset("nope")
