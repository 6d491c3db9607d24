"""The planted-hierarchy dataset and the vector classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdscope.datasets import build
from kdscope.errors import KdscopeError
from kdscope.models import build_model


def test_shapes_labels_and_class_information() -> None:
    d = build("hierarchy", n_super=3, n_sub=2, dim=8, n_train=10, n_test=5, seed=1)
    assert d.train.inputs.shape == (60, 8) and d.test.inputs.shape == (30, 8)
    assert d.num_classes == 6 and d.train.modality == "vector"
    # balanced classes, shuffled order
    assert torch.bincount(d.train.labels).tolist() == [10] * 6
    assert not torch.equal(d.train.labels, torch.sort(d.train.labels).values)
    assert d.train.class_info["superclass"].tolist() == [0, 0, 1, 1, 2, 2]
    assert d.train.class_info["centre"].shape == (6, 8)
    assert d.train.class_names[3] == "s1.c1"
    assert bool(d.train.foreground.all())
    assert float(d.train.tags["difficulty"].abs().max()) == 0.0


def test_generation_is_deterministic_and_test_split_ignores_training_size() -> None:
    a = build("hierarchy", n_train=5, seed=3)
    b = build("hierarchy", n_train=5, seed=3)
    c = build("hierarchy", n_train=9, seed=3)
    assert torch.equal(a.train.inputs, b.train.inputs)
    assert torch.equal(a.test.inputs, c.test.inputs)
    assert not torch.equal(a.train.inputs, build("hierarchy", n_train=5, seed=4).train.inputs)


def test_inputs_follow_the_generative_model() -> None:
    """Without warp and noise every input is its class centre; classes of one superclass are
    closer to each other than to other superclasses' classes."""
    d = build("hierarchy", dim=16, n_train=3, sigma_noise=0.0, warp=0.0, sigma_sub=0.3, seed=0)
    centres = d.train.class_info["centre"]
    torch.testing.assert_close(d.train.inputs, centres[d.train.labels])
    dist = torch.cdist(centres, centres)
    sup = d.train.class_info["superclass"]
    same = (sup[:, None] == sup[None, :]) & ~torch.eye(20, dtype=torch.bool)
    assert float(dist[same].mean()) < 0.5 * float(
        dist[~same & ~torch.eye(20, dtype=torch.bool)].mean()
    )


def test_planted_difficulty_moves_inputs_toward_a_sibling() -> None:
    d = build(
        "hierarchy",
        n_super=2,
        n_sub=3,
        dim=4,
        n_train=50,
        sigma_noise=0.0,
        warp=0.0,
        difficulty=0.5,
        seed=2,
    )
    a = d.train.tags["difficulty"]
    assert float(a.min()) >= 0 and float(a.max()) <= 0.5 and float(a.std()) > 0
    centres, labels = d.train.class_info["centre"], d.train.labels
    sup = d.train.class_info["superclass"]
    for x, y, ai in zip(d.train.inputs, labels, a, strict=True):
        # x = mu_y + a (mu_c' - mu_y) for a sibling c' != y of the same superclass
        siblings = [c for c in range(6) if c != int(y) and sup[c] == sup[y]]
        err = [
            float((x - centres[y] - ai * (centres[c] - centres[y])).abs().max()) for c in siblings
        ]
        assert min(err) < 1e-5


def test_label_noise_flips_only_training_labels() -> None:
    clean = build("hierarchy", n_train=50, seed=0)
    noisy = build("hierarchy", n_train=50, label_noise=0.2, seed=0)
    assert torch.equal(clean.test.labels, noisy.test.labels)
    # the same inputs, with about 20 % of the training labels changed
    torch.testing.assert_close(clean.train.inputs, noisy.train.inputs)
    changed = float((clean.train.labels != noisy.train.labels).float().mean())
    assert 0.15 < changed < 0.25


@pytest.mark.parametrize(
    "params", [{"n_sub": 0}, {"difficulty": 1.5}, {"label_noise": 1.0}, {"sigma_noise": -1.0}]
)
def test_bad_parameters_are_user_errors(params: dict) -> None:
    with pytest.raises(KdscopeError, match=next(iter(params))):
        build("hierarchy", **params)


def test_vector_mlp_linear_and_hidden() -> None:
    linear = build_model("vector_mlp", 5, in_features=8, hidden=[])
    assert isinstance(linear.features, torch.nn.Identity)
    x = torch.randn(3, 8)
    torch.testing.assert_close(linear(x), x @ linear.head.weight.T + linear.head.bias)
    mlp = build_model("vector_mlp", 5, in_features=8, hidden=[16, 4])
    assert mlp.head.weight.shape == (5, 4) and mlp(x).shape == (3, 5)
    with pytest.raises(KdscopeError):
        build_model("vector_mlp", 5, in_features=0)
    np.testing.assert_equal(mlp.input_shape, (8,))
