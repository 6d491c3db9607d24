"""The analyses compute on the current device: :meth:`Run.load` puts a model there, and every
library helper that runs a model moves its inputs (and labels) to the model's device and returns
its results on the CPU.

This machine has no GPU, so a stand-in checks the plumbing: a model marked as living on a fake
device (``FAKE``) whose inputs must arrive through ``.to(FAKE)``, where every tensor computed
from them stays "on the fake device" until ``.cpu()`` brings it back, and where mixing such a
tensor with a CPU tensor (other than a scalar) or reading it into numpy raises, as CUDA does
(:class:`FakeDevice`). The numbers are computed on the CPU all the same, so each helper must also
give exactly what it gives on a plain CPU model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from kdscope import device, io
from kdscope.config import ModelConfig, TrainConfig
from kdscope.models import build_model

#: the stand-in for a GPU: a device torch accepts and computes on as the CPU
FAKE = torch.device("cpu", 1)


class OnFake(Tensor):
    """A tensor on the fake device (only :class:`FakeDevice` gives it a meaning)."""

    __torch_function__ = torch._C._disabled_torch_function_impl


def _is_fake_device(d: object) -> bool:
    if isinstance(d, torch.device):
        return d == FAKE
    if isinstance(d, str):
        try:
            return torch.device(d) == FAKE
        except RuntimeError:
            return False
    return False


def _cpu(d: object) -> object:
    return torch.device("cpu") if _is_fake_device(d) else d


class FakeDevice(TorchFunctionMode):
    """Every torch call while active: the parameters and buffers of the models in
    :meth:`place` are on ``FAKE`` (``model_device`` says so: see :func:`fake_device`), so is
    every tensor moved there (``.to(FAKE)``, a factory with ``device=FAKE``) and every result
    of a call with such an argument, until ``.cpu()`` or ``.to("cpu")``. A call mixing them with
    CPU tensors of one dimension or more, or ``.numpy()`` of one, raises as on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.models: list[nn.Module] = []  # kept alive, so that ids are not reused
        self.resident: set[int] = set()  # ids of their parameters and buffers

    def place(self, model: nn.Module) -> nn.Module:
        """``model``, now living on the fake device."""
        self.models.append(model)
        self.resident |= {id(t) for t in (*model.parameters(), *model.buffers())}
        return model

    def placed(self, model: nn.Module) -> bool:
        return any(model is m for m in self.models)

    def fake(self, t: object) -> bool:
        return isinstance(t, OnFake) or (isinstance(t, Tensor) and id(t) in self.resident)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func == Tensor.device.__get__:
            return FAKE if self.fake(args[0]) else func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
        on_fake = any(self.fake(t) for t in tensors)
        if func in (Tensor.numpy, Tensor.__array__) and on_fake:
            raise TypeError("can't convert a fake-device tensor to numpy: use Tensor.cpu()")
        if func is Tensor.cpu:
            return _plain(func(*args, **kwargs))
        if func is Tensor.to:
            target = _to_target(args, kwargs, self)
            if target is not None:
                args = tuple(_cpu(a) for a in args)
                kwargs = {k: _cpu(v) for k, v in kwargs.items()}
                out = func(*args, **kwargs)
                return _wrap(out) if target == "fake" else _plain(out)
        elif on_fake:
            plain = [t for t in tensors if not self.fake(t) and t.dim() > 0]
            if plain:
                raise RuntimeError(
                    f"{getattr(func, '__name__', func)}: expected all tensors to be on the same "
                    f"device, but found tensors on {FAKE} and cpu"
                )
        moved = _is_fake_device(kwargs.get("device"))
        if moved:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        out = func(*args, **kwargs)
        return tree_map(_wrap, out) if (on_fake or moved) else out


def _to_target(args: tuple[Any, ...], kwargs: dict[str, Any], mode: FakeDevice) -> str | None:
    """Where a ``Tensor.to`` call sends its tensor: "fake", "cpu" or None (dtype only)."""
    for a in (*args[1:], kwargs.get("device")):
        if isinstance(a, Tensor):
            return "fake" if mode.fake(a) else "cpu"
        if _is_fake_device(a):
            return "fake"
        if isinstance(a, torch.device | str) and torch.device(a).type == "cpu":
            return "cpu"
    return None


def _wrap(t: object) -> object:
    if isinstance(t, Tensor) and not isinstance(t, OnFake | nn.Parameter):
        return t.as_subclass(OnFake)
    return t


def _plain(t: Tensor) -> Tensor:
    return t.as_subclass(Tensor) if isinstance(t, OnFake) else t


@contextmanager
def fake_device(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDevice]:
    """A :class:`FakeDevice` active, with :func:`kdscope.device.model_device` naming ``FAKE``
    for the models placed on it."""
    mode = FakeDevice()
    real = device.model_device
    monkeypatch.setattr(device, "model_device", lambda m: FAKE if mode.placed(m) else real(m))
    with mode:
        yield mode


def is_cpu(t: object) -> bool:
    """Whether ``t`` is a plain tensor on the CPU (not on the fake device)."""
    return type(t) is Tensor and t.device.type == "cpu"


def watched(model: nn.Module) -> list[bool]:
    """Per forward pass of ``model``: whether its input came on the fake device."""
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(isinstance(args[0], OnFake)))
    return seen


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn_small", 4, width=4).eval()


@pytest.fixture
def images() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 16, 16, generator=gen), torch.tensor([0, 1, 2, 3, 0, 1])


def test_the_stand_in_catches_what_a_gpu_rejects(monkeypatch) -> None:
    """The fake device raises where a GPU would: an input left on the CPU, a CPU tensor mixed
    with a result, numpy of a result; and gives the CPU's numbers through ``.cpu()``."""
    model, x = tiny_cnn(), torch.rand(2, 3, 16, 16)
    with fake_device(monkeypatch) as fake:
        fake.place(model)
        with pytest.raises(RuntimeError, match="same device"):
            model(x)
        out = model(x.to(device.model_device(model)))
        assert isinstance(out, OnFake) and out.device == FAKE
        with pytest.raises(RuntimeError, match="same device"):
            _ = out.argmax(1) == torch.tensor([0, 1])
        with pytest.raises(TypeError, match="numpy"):
            out.numpy()
        with pytest.raises(TypeError, match="numpy"):
            model.fc2.weight.detach().numpy()
        back = out.cpu()
        assert is_cpu(back)
    assert torch.equal(back, model(x).detach())


def test_run_load_returns_the_model_on_the_current_device_in_eval_mode(
    tmp_path, monkeypatch
) -> None:
    """The checkpoint's weights, moved to :func:`kdscope.device.current` (here a stand-in the
    spy on ``Module.to`` sees), in eval mode."""
    from kdscope.study import Run
    from kdscope.trainer import RunPlan, cpu_state

    cnn = ModelConfig(name="cnn_small", width=4)
    plan = RunPlan("m", 0, cnn, "ce", {}, TrainConfig(epochs=2), (2,))
    model = tiny_cnn()
    (tmp_path / "checkpoints").mkdir()
    io.save_torch(tmp_path / "checkpoints" / "epoch_002.pt", cpu_state(model))
    run = Run(plan, tmp_path, 4)
    moved: list[object] = []
    real_to = nn.Module.to

    def to(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    monkeypatch.setattr(device, "_current", FAKE)  # what device.use would make current
    loaded = run.load()
    assert moved == [FAKE] and not loaded.training
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), cpu_state(model).values(), strict=True)
    )
    monkeypatch.setattr(device, "_current", torch.device("cpu"))
    assert device.model_device(run.load()) == device.current() == torch.device("cpu")


def assert_same_on_cpu(expected: object, got: object, where: str = "result") -> None:
    """``got`` has the structure and the exact values of ``expected``, every tensor in it a
    plain CPU tensor."""
    if isinstance(expected, Tensor):
        assert is_cpu(got), f"{where}: a {type(got).__name__}, not a CPU tensor"
        assert isinstance(got, Tensor) and got.dtype == expected.dtype
        assert torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), where
        for k in expected:
            assert_same_on_cpu(expected[k], got[k], f"{where}[{k!r}]")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), where
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same_on_cpu(e, g, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        np.testing.assert_array_equal(got, expected, err_msg=where)
    else:
        assert got == expected or (got != got and expected != expected), where  # NaN == NaN


def on_the_fake_device(
    monkeypatch: pytest.MonkeyPatch, models: list[nn.Module], compute: Any
) -> list[Any]:
    """``compute()`` on the CPU models, then with ``models`` on the fake device: its results
    must be the same, on the CPU, and every forward pass must have taken its input from the
    model's device. Returns the results."""
    expected = compute()
    with fake_device(monkeypatch) as fake:
        seen = [watched(fake.place(m)) for m in models]
        got = compute()
    assert all(s and all(s) for s in seen), seen  # every model ran, on inputs on its device
    assert_same_on_cpu(expected, got)
    return got


def test_attacks_and_predictions_run_on_the_model_device(monkeypatch, images) -> None:
    from kdscope.analyses.property_transfer.adversarial import model_rates, source_attacks
    from kdscope.property_transfer.adversarial import (
        calibrate_eps,
        fooled,
        fooling_rate,
        ifgsm,
        predict_labels,
    )

    x, y = images
    source, student = tiny_cnn(0), tiny_cnn(1)

    def compute() -> list[Any]:
        adv = ifgsm(source, x, y, 0.1, steps=2, batch_size=4)  # two chunks
        attacks = source_attacks(source, x, y, 0.1)
        return [
            predict_labels(source, x, batch_size=4),
            adv,
            ifgsm(source, x, 1, 0.0),  # ε = 0: a copy of the inputs
            fooled(source, x, adv),
            fooling_rate(source, x, y, 0.1, steps=2),
            calibrate_eps(source, x, y, max_iter=2, steps=2),
            list(attacks),
            model_rates(student, x, attacks),
        ]

    on_the_fake_device(monkeypatch, [source, student], compute)


def test_gradcam_activations_and_class_geometry_run_on_the_model_device(
    monkeypatch, images
) -> None:
    from kdscope.analyses.teacher_knowledge.class_geometry import head_inputs, model_geometry
    from kdscope.property_transfer.localisation import gradcam_maps
    from kdscope.property_transfer.representation_similarity import layer_activations

    x, y = images
    model = tiny_cnn()
    rho = np.full((len(y), 4), 0.25)
    sup = np.array([0, 0, 1, 1])
    refs = {"reference": np.eye(4)}

    def compute() -> list[Any]:
        return [
            gradcam_maps(model, "conv", x, y, batch_size=4),
            layer_activations(model, x, ["conv", "fc1"]),
            layer_activations(model, x, ["conv"], spatial_mean=True),
            head_inputs(model, x, batch_size=4),
            model_geometry(model, x, rho, y.numpy(), sup, refs, permutations=9),
        ]

    on_the_fake_device(monkeypatch, [model], compute)
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_invariance_pairs_and_decision_planes_run_on_the_model_device(monkeypatch, images) -> None:
    from kdscope.property_transfer.decision_boundary import plane_predictions, planes_from_triplets
    from kdscope.property_transfer.invariance import agreement, transformed_pair

    x, _ = images
    model = tiny_cnn()
    x1, x2 = transformed_pair(x, "crop", 0.5, seed=0)
    planes = planes_from_triplets(x, torch.tensor([[0, 1, 2], [3, 4, 5]]), resolution=4)
    grids = torch.stack([p.grid() for p in planes])

    def compute() -> list[Any]:
        return [
            agreement(model, x1, x2),
            plane_predictions(model, planes, batch_size=10),
            plane_predictions(model, planes[0]),
            plane_predictions(model, grids),
        ]

    on_the_fake_device(monkeypatch, [model], compute)


def test_logits_the_teacher_check_and_the_trainers_probes_run_on_the_model_device(
    monkeypatch, images
) -> None:
    """Predictions of a dataset, the teacher check, and what the trainer runs on a teacher
    loaded by the study (on the current device): the input check and a method's probes."""
    from kdscope.analyses.teacher_knowledge.teacher_check import check_teacher
    from kdscope.datasets.base import TensorDataset
    from kdscope.evaluation import accuracy_and_loss, predict_logits
    from kdscope.methods.base import probe
    from kdscope.methods.controlled_targets import teacher_probabilities
    from kdscope.trainer import check_model_io

    x, y = images
    data = TensorDataset(x, y, torch.ones(len(y), 16, 16, dtype=torch.bool), 4)
    teacher = tiny_cnn()

    def compute() -> list[Any]:
        check_model_io(teacher, x, 4, "the teacher")
        out = probe(teacher, x, ["conv"])
        return [
            predict_logits(teacher, data, batch_size=4),
            accuracy_and_loss(teacher, data, batch_size=4),
            check_teacher(teacher, data, data),
            out.logits.cpu(),  # a probe's outputs stay on the model's device
            out.features["conv"].cpu(),
            teacher_probabilities(teacher, x, 4.0, batch_size=4).cpu(),
        ]

    on_the_fake_device(monkeypatch, [teacher], compute)


def tiny_study() -> dict[str, Any]:
    """A study small enough to analyse twice in seconds, on data every property-transfer and
    teacher-knowledge analysis applies to (domains, sub-groups, textured objects)."""
    return {
        "name": "device",
        "dataset": {
            "name": "shapes",
            "n_train": 160,
            "n_test": 48,
            "size": 16,
            "num_classes": 4,
            "background": "mixed",
            "groups": 3,
            "object_texture": "class",
            "seed": 0,
        },
        "teacher_subset": {"tag": "group", "counts": [40, 0, 40]},
        "student_subset": {"tag": "domain", "keep": [0]},
        "teacher": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 1}},
        "student": {"model": {"name": "cnn_small", "width": 4}, "train": {"epochs": 2}},
        "students": [{"method": "kd"}, {"method": "soft_label", "noise_var": 0.02}],
        "seeds": [0],
        "checkpoints": [0, 1, 2],
    }


#: the property-transfer and teacher-knowledge analyses, set to train no model of their own (the
#: foreign attack source, T*, accuracy-matched students and a teacher zoo train as the study's
#: runs do, on the current device)
ANALYSED = [
    {"name": "localisation", "n_inputs": 8},
    {"name": "representation_similarity", "n_inputs": 8},
    {"name": "adversarial", "n_inputs": 8, "calibration": 8, "foreign": None},
    {
        "name": "invariance",
        "n_inputs": 8,
        "transforms": ["colour", "shift"],
        "control_teacher": False,
    },
    {"name": "decision_boundary", "triplets": 2, "resolution": 3},
    "domains",
    "shape_bias",
    "subgroups",
    "property_claims",
    "calibration",
    "difficulty",
    {"name": "class_geometry", "permutations": 9},
    "three_levels",
]


def test_every_analysis_runs_with_the_models_on_the_device(tmp_path, monkeypatch) -> None:
    """The analyses of a trained study run once on the CPU and once with every model on the
    fake device (as :meth:`Run.load` gives them on a GPU): the same results."""
    from kdscope import parse_study, run_study
    from kdscope.analyses import run_analyses
    from kdscope.study import Run

    study = run_study(parse_study(tiny_study()), tmp_path, quiet=True)
    cfg = parse_study({**tiny_study(), "analyses": ANALYSED})

    def analyse() -> list[Any]:
        study.config, study.results, study._logits = cfg, {}, {}
        monkeypatch.setattr("kdscope.study._TEACHERS", {})
        outcomes = run_analyses(study, quiet=True)
        return [(o.analysis.name, o.skipped, o.result) for o in outcomes]

    expected = analyse()
    assert [name for name, skipped, _ in expected if skipped] == []
    real_load = Run.load
    with fake_device(monkeypatch) as fake:
        monkeypatch.setattr(Run, "load", lambda run, epoch=None: fake.place(real_load(run, epoch)))
        got = analyse()
        assert device.model_device(study.teacher_model) == FAKE
    assert_same_on_cpu(expected, got)


def test_bench_device_runs_every_property_and_teacher_knowledge_analysis() -> None:
    """``kdscope bench device`` (its GPU rows run only on a GPU) analyses its study with every
    property-transfer and teacher-knowledge analysis, and its comparison of the analyses' numbers
    counts those that moved beyond the tolerance or went missing."""
    from kdscope.analyses import ANALYSES
    from kdscope.bench import _analysis_deviations, device_study

    papers = ("kdscope.analyses.property_transfer", "kdscope.analyses.teacher_knowledge")
    wanted = {n for n in ANALYSES.names() if ANALYSES.get(n).__module__.startswith(papers)}
    assert wanted <= {a.name for a in device_study().analyses}

    cpu = {
        "a": {"rate": 0.5, "points": [50.0, 10.0], "n": 64, "nan": float("nan"), "ok": True},
        "b": {"x": 1.0, "y": 2.0},
        "c": {"skipped": "not applicable"},
    }
    cuda = {
        "a": {"rate": 0.52, "points": [53.0, 10.0], "n": 64, "nan": float("nan"), "ok": False},
        "b": {"x": 1.1},
        "c": {"skipped": "not applicable"},
    }
    assert _analysis_deviations(cpu, cuda) == {
        "a": (1, 5, "/points[0]: 50 -> 53"),  # 3 points off 50 is beyond 5 % of 50
        "b": (2, 2, "/x: 1 -> 1.1"),  # 0.1 off 1 is beyond 0.05; y is missing
    }
