"""Verdicts on a study with planted answers: a "student" that is the teacher itself must be found
to have taken the teacher's properties, and a "student" that is really another seed of the
independent baseline must not."""

from __future__ import annotations

import json
import shutil

from kdscope.config import parse_study
from kdscope.pipeline import run_study


def planted_study() -> dict:
    return {
        "name": "planted",
        "dataset": {
            "name": "shapes",
            "n_train": 900,
            "n_test": 96,
            "size": 16,
            "num_classes": 4,
            "background": "mixed",
            "seed": 0,
        },
        "student_subset": {"tag": "domain", "keep": [0]},
        "teacher": {
            "model": {"name": "cnn_small", "width": 4},
            "train": {"epochs": 8, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        },
        "student": {
            "model": {"name": "cnn_small", "width": 4},
            "train": {"epochs": 12, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
        },
        "students": [
            {"method": "kd", "name": "copy"},
            {"method": "kd", "name": "peer"},
            {"method": "soft_label", "noise_var": 0.02},
        ],
        "seeds": [0, 1, 2],
        "checkpoints": [12],
        "analyses": [
            {"name": "domains", "renderings": []},
            {"name": "decision_boundary", "triplets": 6, "resolution": 8},
            {"name": "property_claims"},
        ],
    }


def test_a_copy_of_the_teacher_transfers_and_a_baseline_seed_does_not(tmp_path) -> None:
    cfg = parse_study(planted_study())
    run_study(cfg, tmp_path, quiet=True)
    models = tmp_path / "models"
    teacher = models / "teacher" / "seed0" / "checkpoints" / "epoch_008.pt"
    for seed in (0, 1, 2):
        # "copy" is the teacher; "peer" seed k is the independent student's seed k + 1
        shutil.copy(teacher, models / "copy" / f"seed{seed}" / "checkpoints" / "epoch_012.pt")
        other = models / "baseline" / f"seed{(seed + 1) % 3}" / "checkpoints" / "epoch_012.pt"
        shutil.copy(other, models / "peer" / f"seed{seed}" / "checkpoints" / "epoch_012.pt")
    run_study(cfg, tmp_path, quiet=True)  # every run is reused; the analyses read the new files
    a = json.loads((tmp_path / "summary.json").read_text())["analyses"]

    unseen = a["domains"]["verdicts"]["unseen domains"]
    assert unseen["copy"]["verdict"] == "transfers"
    assert unseen["peer"]["verdict"] != "transfers"
    assert unseen["copy"]["gap"]["ci95"][0] > 0
    boundary = a["decision_boundary"]["verdicts"]
    assert boundary and all(v["copy"]["verdict"] == "transfers" for v in boundary.values())
    assert all(v["peer"]["verdict"] != "transfers" for v in boundary.values())
