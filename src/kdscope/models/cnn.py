"""Small convolutional classifiers sized for CPU training on 32x32 images.

Each takes ``in_channels`` (3: RGB, 1: grayscale, ...) and the ``mean`` / ``std`` of its input
normaliser, one value per channel (default 0.5 / 0.25 for every channel, inputs in [0, 1])."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kdscope.models.base import BasicBlock, ConvClassifier, channel_stats, conv_bn, conv_bn_relu
from kdscope.models.registry import register_model


@register_model("resnet_small")
def resnet_small(
    num_classes: int,
    in_channels: int = 3,
    width: int = 16,
    blocks: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ConvClassifier:
    """Teacher-size residual CNN: stem, three stages of basic blocks (width, 2w, 4w; strides
    1, 2, 2), a conv+BN ``conv`` layer at 4w channels, and a 3-layer MLP head of 8w units."""

    def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(c_in, c_out, stride)]
        layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    w = width
    stages = [
        ("stem", conv_bn_relu(in_channels, w)),
        ("stage1", stage(w, w, 1)),
        ("stage2", stage(w, 2 * w, 2)),
        ("stage3", stage(2 * w, 4 * w, 2)),
    ]
    stats = channel_stats(in_channels, mean, std)
    return ConvClassifier(stages, conv_bn(4 * w, 4 * w), 4 * w, 8 * w, num_classes, *stats)


@register_model("cnn_small")
def cnn_small(
    num_classes: int,
    in_channels: int = 3,
    width: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ConvClassifier:
    """Student-size plain CNN: three conv-BN-ReLU stages (w, 2w, 2w) with 2x2 max-pooling
    after the first two, a conv+BN ``conv`` layer at 2w channels and a 3-layer MLP head."""
    w = width
    stages = [
        ("stem", conv_bn_relu(in_channels, w)),
        ("stage1", nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(w, 2 * w))),
        ("stage2", nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(2 * w, 2 * w))),
    ]
    stats = channel_stats(in_channels, mean, std)
    return ConvClassifier(stages, conv_bn(2 * w, 2 * w), 2 * w, 4 * w, num_classes, *stats)


@register_model("vgg_small")
def vgg_small(
    num_classes: int,
    in_channels: int = 3,
    width: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ConvClassifier:
    """VGG-style CNN: stacks of 3x3 conv-BN-ReLU (w; 2w, 2w; 4w, 4w) separated by max-pooling,
    a conv+BN ``conv`` layer at 4w channels, and a 3-layer MLP head of 8w units."""
    w = width
    stages = [
        ("stem", conv_bn_relu(in_channels, w)),
        (
            "stage1",
            nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(w, 2 * w), *conv_bn_relu(2 * w, 2 * w)),
        ),
        ("stage2", nn.Sequential(nn.MaxPool2d(2), *conv_bn_relu(2 * w, 4 * w))),
        ("stage3", nn.Sequential(*conv_bn_relu(4 * w, 4 * w))),
    ]
    stats = channel_stats(in_channels, mean, std)
    return ConvClassifier(stages, conv_bn(4 * w, 4 * w), 4 * w, 8 * w, num_classes, *stats)
