"""Classifiers of feature vectors: an MLP (or, with no hidden layer, a linear softmax model)
whose last layer is an explicit linear layer on a named penultimate representation.

    h = features(x)   (ReLU MLP; the identity for a linear model)
    z = head(h) = W h + b

so the class templates w_k (rows of ``head.weight``) and the representation h are what the
logit-geometry analysis (docs/three_levels.md) reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdscope.models.registry import register_model


class VectorMLP(nn.Module):
    """features (Linear -> ReLU, repeated) -> head (Linear)."""

    roles = {"middle": "features", "penultimate": "features", "logits": "head"}
    diagnosable: tuple[str, ...] = ()

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers) if layers else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.num_classes = num_classes
        self.input_shape = (in_features,)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.flatten(1)))


@register_model("vector_mlp")
def vector_mlp(num_classes: int, in_features: int = 32, hidden: Sequence[int] = (64,)) -> VectorMLP:
    """ReLU MLP on ``in_features``-dimensional vectors; ``hidden: []`` gives a linear model."""
    if in_features < 1 or any(h < 1 for h in hidden):
        raise ValueError("in_features and every hidden width must be positive")
    return VectorMLP(num_classes, in_features, list(hidden))
