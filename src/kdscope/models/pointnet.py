"""PointNet-style classifiers of (B, P, 3) point clouds (docs/models_and_datasets.md), named like
the CNNs.

For a cloud x = (x_1, ..., x_P), x_i ∈ R³, every per-point stage is a shared 1×1 convolution
(the same affine map on each point) with BatchNorm and ReLU, h_i = relu(BN(W h_i^prev)), and
the layer ``conv`` is the last shared convolution + BN followed by a max over points:

    conv(x)_c = max_i BN(W h_i)_c        (pre-ReLU, like the image models' ``conv``)
    fc3(relu(fc2(relu(fc1(relu(conv(x)))))))  = logits.

Because ReLU is monotone, relu(max_i z_ic) = max_i relu(z_ic): ``conv_act`` is exactly
PointNet's global feature (ReLU, then max-pool), and ``conv`` is the "conv analogue" of a CNN layer.
The output is invariant to the order of the points, and a point that wins no channel of the
max has no influence on ``conv`` at all. There is no input normaliser: noise of a
knowledge-point analysis goes on the raw coordinates, with the coordinate scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdscope.models.base import add_head, run_head
from kdscope.models.registry import register_model


class MaxOverPoints(nn.Module):
    """(B, C, P) → (B, C): the maximum of each channel over the points."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=2)


def point_conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """Shared per-point linear map (1×1 Conv1d, no bias) followed by BatchNorm; no activation."""
    return nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))


class PointNet(nn.Module):
    """Named per-point stages (``stem``, ``stage1``, ...), a ``conv`` layer (shared conv + BN +
    max over points, pre-ReLU) and the three-layer head ``fc1``, ``fc2``, ``fc3`` (logits)."""

    roles = {"middle": "stage1", "last_conv": "conv", "penultimate": "fc2_act", "logits": "fc3"}
    diagnosable = ("conv", "fc1", "fc2")

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int],
        global_features: int,
        hidden: int,
        num_points: int,
    ) -> None:
        super().__init__()
        if len(widths) < 2 or min(*widths, global_features, hidden, num_points) < 1:
            raise ValueError("need at least two per-point stages and positive sizes")
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(widths))]
        c_in = 3
        for name, c_out in zip(self.stage_names, widths, strict=True):
            self.add_module(name, nn.Sequential(*point_conv_bn(c_in, c_out), nn.ReLU()))
            c_in = c_out
        self.conv = nn.Sequential(*point_conv_bn(c_in, global_features), MaxOverPoints())
        self.conv_act = nn.ReLU()
        add_head(self, global_features, hidden, num_classes)
        self.input_shape = (num_points, 3)

    def forward(self, x: Tensor) -> Tensor:
        """(B, P, 3) clouds → (B, num_classes) logits; any P works (``input_shape`` holds the
        P the model is built for, which examples and tests feed it)."""
        h = x.transpose(1, 2)
        for name in self.stage_names:
            h = getattr(self, name)(h)
        return run_head(self, self.conv_act(self.conv(h)))


@register_model("pointnet")
def pointnet(num_classes: int, width: int = 16, num_points: int = 256) -> PointNet:
    """Teacher-size PointNet: per-point stages of w, w, 2w channels, a global feature of 8w
    channels and a head of 4w units."""
    w = width
    return PointNet(num_classes, [w, w, 2 * w], 8 * w, 4 * w, num_points)


@register_model("pointnet_small")
def pointnet_small(num_classes: int, width: int = 16, num_points: int = 256) -> PointNet:
    """Student-size PointNet: per-point stages of w and 2w channels, a global feature of 4w
    channels and a head of 2w units."""
    w = width
    return PointNet(num_classes, [w, 2 * w], 4 * w, 2 * w, num_points)
