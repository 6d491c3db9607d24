"""Teacher and student training subsets chosen by a dataset tag (domain, group)."""

from __future__ import annotations

import pytest
import torch

from kdscope.config import Subset, parse_study
from kdscope.datasets.base import DataSplits, TensorDataset
from kdscope.errors import ConfigError, KdscopeError
from kdscope.study import select_subset, teacher_data, transfer_data


def tagged(n: int = 12) -> TensorDataset:
    return TensorDataset(
        inputs=torch.arange(n, dtype=torch.float32).view(n, 1),
        labels=torch.arange(n) % 2,
        foreground=torch.zeros(n, 1, dtype=torch.bool),
        num_classes=2,
        modality="vector",
        tags={"group": torch.tensor([0, 1, 2] * (n // 3))},
    )


def test_keep_and_counts_pick_the_right_examples_in_order() -> None:
    data = tagged()
    kept = select_subset(data, Subset(tag="group", keep=(0, 2)), "student")
    assert kept.inputs.flatten().tolist() == [0, 2, 3, 5, 6, 8, 9, 11]
    counted = select_subset(data, Subset(tag="group", counts=(1, 0, 3)), "teacher")
    # the first example of group 0, none of group 1, the first three of group 2; dataset order
    assert counted.inputs.flatten().tolist() == [0, 2, 5, 8]
    assert counted.tags["group"].tolist() == [0, 2, 2, 2]


def test_subset_errors_are_one_line_and_name_the_role() -> None:
    data = tagged()
    with pytest.raises(KdscopeError, match="teacher_subset: the dataset has no tag 'domain'"):
        select_subset(data, Subset(tag="domain", keep=(0,)), "teacher")
    with pytest.raises(KdscopeError, match="student_subset: 5 examples asked of group 1"):
        select_subset(data, Subset(tag="group", counts=(0, 5)), "student")
    with pytest.raises(KdscopeError, match="keeps 0 training examples"):
        select_subset(data, Subset(tag="group", keep=(7,)), "student")
    for bad in ({"tag": "g"}, {"tag": "g", "keep": [0], "counts": [1, 1]}):
        with pytest.raises(ValueError, match="exactly one"):
            Subset(**bad)


def test_study_applies_the_subsets_before_transfer_size() -> None:
    base = {
        "teacher": {"model": "mlp"},
        "student": {"model": "mlp"},
        "students": [{"method": "kd"}],
    }
    cfg = parse_study(
        {
            **base,
            "teacher_subset": {"tag": "group", "counts": [4, 4, 0]},
            "student_subset": {"tag": "group", "keep": [2]},
            "transfer_size": 3,
        }
    )
    data = DataSplits(tagged(), tagged(6))
    assert teacher_data(cfg, data).train.tags["group"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    student = transfer_data(cfg, data)
    assert student.train.inputs.flatten().tolist() == [2, 5, 8]
    assert len(student.test) == 6 and len(teacher_data(cfg, data).test) == 6
    with pytest.raises(ConfigError, match="student_subset"):
        parse_study({**base, "student_subset": {"tag": "group"}})
