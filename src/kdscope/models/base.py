"""Building blocks shared by kdscope's classifiers.

Conventions (see the design notes): inputs are in [0, 1] and the model normalises them itself,
so perturbations and attacks act in pixel space; every classifier names its layers so analyses
and losses can address them by path, and declares **roles** (``middle``, ``last_conv``,
``penultimate``, ``logits``) that map to paths, so a method can say "the middle layer" for any
architecture.

Layer names common to the image classifiers, after the knowledge-point papers' networks:
``stem``, ``stage1..3`` (post-activation stage outputs), ``conv`` (the last convolution + BN,
*pre*-ReLU), ``fc1`` and ``fc2`` (pre-ReLU), ``fc3`` (logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def channel_stats(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel ``mean`` and ``std`` of a model's normaliser for ``in_channels``
    channels: as given, else 0.5 and 0.25 for every channel (inputs in [0, 1]); a ValueError
    naming both lengths when a given one has another length."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    out = []
    for name, given, default in (("mean", mean, 0.5), ("std", std, 0.25)):
        values = tuple(float(v) for v in given) if given is not None else (default,) * in_channels
        if len(values) != in_channels:
            raise ValueError(
                f"{name} has {len(values)} values for in_channels {in_channels}; give one per "
                f"channel, or leave it out ({default} per channel)"
            )
        out.append(values)
    return out[0], out[1]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` over dimension 1."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: Tensor) -> Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(view)) / self.std.view(view)


def conv_bn(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Convolution (no bias) followed by BatchNorm; no activation."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(c_in, c_out, stride), nn.ReLU())


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn_relu(c_in, c_out, stride), *conv_bn(c_out, c_out))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else conv_bn(c_in, c_out, stride, kernel=1)
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def add_head(model: nn.Module, in_features: int, hidden: int, num_classes: int) -> None:
    """Register the shared three-layer head ``fc1 -> fc1_act -> fc2 -> fc2_act -> fc3`` on
    ``model``; :func:`run_head` applies it."""
    model.fc1 = nn.Linear(in_features, hidden)
    model.fc1_act = nn.ReLU()
    model.fc2 = nn.Linear(hidden, hidden)
    model.fc2_act = nn.ReLU()
    model.fc3 = nn.Linear(hidden, num_classes)
    model.num_classes = num_classes


def run_head(model: nn.Module, x: Tensor) -> Tensor:
    """fc3(relu(fc2(relu(fc1(x))))) with the modules registered by :func:`add_head`."""
    return model.fc3(model.fc2_act(model.fc2(model.fc1_act(model.fc1(x)))))


class ConvClassifier(nn.Module):
    """Normaliser, named convolutional stages, a ``conv`` layer and a three-layer MLP head.

    ``forward(x)`` = fc3(relu(fc2(relu(fc1(pool(relu(conv(stages(normalize(x))))))))).
    """

    roles = {"middle": "stage2", "last_conv": "conv", "penultimate": "fc2_act", "logits": "fc3"}
    diagnosable = ("conv", "fc1", "fc2")

    def __init__(
        self,
        stages: Sequence[tuple[str, nn.Module]],
        conv: nn.Module,
        conv_channels: int,
        hidden: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stage_names = [name for name, _ in stages]
        for name, module in stages:
            self.add_module(name, module)
        self.conv = conv
        self.conv_act = nn.ReLU()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        add_head(self, conv_channels, hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return run_head(self, self.pool(self.conv_act(self.conv(x))))
