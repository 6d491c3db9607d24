"""A multi-layer perceptron on flattened inputs, with the same named head as the CNNs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdscope.models.base import Normalize, add_head, channel_stats, run_head
from kdscope.models.registry import register_model


class MLP(nn.Module):
    """normalize -> flatten -> fc1 -> relu -> fc2 -> relu -> fc3 (logits)."""

    roles = {"middle": "fc1_act", "penultimate": "fc2_act", "logits": "fc3"}
    diagnosable = ("fc1", "fc2")

    def __init__(
        self,
        num_classes: int,
        in_features: int,
        hidden: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.flatten = nn.Flatten()
        add_head(self, in_features, hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return run_head(self, self.flatten(self.normalize(x)))


@register_model("mlp")
def mlp(
    num_classes: int,
    in_channels: int = 3,
    input_size: int = 32,
    hidden: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> MLP:
    """MLP for (in_channels, input_size, input_size) inputs with two hidden layers; ``mean`` /
    ``std`` of its normaliser default to 0.5 / 0.25 per channel."""
    stats = channel_stats(in_channels, mean, std)
    return MLP(num_classes, in_channels * input_size * input_size, hidden, *stats)
