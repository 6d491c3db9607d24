"""Shared fixtures: tiny in-memory data and models, so unit tests stay fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from kdscope.datasets.base import DataSplits, TensorDataset


def random_dataset(n: int, num_classes: int = 4, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    inputs = torch.rand(n, 3, size, size, generator=g) * 0.3
    # a learnable signal: class k brightens channel k % 3 in quadrant k
    for k in range(num_classes):
        r, c = divmod(k % 4, 2)
        h = size // 2
        inputs[labels == k, k % 3, r * h : (r + 1) * h, c * h : (c + 1) * h] += 0.6
    fg = torch.zeros(n, size, size, dtype=torch.bool)
    return TensorDataset(inputs.clamp(0, 1), labels, fg, num_classes)


@pytest.fixture
def tiny_splits() -> DataSplits:
    return DataSplits(random_dataset(96, seed=0), random_dataset(48, seed=1))
