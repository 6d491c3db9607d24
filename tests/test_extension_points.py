"""Extension points that analyses read from what is registered, never from names: the roles a
method declares (which students an analysis picks), the names a dataset gives its tags' values
(``tag_labels``) and the unit map registered for each input modality."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from kdscope.analyses.property_transfer.domains import domain_names
from kdscope.analyses.study_views import first_with_role, has_role, students_with_role
from kdscope.analyses.teacher_knowledge.difficulty import reference_group
from kdscope.analyses.teacher_knowledge.teacher_check import distillation_settings
from kdscope.config import ModelConfig, TrainConfig
from kdscope.datasets import TensorDataset, build
from kdscope.knowledge_points.diagnosis import input_units
from kdscope.knowledge_points.estimator import perturbed_tensor
from kdscope.knowledge_points.modalities import UNIT_MAPS, register_unit_map
from kdscope.knowledge_points.units import UnitMap, per_element
from kdscope.methods import METHODS, register_method
from kdscope.methods.kd import KD
from kdscope.models import build_model
from kdscope.study import Group

# ------------------------------------------------------------------------------ method roles


def _study(*groups: tuple[str, str, str]) -> Any:
    """A stand-in study of (name, group role, method) groups: the role helpers read only
    ``by_role`` and the groups' methods."""
    made = [
        Group(name, role, method, ModelConfig(name="cnn_small"), TrainConfig())  # type: ignore[arg-type]
        for name, role, method in groups
    ]
    return SimpleNamespace(
        by_role=lambda role: [g for g in made if g.role == role],
        groups={g.name: g for g in made},
    )


@pytest.fixture
def my_kd() -> Iterator[str]:
    """A user's KD variant registered under its own name (removed afterwards)."""

    @register_method("test_my_kd")
    class MyKD(KD):
        """Hinton KD under another name."""

    yield "test_my_kd"
    METHODS._entries.pop("test_my_kd")


def test_a_users_method_with_a_role_is_picked_like_the_built_in(my_kd: str) -> None:
    study = _study(("base", "baseline", "ce"), ("mine", "student", my_kd), ("ls", "student", "ce"))
    assert has_role(study.groups["mine"], "logit_kd")
    assert [g.name for g in students_with_role(study, "logit_kd")] == ["mine"]
    assert first_with_role(study, "logit_kd") == "mine"
    assert first_with_role(study, "topk_target") is None
    # teacher_check's KD student (and so its τ and λ) is the user's method
    tau, lam, group = distillation_settings(study)  # type: ignore[arg-type]
    assert group is not None and group.name == "mine"
    assert (tau, lam) == (4.0, pytest.approx(0.9 / 1.0))


def test_role_preference_order_does_not_follow_study_order() -> None:
    study = _study(
        ("base", "baseline", "ce"),
        ("ls", "student", "label_smoothing"),
        ("lsm", "student", "ls_matched"),
        ("kd", "student", "kd"),
    )
    assert first_with_role(study, "label_smoothing_matched", "label_smoothing") == "lsm"
    assert reference_group(study) == "lsm"  # type: ignore[arg-type]
    names = [
        g.name for g in students_with_role(study, "label_smoothing_matched", "label_smoothing")
    ]
    assert names == ["lsm", "ls"]
    assert reference_group(_study(("base", "baseline", "ce"), ("kd", "student", "kd"))) == "base"  # type: ignore[arg-type]


def test_an_unknown_role_is_an_error() -> None:
    study = _study(("kd", "student", "kd"))
    with pytest.raises(ValueError, match="logit_kdd"):
        first_with_role(study, "logit_kdd")


# -------------------------------------------------------------------------------- tag labels


def _tiny(tags: dict[str, Tensor], tag_labels: dict[str, dict[int, str]]) -> TensorDataset:
    n = len(next(iter(tags.values())))
    return TensorDataset(
        inputs=torch.zeros(n, 2),
        labels=torch.zeros(n, dtype=torch.int64),
        foreground=torch.ones(n, 2, dtype=torch.bool),
        num_classes=2,
        modality="vector",
        tags=tags,
        tag_labels=tag_labels,
    )


def test_tag_labels_name_the_domains_and_survive_subsetting() -> None:
    data = _tiny({"domain": torch.tensor([0, 1, 2, 1])}, {"domain": {0: "day", 1: "night"}})
    study = SimpleNamespace(data=SimpleNamespace(test=data))
    assert domain_names(study) == {0: "day", 1: "night", 2: "domain 2"}  # type: ignore[arg-type]
    part = data.subset(torch.tensor([1, 2]))
    assert part.tag_labels == data.tag_labels and part.tag_label("domain", 2) == "domain 2"
    part.tag_labels["domain"][0] = "changed"  # the subset's names are its own
    assert data.tag_labels["domain"][0] == "day"
    unnamed = _tiny({"domain": torch.tensor([0, 1])}, {})
    assert domain_names(SimpleNamespace(data=SimpleNamespace(test=unnamed))) == {  # type: ignore[arg-type]
        0: "domain 0",
        1: "domain 1",
    }
    with pytest.raises(ValueError, match="not a tag"):
        _tiny({"domain": torch.tensor([0])}, {"group": {0: "a"}})


def test_shapes_names_its_backgrounds() -> None:
    from kdscope.datasets.shapes import BACKGROUNDS

    splits = build(
        "shapes", n_train=8, n_test=8, size=16, num_classes=2, distractors=0, background="mixed"
    )
    test = splits.test
    assert test.tag_labels["domain"] == {v: k for k, v in BACKGROUNDS.items()}
    study = SimpleNamespace(data=SimpleNamespace(test=test.subset(torch.arange(len(test)))))
    names = domain_names(study)  # type: ignore[arg-type]
    assert set(names.values()) <= set(BACKGROUNDS) and names
    assert "texture" not in test.tag_labels  # only the tags the dataset has


# ------------------------------------------------------------------------- unit maps


def _image() -> tuple[nn.Module, Tensor]:
    return build_model("cnn_small", 3, width=4).eval(), torch.rand(2, 3, 32, 32)


def _points() -> tuple[nn.Module, Tensor]:
    return build_model("pointnet_small", 3).eval(), torch.rand(2, 16, 3)


def _text() -> tuple[nn.Module, Tensor]:
    return build_model("text_cnn", 3, vocab_size=20).eval(), torch.randint(3, 20, (2, 7))


#: a tiny model and two inputs of each modality with a unit map
TINY_INPUTS: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "image": _image,
    "points": _points,
    "text": _text,
}


@pytest.mark.parametrize("modality", UNIT_MAPS.names())
def test_every_unit_map_fits_its_modality(modality: str) -> None:
    assert modality in TINY_INPUTS, f"add a tiny model and input of {modality!r} to TINY_INPUTS"
    model, x = TINY_INPUTS[modality]()
    entry = UNIT_MAPS.get(modality)
    assert all(isinstance(v, str) and v for v in (entry.unit, entry.excluded, entry.scale))
    assert entry.source
    units = input_units(modality, model, x)
    assert isinstance(units, UnitMap) and units.n_units > 0
    assert units.shape == tuple(perturbed_tensor(model, x[:1]).shape[1:])
    assert units.assignment.shape[-1] == math.prod(units.shape)
    assert units.assignment.shape[0] in (1, len(x))
    assert int(units.assignment.min()) >= -1 and int(units.assignment.max()) < units.n_units


def test_a_registered_modality_is_used_by_input_units() -> None:
    calls = []

    @register_unit_map("test_vectors", unit="one feature", excluded="none", scale="1", source="t")
    def vector_units(model: nn.Module, inputs: Tensor, grid: int | None) -> UnitMap:
        calls.append(grid)
        return per_element(inputs.shape[1:])

    try:
        units = input_units("test_vectors", nn.Identity(), torch.rand(2, 5), grid=3)
        assert units.n_units == 5 and calls == [3]
        with pytest.raises(ValueError, match="already registered"):
            register_unit_map("test_vectors", unit="", excluded="", scale="", source="")(
                vector_units
            )
    finally:
        UNIT_MAPS._entries.pop("test_vectors")
    with pytest.raises(Exception, match="test_vectors modality has no unit map"):
        input_units("test_vectors", nn.Identity(), torch.rand(2, 5))
