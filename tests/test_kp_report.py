"""The knowledge-point report section: tables, verdicts, settings, figures and robustness."""

from __future__ import annotations

import copy
import dataclasses
import html
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kdscope import load_preset, parse_study, run_study
from kdscope.analyses.knowledge_points.cache import cache_path
from kdscope.analyses.knowledge_points.report import render
from kdscope.study import StudyResult
from kdscope.verdicts import css


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    data = load_preset("smoke").model_dump(mode="json")
    data["analyses"] = ["accuracy", {"name": "knowledge_points", "candidates": 12, "target": 6}]
    return run_study(parse_study(data), tmp_path_factory.mktemp("kp") / "run", quiet=True)


@pytest.fixture(scope="module")
def result(study: StudyResult) -> dict[str, Any]:
    summary = json.loads((study.out_dir / "summary.json").read_text())
    return summary["analyses"]["knowledge_points"]


def _layer_chunks(section: str) -> list[str]:
    return section.split("<h3>Layer")[1:]


def test_section_shows_students_verdicts_settings_and_figures(
    study: StudyResult, result: dict[str, Any]
) -> None:
    section = render(result, study)
    assert "<html" not in section and "<body" not in section
    for g in study.by_role("student"):
        assert g.name in section
    for layer in result["layers"].values():
        for c in layer["comparisons"].values():
            if not c["for_verdicts"]:  # a mimicking student at another layer: shown, labelled
                assert html.escape(c["not_a_verdict"]) in section
                assert all("verdict" not in m for m in c["metrics"].values())
                continue
            for h in c["hypotheses"].values():
                assert f"class='{css(h['verdict'])}'" in section
                assert f">{h['verdict']}</td>" in section
            for m in c["metrics"].values():
                if "verdict" in m:  # the displacement columns are shown, never a verdict
                    assert f"class='{css(m['verdict'])}'" in section
    assert "1. more fg / fewer bg points, higher quality" in section
    settings = result["settings"]
    assert f"<th>λ</th><td>{settings['lambda']:.4g}</td>" in section
    assert "<td>fast</td>" in section and f"{settings['units_n']}" in section
    assert result["note"].split("'")[0] in section
    chunks = _layer_chunks(section)
    assert len(chunks) == len(result["layers"]) == 2
    assert chunks[0].count("<img") == 2  # curves and example maps
    assert all(chunk.count("<img") == 1 for chunk in chunks[1:])
    assert section in (study.out_dir / "report.html").read_text()


def test_missing_cache_file_replaces_the_example_figure_with_a_note(
    study: StudyResult, result: dict[str, Any], tmp_path: Path
) -> None:
    shutil.copytree(study.out_dir / "analyses", tmp_path / "analyses")
    layer = next(iter(result["layers"]))
    cache_path(tmp_path, "baseline", min(study.config.seeds), layer).unlink()
    section = render(result, dataclasses.replace(study, out_dir=tmp_path))
    chunks = _layer_chunks(section)
    assert chunks[0].count("<img") == 1
    assert "Example entropy maps omitted" in chunks[0]


def test_comparison_with_only_a_note_and_network_without_metrics(
    study: StudyResult, result: dict[str, Any]
) -> None:
    broken = copy.deepcopy(result)
    layer = next(iter(broken["layers"].values()))
    student = next(iter(layer["comparisons"]))
    note = "no input is effective for both networks"
    layer["comparisons"][student] = {
        "baseline": "baseline",
        "inputs_per_seed": {"0": 0},
        "note": note,
    }
    for key in ("metrics", "curves", "peak_distance"):
        layer["networks"][student].pop(key)
    section = render(broken, study)
    assert section.count(note) == 2  # hypotheses and differences tables
    assert student in section
    assert _layer_chunks(section)[0].count("<img") == 2
