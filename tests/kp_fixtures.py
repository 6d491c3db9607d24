"""Known-answer fixtures shared by the knowledge-point estimator tests (images and point
clouds): a linear layer and hand-computed fixture A with its closed-form σ and entropies, and
two tiny conv nets with central-square masks for the API tests."""

from __future__ import annotations

import torch
from torch import nn

from kdscope.knowledge_points import UnitMap, image_grid


class Linear(nn.Module):
    """f(x) = W·flatten(x) + a; no normaliser, so noise is added to the raw input."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.3) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        self.fc.weight.data = weight.clone().float()
        self.fc.bias.data.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


FIXTURE_A = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
SIGMA_A = torch.tensor([0.035, 0.0175, 0.035 / 3, 1.0], dtype=torch.float64)
H_A = torch.tensor([-1.9335, -2.6266, -3.0321, 1.4189], dtype=torch.float64)


def tiny_conv_nets(
    n_inputs: int,
) -> tuple[list[nn.Module], torch.Tensor, torch.Tensor, UnitMap]:
    """Two seeded conv nets (layer "0" a 3×3 conv), ``n_inputs`` random 8×8 RGB inputs, their
    masks (the central 4×4 pixels) and the 4×4 grid of 2×2-pixel units."""
    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
        for _ in range(2)
    ]
    x = torch.rand(n_inputs, 3, 8, 8)
    masks = torch.zeros(n_inputs, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True
    return nets, x, masks, image_grid((3, 8, 8), 4)
