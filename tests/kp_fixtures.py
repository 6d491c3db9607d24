"""Known-answer fixtures shared by the knowledge-point estimator tests (images and point
clouds): a linear layer and hand-computed fixture A with its closed-form σ and entropies."""

from __future__ import annotations

import torch
from torch import nn


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
