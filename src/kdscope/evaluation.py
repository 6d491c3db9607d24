"""Batched inference over an in-memory dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope import device
from kdscope.datasets.base import TensorDataset


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorDataset, batch_size: int = 500) -> Tensor:
    """Logits of ``model`` (in eval mode) for every example of ``data``, in order, computed on
    the model's device (:mod:`kdscope.device`) and returned on the CPU."""
    was_training = model.training
    model.eval()
    dev = device.model_device(model)
    try:
        return torch.cat(
            [model(b.input.to(dev, non_blocking=True)).cpu() for b in data.batches(batch_size)]
        )
    finally:
        model.train(was_training)


def accuracy_and_loss(
    model: nn.Module, data: TensorDataset, batch_size: int = 500
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``data`` (in inference mode, a
    little faster than without gradients alone, and the same numbers: nothing it makes
    leaves it but two floats)."""
    with torch.inference_mode():
        logits = predict_logits(model, data, batch_size)
        acc = float((logits.argmax(1) == data.labels).float().mean())
        return acc, float(F.cross_entropy(logits, data.labels))
