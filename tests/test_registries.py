"""Contract tests parametrised over every registry (datasets, analyses, presets, methods), so a
newly registered entry is tested as soon as it is registered (timm-style). Models are covered by
``test_hooks_and_models.test_every_model_classifies_and_exposes_its_layers`` and the methods'
training step by ``test_methods.test_every_method_trains_the_student``; this file adds the rest."""

from __future__ import annotations

import inspect
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from file_fixtures import write_cub, write_voc

from kdscope import parse_study
from kdscope.config import load_preset, preset_names
from kdscope.datasets import DATASETS, DataSplits, TensorDataset, build, traits
from kdscope.errors import ConfigError, KdscopeError
from kdscope.methods import ANALYSIS_ROLES, METHODS
from kdscope.registry import ANALYSES

# ----------------------------------------------------------------------------------- datasets

# the smallest arguments each generated dataset allows; an entry missing here is built with its
# defaults, its split sizes cut to 16 / 8 (so a new dataset is tested without an entry)
TINY: dict[str, dict[str, Any]] = {
    "hierarchy": {"n_super": 2, "n_sub": 2, "dim": 4, "n_train": 4, "n_test": 8},
    "points": {"n_train": 8, "n_test": 8, "num_points": 16, "num_classes": 2},
    "qa": {"n_train": 8, "n_test": 8, "context_length": 24, "facts": (2, 2), "distractors": 0},
    "sentiment": {"n_train": 8, "n_test": 8},
    "shapes": {"n_train": 8, "n_test": 8, "size": 16, "num_classes": 2, "distractors": 0},
}

OFF_TETRA = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"


def _modelnet40(root: Path) -> dict[str, Any]:
    for name in ("box", "pyramid"):
        for split in ("train", "test"):
            (root / name / split).mkdir(parents=True)
            for i in range(2):
                (root / name / split / f"{name}_{i:04d}.off").write_text(OFF_TETRA)
    return {"root": str(root), "format": "off", "num_points": 16}


def _sst2(root: Path) -> dict[str, Any]:
    root.mkdir()
    (root / "train.tsv").write_text(
        "sentence\tlabel\na charming and moving film \t1\nthe plot is dull \t0\n"
    )
    (root / "dev.tsv").write_text("sentence\tlabel\na dull film \t0\ngood acting \t1\n")
    return {"root": str(root), "max_length": 8}


def _squad(root: Path) -> dict[str, Any]:
    root.mkdir()
    context = "The Louvre is a museum in Paris ."

    def write(name: str, question: str, answer: str) -> None:
        qa = {
            "id": question,
            "question": question,
            "answers": [{"text": answer, "answer_start": context.index(answer)}],
        }
        article = {"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}
        (root / name).write_text(json.dumps({"version": "1.1", "data": [article]}))

    write("train-v1.1.json", "What is the Louvre?", "a museum")
    write("dev-v1.1.json", "Where is the Louvre?", "Paris")
    return {"root": str(root), "question_length": 6, "context_length": 12}


def _image_folder(root: Path) -> dict[str, Any]:
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            folder = root / split / f"class{c}"
            masks = root / "masks" / split / f"class{c}"
            folder.mkdir(parents=True)
            masks.mkdir(parents=True)
            Image.new("RGB", (6, 6), colour).save(folder / "a.png")
            Image.new("L", (6, 6), 255).save(masks / "a.png")
    return {"root": str(root), "size": 4}


def _cifar(root: Path) -> dict[str, Any]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names}, f, protocol=2)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = np.full((2, 3072), 40 * i, dtype=np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": [0, 1]}, f, protocol=2)
    return {"root": str(root)}


def _npz(root: Path) -> dict[str, Any]:
    root.mkdir(parents=True)
    x = np.arange(6 * 3 * 4 * 4, dtype=np.uint8).reshape(6, 3, 4, 4)
    np.savez(root / "d.npz", x=x, y=np.array([0, 1, 0, 1, 0, 1]), foreground=x[:, 0] > 50)
    return {"path": str(root / "d.npz"), "test_fraction": 0.5}


# loaders of user files, fed tiny files written here (args: a folder that does not exist yet)
FILES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "cifar": _cifar,
    "cub200": lambda root: {"root": str(write_cub(root)), "size": 8},
    "image_folder": _image_folder,
    "npz": _npz,
    "voc": lambda root: {"root": str(write_voc(root)), "size": 8},
    "modelnet40": _modelnet40,
    "sst2": _sst2,
    "squad": _squad,
}


def _arguments(name: str, tmp_path: Path) -> dict[str, Any]:
    """Tiny arguments for dataset ``name``; skips one that needs files this test cannot write."""
    if name in FILES:
        return FILES[name](tmp_path / name)
    if name in TINY:
        return dict(TINY[name])
    params = inspect.signature(DATASETS.get(name)).parameters
    required = [p for p, v in params.items() if v.default is inspect.Parameter.empty]
    if required:
        pytest.skip(
            f"dataset {name!r} needs {required} (user files?); add a writer to FILES in "
            "tests/test_registries.py"
        )
    sizes = {"n_train": 16, "n_test": 8}
    return {k: v for k, v in sizes.items() if k in params}


def _equal(a: TensorDataset, b: TensorDataset) -> bool:
    same = (
        torch.equal(a.inputs, b.inputs)
        and torch.equal(a.labels, b.labels)
        and torch.equal(a.foreground, b.foreground)
        and a.tags.keys() == b.tags.keys()
    )
    return same and all(torch.equal(a.tags[k], b.tags[k]) for k in a.tags)


def _check_split(split: TensorDataset, num_classes: int, modality: str | None) -> None:
    assert isinstance(split, TensorDataset)
    n = len(split)
    assert n > 0
    assert split.num_classes == num_classes
    assert split.labels.dtype == torch.int64 and split.labels.shape == (n,)
    assert int(split.labels.min()) >= 0 and int(split.labels.max()) < num_classes
    if split.inputs.is_floating_point():
        assert torch.isfinite(split.inputs).all()
    assert split.inputs.shape[0] == n
    assert split.foreground.dtype == torch.bool and split.foreground.shape[0] == n
    if modality is not None:
        assert split.modality == modality, f"declared {modality!r}, inputs are {split.modality!r}"
    if split.modality == "image":  # floats in [0, 1], or uint8 read from files (x / 255)
        assert split.inputs.dim() == 4
        assert split.inputs.is_floating_point() or split.inputs.dtype == torch.uint8
        assert split.foreground.shape == (n, *split.inputs.shape[2:])
        x = split.inputs_at()
        assert x.dtype == torch.float32 or x.is_floating_point()
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert split.channels == split.inputs.shape[1]
    elif split.modality == "points":
        assert split.inputs.dim() == 3 and split.inputs.is_floating_point()
        assert split.foreground.shape == (n, split.inputs.shape[1])
    elif split.modality == "text":
        assert split.inputs.dtype == torch.int64 and split.inputs.dim() == 2
        assert split.foreground.shape == split.inputs.shape
        assert split.vocab and int(split.inputs.min()) >= 0
        assert int(split.inputs.max()) < len(split.vocab)
    elif split.modality == "vector":
        assert split.inputs.dim() == 2 and split.inputs.is_floating_point()
        assert split.foreground.shape in (split.inputs.shape, (n,))
    else:
        raise AssertionError(f"unknown modality {split.modality!r}")
    for key, tag in split.tags.items():
        assert tag.shape == (n,), key
    for key, info in split.class_info.items():
        assert info.shape[0] == num_classes, key


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_follows_the_contract(name: str, tmp_path: Path) -> None:
    args = _arguments(name, tmp_path)
    d = build(name, **args)
    assert isinstance(d, DataSplits)
    assert d.num_classes >= 2
    modality = traits(name).modality
    assert modality in ("image", "points", "vector", "text"), f"{name}: modality not declared"
    for split in (d.train, d.test):
        _check_split(split, d.num_classes, modality)
    assert d.test.num_classes == d.train.num_classes
    assert d.test.inputs.shape[1:] == d.train.inputs.shape[1:]
    assert d.test.vocab == d.train.vocab


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_is_seeded(name: str, tmp_path: Path) -> None:
    args = _arguments(name, tmp_path)
    takes_seed = "seed" in inspect.signature(DATASETS.get(name)).parameters
    seed = {"seed": 3} if takes_seed else {}
    a, b = build(name, **args, **seed), build(name, **args, **seed)
    assert _equal(a.train, b.train) and _equal(a.test, b.test)
    if not takes_seed or name in FILES:
        return  # a file loader's tiny files may leave nothing for the seed to change
    c = build(name, **args, seed=4)
    assert not (_equal(a.train, c.train) and _equal(a.test, c.test))


def test_every_generated_dataset_has_tiny_arguments() -> None:
    """A new generated dataset gets a TINY entry (else it is built with default sizes)."""
    generated = [n for n in DATASETS.names() if n not in FILES]
    assert [n for n in generated if n not in TINY] == []


# ---------------------------------------------------------------------------------- analyses


@pytest.mark.parametrize("name", ANALYSES.names())
def test_every_analysis_declares_itself(name: str) -> None:
    cls = ANALYSES.get(name)
    assert cls.name == name
    assert isinstance(cls.title, str) and cls.title.strip()
    # its own docstring: what it measures and the docs page that explains it
    doc = cls.__dict__.get("__doc__")
    assert doc and doc.strip(), f"{name}: no docstring of its own"
    pages = re.findall(r"docs/[\w.-]+\.md", doc)
    assert pages, f"{name}: its docstring names no docs page"
    root = Path(__file__).resolve().parents[1]
    assert all((root / page).is_file() for page in pages), f"{name}: {pages}"
    analysis = cls()  # the defaults construct it
    assert callable(analysis.applies_to)
    assert callable(analysis.run) and callable(analysis.report_section)
    for need in cls.requires:
        assert need in ANALYSES, f"{name} requires unknown analysis {need!r}"


@pytest.fixture(scope="module")
def smoke() -> dict[str, Any]:
    return load_preset("smoke").model_dump(mode="json")


@pytest.mark.parametrize("name", ANALYSES.names())
def test_every_analysis_rejects_unknown_parameters(name: str, smoke: dict[str, Any]) -> None:
    assert parse_study({**smoke, "analyses": [{"name": name}]}).analyses[0].name == name
    with pytest.raises((ConfigError, KdscopeError), match="no_such_param"):
        parse_study({**smoke, "analyses": [{"name": name, "no_such_param": 1}]})


# ----------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name: str) -> None:
    import yaml

    cfg = load_preset(name)
    again = parse_study(yaml.safe_load(cfg.to_yaml()), f"{name} (round trip)")
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


# ----------------------------------------------------------------------------------- methods

ROLES = ("distillation", "baseline", "control")


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_itself(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.name == name
    assert cls.role in ROLES, f"{name}: role {cls.role!r}"
    assert isinstance(cls.roles, frozenset), f"{name}: roles must be a frozenset"
    assert cls.roles <= set(ANALYSIS_ROLES), (
        f"{name}: unknown roles {cls.roles - set(ANALYSIS_ROLES)}"
    )
    assert cls.__dict__.get("__doc__"), f"{name}: no docstring of its own"
    if cls.role == "baseline":
        assert not cls.needs_teacher
    if cls.distill_weight is not None:
        assert cls.distill_weight in inspect.signature(cls.__init__).parameters


@pytest.mark.parametrize("role", list(ANALYSIS_ROLES))
def test_every_analysis_role_is_played_by_a_method(role: str) -> None:
    """Each role of the vocabulary is documented and declared by at least one registered method
    (an analysis looking for it can find a student)."""
    assert ANALYSIS_ROLES[role]
    assert any(role in METHODS.get(n).roles for n in METHODS.names()), role
