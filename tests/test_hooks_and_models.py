"""Models are registered, address their layers by path/role, and no hook outlives its use."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from kdscope import KdscopeError, build_model, capture, list_models, register_model
from kdscope.models import MODELS
from kdscope.models.hooks import forward_with_features, layer_weights, resolve_layer


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_every_model_classifies_and_exposes_its_layers(name: str) -> None:
    # text models read 7 token ids from a vocabulary of 20 (the span model: 7² span classes)
    text = "vocab_size" in inspect.signature(MODELS.get(name)).parameters
    classes = 49 if name.startswith("span") else 7
    model = build_model(name, num_classes=classes, **({"vocab_size": 20} if text else {})).eval()
    if text:
        x = torch.randint(3, 20, (2, 7))
    else:
        x = torch.rand(2, *getattr(model, "input_shape", (3, 32, 32)))
    paths = [resolve_layer(model, r) for r in model.roles] + list(model.diagnosable)
    out = forward_with_features(model, x, paths)
    assert out.logits.shape == (2, classes)
    assert set(out.features) == set(paths)
    assert torch.equal(out.features[resolve_layer(model, "logits")], out.logits)
    assert _hook_count(model) == 0


def test_capture_removes_hooks_even_when_the_forward_raises() -> None:
    model = build_model("cnn_small", 3, width=4)
    with pytest.raises(RuntimeError), capture(model, ["conv", "fc1"]) as feats:
        assert _hook_count(model) == 2
        model(torch.rand(1, 5, 16, 16))  # wrong channel count
    assert feats == {} and _hook_count(model) == 0


def test_capture_returns_the_module_outputs() -> None:
    model = build_model("mlp", 3, input_size=8, hidden=16).eval()
    x = torch.rand(4, 3, 8, 8)
    with capture(model, ["fc1", "fc1_act"]) as feats:
        model(x)
    expected = model.fc1(model.flatten(model.normalize(x)))
    torch.testing.assert_close(feats["fc1"], expected)
    torch.testing.assert_close(feats["fc1_act"], expected.relu())


def test_unknown_layer_is_a_user_error_naming_it() -> None:
    model = build_model("cnn_small", 3, width=4)
    with pytest.raises(KdscopeError, match="unknown layer 'stage9'"):
        resolve_layer(model, "stage9")


def test_layer_weights_container_and_activation() -> None:
    model = build_model("cnn_small", 3, width=4)
    conv_w = layer_weights(model, "conv")  # Conv2d + BatchNorm: the conv kernel alone
    assert len(conv_w) == 1 and conv_w[0] is model.conv[0].weight
    act_w = layer_weights(model, "fc1_act", torch.rand(2, 3, 16, 16))  # last parametrised before
    assert act_w[0] is model.fc1.weight
    assert _hook_count(model) == 0


def test_user_model_registration() -> None:
    @register_model("test_tiny_linear")
    def tiny(num_classes: int, in_features: int = 12) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))

    try:
        m = build_model("test_tiny_linear", 5, in_features=3 * 2 * 2)
        assert m(torch.rand(2, 3, 2, 2)).shape == (2, 5)
        with pytest.raises(KdscopeError, match="test_tiny_linear"):
            build_model("test_tiny_linear", 5, depth=3)
    finally:
        MODELS._entries.pop("test_tiny_linear")
