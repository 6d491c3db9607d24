"""Sanity guards: a study that cannot support verdicts says so, in summary.json and the report."""

from __future__ import annotations

import json

from kdscope.analyses.guards import MIN_EFFECTIVE_INPUTS, input_guards
from kdscope.config import parse_study
from kdscope.pipeline import run_study


def test_one_seed_and_models_at_chance_are_named(tmp_path) -> None:
    cfg = parse_study(
        {
            "name": "guarded",
            "dataset": {"name": "shapes", "n_train": 64, "n_test": 64, "size": 16},
            "teacher": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 1}},
            "student": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 1}},
            "students": [{"method": "kd"}],
            "seeds": [0],
            "checkpoints": [1],
            "analyses": ["accuracy"],
        }
    )
    run_study(cfg, tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    kinds = {(g["guard"], g["severity"]) for g in summary["guards"]}
    assert ("too few seeds", "error") in kinds
    assert any("kd has 1 seed" in g["message"] for g in summary["guards"])
    # one epoch on 64 images leaves these models at chance
    at_chance = [g for g in summary["guards"] if g["guard"] == "model at chance"]
    assert at_chance and all(g["fix"] for g in at_chance)
    # a comparison with one seed is not a verdict
    kd = summary["analyses"]["accuracy"]["student_minus_baseline"]["kd"]
    assert kd["verdict"] == "too few seeds" and kd["ci95"] == [None, None]  # undefined: null
    html = (tmp_path / "report.html").read_text()
    assert "Read this first" in html and "too few seeds" in html and "no interval (1 seed)" in html


def test_few_effective_inputs() -> None:
    results = {
        "knowledge_points": {
            "layers": {
                "conv": {
                    "comparisons": {
                        "kd": {"baseline": "baseline", "inputs_per_seed": {"0": 3, "1": 12}},
                        "hint": {"baseline": "baseline", "inputs_per_seed": {"0": 12, "1": 15}},
                    }
                }
            }
        }
    }
    guards = input_guards(results)
    assert len(guards) == 1 and guards[0]["guard"] == "few effective inputs"
    assert "kd vs baseline at conv" in guards[0]["message"] and "3–12" in guards[0]["message"]
    assert MIN_EFFECTIVE_INPUTS == 10
