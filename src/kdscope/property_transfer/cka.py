"""Linear centred kernel alignment (Kornblith et al. 2019; property-transfer spec §3.8).

For activations X (n × p1) and Y (n × p2) of the same n inputs, with columns centred:

    CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)                       (feature form)
              = tr(K L) / sqrt(tr(K K) · tr(L L)),  K = X Xᵀ, L = Y Yᵀ     (Gram form)

Both are the same number; the Gram form costs O(n² p) and is used when a layer is wider than the
number of inputs. CKA is invariant to orthogonal transforms and isotropic scaling of either side,
not to anisotropic scaling. Convolutional maps are flattened (or spatially averaged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kdscope.models.hooks import forward_with_features


def _centre(x: Tensor) -> Tensor:
    x = x.reshape(len(x), -1).double()
    return x - x.mean(0, keepdim=True)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """CKA in feature form (or Gram form when a side is wider than the number of inputs)."""
    xc, yc = _centre(x), _centre(y)
    if max(xc.shape[1], yc.shape[1]) > len(xc):
        return gram_cka(x, y)
    num = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


def gram_cka(x: Tensor, y: Tensor) -> float:
    """CKA from the centred Gram matrices: tr(KL) / sqrt(tr(KK) tr(LL))."""
    xc, yc = _centre(x), _centre(y)
    k, g = xc @ xc.T, yc @ yc.T
    den = torch.sqrt((k * k).sum() * (g * g).sum())
    return float((k * g).sum() / den) if den > 0 else float("nan")


@torch.no_grad()
def layer_activations(
    model: nn.Module, x: Tensor, layers: Sequence[str], spatial_mean: bool = False
) -> dict[str, Tensor]:
    """Eval-mode outputs of ``layers`` (module paths) on ``x``, flattened per input (or averaged
    over spatial positions first); the logits under the key ``"logits"``."""
    was = model.training
    model.eval()
    try:
        out = forward_with_features(model, x, list(layers))
    finally:
        model.train(was)
    feats = {**out.features, "logits": out.logits}
    if spatial_mean:
        feats = {
            k: v.mean(dim=tuple(range(2, v.dim()))) if v.dim() > 2 else v for k, v in feats.items()
        }
    return {k: v.reshape(len(x), -1) for k, v in feats.items()}


def cka_matrix(a: dict[str, Tensor], b: dict[str, Tensor]) -> list[list[float]]:
    """CKA between every layer of ``a`` (rows) and every layer of ``b`` (columns)."""
    return [[linear_cka(x, y) for y in b.values()] for x in a.values()]
