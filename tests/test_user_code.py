"""The user's own code from the command line: a study's ``imports:``, ``--import`` and the
``kdscope.plugins`` entry points bring in datasets and models registered outside kdscope.

Every test writes its own module (a fresh name, so Python's module cache never hides a second
import) and leaves the registries, ``sys.path`` and ``sys.modules`` as it found them.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import kdscope
from kdscope import plugins
from kdscope.cli import main
from kdscope.datasets.registry import _TRAITS, DATASETS
from kdscope.errors import ConfigError
from kdscope.models import MODELS

USER_MODULE = '''
"""A user's dataset and model, registered outside kdscope."""
import torch
from torch import nn

import kdscope


@kdscope.register_dataset("my_blobs", modality="image")
def my_blobs(n_train: int = 48, n_test: int = 24, seed: int = 0) -> kdscope.DataSplits:
    """Random 3x8x8 images in 2 classes, class 1 brighter."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> kdscope.TensorDataset:
        labels = torch.arange(n) % 2
        inputs = torch.rand(n, 3, 8, 8, generator=g) * 0.5 + 0.5 * labels.view(-1, 1, 1, 1)
        fg = torch.zeros(n, 8, 8, dtype=torch.bool)
        fg[:, 2:6, 2:6] = True
        return kdscope.TensorDataset(inputs, labels, fg, 2)

    return kdscope.DataSplits(split(n_train), split(n_test))


@kdscope.register_model("my_tiny")
def my_tiny(num_classes: int, width: int = 4) -> nn.Module:
    """A two-layer perceptron on flattened images."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 8 * 8, width), nn.ReLU(), nn.Linear(width, num_classes)
    )
'''

STUDY = """\
name: mine
{imports}dataset: {{name: my_blobs}}
teacher:
  model: {{name: my_tiny, width: 8}}
  train: {{epochs: 1, batch_size: 16}}
student:
  model: my_tiny
  train: {{epochs: 1, batch_size: 16}}
students: [{{method: kd}}]
analyses: [accuracy]
"""

_count = itertools.count()


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore sys.path, the plugins' "done once" flag, the registries and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(plugins, "_loaded", False)
    modules = set(sys.modules)
    yield
    for name in set(sys.modules) - modules:
        if name.startswith("kdscope_user_"):
            del sys.modules[name]
    DATASETS._entries.pop("my_blobs", None)
    _TRAITS.pop("my_blobs", None)
    MODELS._entries.pop("my_tiny", None)


def _module(folder: Path, source: str = USER_MODULE) -> str:
    """Write ``source`` as a fresh module in ``folder``; returns its name."""
    name = f"kdscope_user_{next(_count)}_{folder.name}".replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def _study(folder: Path, imports: list[str] | None = None) -> Path:
    """A one-epoch study of the user's dataset and model in ``folder``."""
    line = f"imports: [{', '.join(imports)}]\n" if imports else ""
    path = folder / "study.yaml"
    path.write_text(STUDY.format(imports=line), encoding="utf-8")
    return path


def _ran(out: Path) -> None:
    """The study trained and analysed the user's dataset and model."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "accuracy" in json.dumps(summary)
    assert "my_blobs" in (out / "study.yaml").read_text(encoding="utf-8")
    assert (out / "report.html").is_file()


def test_a_study_imports_the_module_beside_it(tmp_path: Path, clean: None) -> None:
    studies = tmp_path / "studies"
    name = _module(studies)
    study = _study(studies, [name])
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0
    _ran(out)
    assert f"imports:\n- {name}\n" in (out / "study.yaml").read_text(encoding="utf-8")


def test_import_option_finds_the_module_in_the_current_folder(
    tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code = tmp_path / "code"
    name = _module(code)
    monkeypatch.chdir(code)
    study = _study(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--quiet", "--import", name]) == 0
    _ran(out)
    assert "imports" not in (out / "study.yaml").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["list", "models", "my_", "--import", name]) == 0
    assert capsys.readouterr().out.startswith("my_tiny")


def test_without_the_import_the_names_are_unknown(tmp_path: Path, clean: None) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'my_blobs'"):
        kdscope.load_study(_study(tmp_path))


def _fails(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2, one stderr line, nothing written."""
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kdscope: error: ")
    assert not out.exists()
    return err.strip()


def test_a_missing_module_is_one_line(
    tmp_path: Path, clean: None, capsys: pytest.CaptureFixture
) -> None:
    study = _study(tmp_path, ["no_such_pkg_kd.sub"])
    err = _fails(tmp_path, capsys, ["run", str(study)])
    assert err.endswith(
        "study.yaml: imports: cannot import 'no_such_pkg_kd.sub': ModuleNotFoundError: "
        "No module named 'no_such_pkg_kd'"
    )
    err = _fails(tmp_path, capsys, ["run", str(_study(tmp_path)), "--import", "no_such_pkg_kd"])
    assert err.endswith(
        "--import: cannot import 'no_such_pkg_kd': ModuleNotFoundError: "
        "No module named 'no_such_pkg_kd'"
    )


def test_a_module_that_raises_is_one_line(
    tmp_path: Path, clean: None, capsys: pytest.CaptureFixture
) -> None:
    name = _module(tmp_path, "import kdscope\nraise RuntimeError('bad\\nsetting')\n")
    err = _fails(tmp_path, capsys, ["run", str(_study(tmp_path, [name]))])
    assert f"imports: module {name!r} raised RuntimeError: bad" in err
    assert f'python -c "import {name}"' in err
    inner = _module(
        tmp_path, "import no_such_dependency_kd\n"
    )  # the module is found, not its import
    err = _fails(tmp_path, capsys, ["run", str(_study(tmp_path, [inner]))])
    assert (
        f"module {inner!r} raised ModuleNotFoundError: No module named 'no_such_dependency_kd'"
        in err
    )


@pytest.mark.parametrize("bad", ["./my_models", "my-models", "1abc", "a..b", "", "a b"])
def test_module_names_are_dotted_python_names(bad: str, clean: None) -> None:
    with pytest.raises(ConfigError, match="not a Python module name"):
        plugins.import_modules([bad])
    study = {"imports": [bad], "teacher": {"model": "cnn_small"}, "student": {"model": "cnn_small"}}
    with pytest.raises(ConfigError, match="study: imports: .* not a Python module name"):
        kdscope.parse_study({**study, "students": [{"method": "kd"}]})


def test_a_file_name_is_a_missing_module_with_a_hint(clean: None) -> None:
    with pytest.raises(ConfigError, match=r"No module named 'my_models_kd' \(name the module wi"):
        plugins.import_modules(["my_models_kd.py"])


def test_parse_study_imports_from_a_dict(tmp_path: Path, clean: None) -> None:
    name = _module(tmp_path)
    raw = {
        "imports": [name],
        "dataset": {"name": "my_blobs"},
        "teacher": {"model": "my_tiny"},
        "student": {"model": "my_tiny"},
        "students": [{"method": "kd"}],
    }
    cfg = kdscope.parse_study(raw, base=tmp_path)
    assert cfg.imports == (name,) and cfg.dataset.name == "my_blobs"
    assert str(tmp_path.resolve()) == sys.path[0]
    with pytest.raises(ConfigError, match="imports: give a list"):
        kdscope.parse_study({**raw, "imports": name})


def _entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group=plugins.GROUP)


def _installed(monkeypatch: pytest.MonkeyPatch, *eps: importlib.metadata.EntryPoint) -> list[str]:
    """Make ``eps`` the installed plugins; returns the groups asked for."""
    asked: list[str] = []

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        asked.append(group)
        return list(eps) if group == plugins.GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return asked


def test_an_installed_plugin_is_imported_once(
    tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    name = _module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    asked = _installed(monkeypatch, _entry_point("mine", name))
    assert "my_tiny" not in MODELS
    assert main(["list", "models", "my_"]) == 0
    assert capsys.readouterr().out.startswith("my_tiny")
    assert name in sys.modules and asked == [plugins.GROUP]
    cfg = kdscope.load_study(_study(tmp_path))  # the study names them without imports
    assert cfg.teacher.model.name == "my_tiny"
    assert asked == [plugins.GROUP]  # looked up once per process


def test_a_broken_plugin_warns_and_kdscope_goes_on(
    tmp_path: Path, clean: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    good = _module(tmp_path)
    broken = _module(tmp_path, "raise ImportError('needs\\nfoo >= 2')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _installed(
        monkeypatch,
        _entry_point("a_broken", broken),
        _entry_point("b_missing", "kdscope_user_nowhere"),
        _entry_point("c_good", good),
    )
    assert main(["list", "models", "my_"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("my_tiny")
    lines = captured.err.splitlines()
    assert lines == [
        f"kdscope: warning: plugin 'a_broken' ({broken}) not loaded: ImportError: needs foo >= 2",
        "kdscope: warning: plugin 'b_missing' (kdscope_user_nowhere) not loaded: "
        "ModuleNotFoundError: No module named 'kdscope_user_nowhere'",
    ]
