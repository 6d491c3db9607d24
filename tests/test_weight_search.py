"""The distillation-weight search (docs/study_file.md, 'Weight search'): split, choice rule, config
checks, and a tiny study whose recorded validation accuracies are recomputed by hand."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdscope.config import parse_study
from kdscope.datasets.base import TensorDataset
from kdscope.errors import ConfigError, KdscopeError
from kdscope.methods import distillation_weight
from kdscope.weight_search import choose_factor, validation_split


def labelled(labels: list[int]) -> TensorDataset:
    n = len(labels)
    return TensorDataset(
        inputs=torch.arange(n, dtype=torch.float32).view(n, 1),
        labels=torch.tensor(labels),
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        num_classes=3,
        modality="vector",
    )


def test_validation_split_is_stratified_disjoint_ordered_and_seeded() -> None:
    data = labelled([0] * 10 + [1] * 5 + [2])
    fit, val = validation_split(data, 0.2, seed=3)
    # round(0.2 * 10) = 2 of class 0, round(0.2 * 5) = 1 of class 1, none of the single class 2
    assert val.labels.tolist() == [0, 0, 1]
    ids = fit.inputs.flatten().tolist() + val.inputs.flatten().tolist()
    assert sorted(ids) == list(range(16))
    assert fit.inputs.flatten().tolist() == sorted(fit.inputs.flatten().tolist())
    again = validation_split(data, 0.2, seed=3)[1]
    assert torch.equal(again.inputs, val.inputs)
    other = [validation_split(data, 0.2, seed=s)[1].inputs.flatten().tolist() for s in range(5)]
    assert len({tuple(o) for o in other}) > 1
    # a class of two keeps one for fitting even at a large fraction
    fit, val = validation_split(labelled([0, 0, 1, 1, 1, 1]), 0.9, seed=0)
    assert fit.labels.tolist() == [0, 1] and val.labels.tolist() == [0, 1, 1, 1]
    with pytest.raises(KdscopeError, match="weight_search: validation fraction"):
        validation_split(labelled([0, 1, 2]), 0.5, seed=0)


def test_choose_factor_takes_the_best_then_the_one_nearest_1_then_the_smaller() -> None:
    assert choose_factor({0.25: 0.8, 0.5: 0.9, 1.0: 0.85, 2.0: 0.7}) == 0.5
    assert choose_factor({0.25: 0.9, 0.5: 0.8, 1.0: 0.9, 2.0: 0.9}) == 1.0
    assert choose_factor({0.25: 0.9, 0.5: 0.9, 2.0: 0.9}) == 0.5  # |log 0.5| = |log 2|
    assert choose_factor({4.0: 0.5}) == 4.0


def test_distillation_weight_reads_the_setting_or_the_default() -> None:
    assert distillation_weight("kd", {}) == ("alpha", 0.9)
    assert distillation_weight("kd", {"alpha": 0.25}) == ("alpha", 0.25)
    assert distillation_weight("hint", {}) == ("beta", 2.0)
    assert distillation_weight("crd", {"beta": 1.2}) == ("beta", 1.2)
    with pytest.raises(KdscopeError, match="'label_smoothing' has no single distillation weight"):
        distillation_weight("label_smoothing", {})


def study(**search: object) -> dict:
    return {
        "dataset": {"name": "shapes", "n_train": 160, "n_test": 48, "size": 16, "num_classes": 4},
        "teacher": {"model": {"name": "cnn_small", "width": 6}, "train": {"epochs": 2}},
        "student": {
            "model": {"name": "cnn_small", "width": 4},
            "train": {"epochs": 2, "batch_size": 32},
        },
        "students": [
            {"method": "kd"},
            {"method": "soft_label", "noise_var": 0.02},
            {"method": "label_smoothing"},
        ],
        "seeds": [0, 1],
        "checkpoints": [2],
        "weight_search": search,
    }


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"students": ["label_smoothing"]}, "has no distillation weight"),
        ({"students": ["kdd"]}, "no student is called 'kdd'"),
        ({"share": {"soft_label": "label_smoothing"}}, "has no distillation weight"),
        ({"students": ["kd", "soft_label"], "share": {"soft_label": "kd"}}, "share 'soft_label'"),
        ({"factors": []}, "factors"),
        ({"validation": 1.0}, "validation"),
    ],
)
def test_bad_searches_are_rejected(search: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study(study(**search))


def test_default_search_covers_weighted_students_not_shared_ones() -> None:
    cfg = parse_study(study(share={"soft_label": "kd"}))
    assert list(cfg.searched_students()) == ["kd"]
    assert list(parse_study(study()).searched_students()) == ["kd", "soft_label"]


def test_a_tiny_search_chooses_by_recomputed_validation_accuracy_and_resumes(tmp_path) -> None:
    from kdscope.evaluation import predict_logits
    from kdscope.pipeline import run_study
    from kdscope.seeding import derive_seed
    from kdscope.trainer import load_checkpoint

    cfg = parse_study(study(factors=[0.5, 2.0], seeds=[0, 1], share={"soft_label": "kd"}))
    result = run_study(cfg, tmp_path, quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    ws = summary["weight_search"]
    assert ws == json.loads((tmp_path / "weight_search" / "search.json").read_text())
    fit, val = validation_split(result.student_data.train, 0.2, derive_seed("weight-search"))
    assert (ws["n_fit"], ws["n_validation"]) == (len(fit), len(val)) == (128, 32)

    def val_acc(run_dir, plan) -> float:
        model = load_checkpoint(plan, 4, run_dir / "checkpoints" / "epoch_002.pt")
        return float((predict_logits(model, val).argmax(1) == val.labels).float().mean())

    from kdscope.weight_search import WeightSearchRun

    jobs = WeightSearchRun(result).jobs  # its run directories and seeds (models as trained)
    assert len(jobs) == 2 + 2 * 2  # the independent student and kd × 2 factors, 2 seeds each
    for job in jobs:
        entry = (
            ws["independent"][job.group]
            if job.factor is None
            else next(t for t in ws["students"][job.group]["tried"] if t["factor"] == job.factor)
        )
        assert math.isclose(
            entry["per_seed"][str(job.plan.seed)], val_acc(job.run_dir, job.plan), abs_tol=1e-6
        )
    kd = ws["students"]["kd"]
    assert kd["base"] == 0.9 and [t["value"] for t in kd["tried"]] == [0.45, 1.8]
    best = choose_factor({t["factor"]: t["mean"] for t in kd["tried"]})
    assert kd["factor"] == best and kd["value"] == pytest.approx(0.9 * best)
    assert kd["beats_independent"] == (
        next(t for t in kd["tried"] if t["factor"] == best)["mean"]
        > ws["independent"]["baseline"]["mean"]
    )
    assert ws["students"]["soft_label"] == {
        "weight": "alpha",
        "base": 0.9,
        "factor": best,
        "value": pytest.approx(0.9 * best),
        "shared_from": "kd",
    }
    # the students trained with the chosen weights; label smoothing was left alone
    models = summary["models"]
    assert models["kd"]["method_params"]["alpha"] == pytest.approx(0.9 * best)
    assert models["soft_label"]["method_params"]["alpha"] == pytest.approx(0.9 * best)
    assert models["label_smoothing"]["method_params"] == {}
    assert "Distillation-weight search" in (tmp_path / "report.html").read_text()

    first = (tmp_path / "summary.json").read_text()
    run_study(
        parse_study(study(factors=[0.5, 2.0], seeds=[0, 1], share={"soft_label": "kd"})),
        tmp_path,
        quiet=True,
    )
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["weight_search"] == ws and again["models"] == json.loads(first)["models"]
