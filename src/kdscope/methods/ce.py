"""Cross-entropy from raw labels: the baseline every distilled student is compared against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdscope.datasets.base import Batch
from kdscope.methods.base import Method
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs


@register_method("ce")
class CrossEntropy(Method):
    """L = -(1/B) sum_b log softmax(z_b)[y_b]: no teacher."""

    needs_teacher = False
    role = "baseline"

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(student.logits, batch.label)}
