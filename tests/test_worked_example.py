"""The worked example of docs/your_own_models_and_data.md, run as written: the user's model
file, images in a folder with masks, a teacher and students trained by a loop of the user's
own, and the study file that explains them."""

from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from kdscope.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "your_own_models_and_data.md"
BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)


def test_the_worked_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = dict(BLOCK.findall(DOC.read_text(encoding="utf-8")))
    assert set(files) == {"my_models.py", "make_data.py", "train.py", "study.yaml"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # as `python train.py` does
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    runpy.run_path("make_data.py")
    runpy.run_path("train.py")
    assert main(["run", "study.yaml", "--quiet"]) == 0
    out = tmp_path / "runs" / "my-distillation"
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert set(models) == {"teacher", "baseline", "kd"}
    assert all("given" in m for m in models.values())  # kdscope trained nothing
    assert not (out / "models" / "kd" / "seed0" / "checkpoints").exists()
    analyses = summary["analyses"]
    assert "skipped" not in analyses["localisation"]  # the masks were read
    kp = analyses["knowledge_points"]["layers"]["4"]["comparisons"]["kd"]["hypotheses"]
    assert kp["learning_speed"]["verdict"] != "not measured"  # from the logged path lengths
    assert "Given, not trained by kdscope" in (out / "report.html").read_text()
    sys.modules.pop("my_models", None)
