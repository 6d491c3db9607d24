"""Linear centred kernel alignment (Kornblith et al. 2019; Ojha et al. 2023), biased
and debiased.

For activations X (n × p1) and Y (n × p2) of the same n inputs, with columns centred, the
**biased** (plug-in) estimator is

    CKA(X, Y) = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)                       (feature form)
              = tr(K L) / sqrt(tr(K K) · tr(L L)),  K = X Xᵀ, L = Y Yᵀ     (Gram form)

Both are the same number. It is biased upward when features are many compared with inputs: the
plug-in HSIC tr(KL)/(n − 1)² has a positive bias of order p/n for independent features, and the
ratio tends to 1 as p/n grows. For independent standard normal features on 256 inputs it is 0.67
at 512 features, 0.89 at 2,048 and 0.97 at 8,192; flattened convolutional maps are that wide.

The **debiased** estimator (Nguyen, Raghu & Kornblith 2021) replaces each HSIC by the unbiased
estimator of Song et al. (2012). With K̃, L̃ the Gram matrices with their diagonals set to 0 and
1 the vector of ones,

    HSIC₁(K, L) = [ tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n − 1)(n − 2)) − 2/(n − 2) · 1ᵀK̃ L̃1 ]
                  / (n (n − 3)),

    CKA₁(X, Y) = HSIC₁(K, L) / sqrt(HSIC₁(K, K) · HSIC₁(L, L)),

defined for n ≥ 4 and ≈ 0 for independent features at any width (it can be slightly negative).
It is computed in O(n²) per pair from the **U-centred** Gram matrices (Székely & Rizzo 2014):

    Ũ_ij = K_ij − r_i − r_j + s  (i ≠ j),  Ũ_ii = 0,
    r_i = Σ_{l≠i} K_il / (n − 2),  s = Σ_{l≠m} K_lm / ((n − 1)(n − 2)),

for which ⟨Ũ(K), Ũ(L)⟩_F = n (n − 3) · HSIC₁(K, L). Both estimators are invariant to orthogonal
transforms and isotropic scaling of either side, not to anisotropic scaling; both equal 1 for
identical features. A side whose activations are constant over the inputs (a collapsed layer)
has a zero (U-)centred Gram matrix: its CKA is undefined (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from kdscope import device
from kdscope.models.hooks import forward_with_features

Estimator = Literal["biased", "debiased"]
ESTIMATORS: tuple[Estimator, ...] = ("biased", "debiased")


def _centre(x: Tensor) -> Tensor:
    x = x.reshape(len(x), -1).double()
    return x - x.mean(0, keepdim=True)


def _alignment(a: Tensor, b: Tensor) -> float:
    """⟨A, B⟩_F / (‖A‖_F ‖B‖_F); NaN when either side is zero."""
    den = a.norm() * b.norm()
    return float((a * b).sum() / den) if den > 0 else float("nan")


def centred_gram(x: Tensor) -> Tensor:
    """K = X_c X_cᵀ of the column-centred, flattened activations (n × n, float64)."""
    xc = _centre(x)
    return xc @ xc.T


def u_centre(gram: Tensor) -> Tensor:
    """The U-centred Gram matrix Ũ(K) of the module docstring (needs n ≥ 4)."""
    n = len(gram)
    if n < 4:
        raise ValueError(f"the debiased estimator needs at least 4 inputs, got {n}")
    k = gram.double().clone()
    k.fill_diagonal_(0.0)
    row = k.sum(1) / (n - 2)
    total = k.sum() / ((n - 1) * (n - 2))
    u = k - row[:, None] - row[None, :] + total
    u.fill_diagonal_(0.0)
    return u


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Biased linear CKA in feature form (or Gram form when a side is wider than the number of
    inputs)."""
    xc, yc = _centre(x), _centre(y)
    if max(xc.shape[1], yc.shape[1]) > len(xc):
        return gram_cka(x, y)
    num = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    den = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    return float(num / den) if den > 0 else float("nan")


def gram_cka(x: Tensor, y: Tensor) -> float:
    """Biased linear CKA from the centred Gram matrices: tr(KL) / sqrt(tr(KK) tr(LL))."""
    return _alignment(centred_gram(x), centred_gram(y))


def debiased_cka(x: Tensor, y: Tensor) -> float:
    """Debiased linear CKA: ⟨Ũ(K), Ũ(L)⟩ / (‖Ũ(K)‖ ‖Ũ(L)‖) with K, L the linear Gram matrices
    (the normalised unbiased HSIC of the module docstring)."""
    return _alignment(u_centre(centred_gram(x)), u_centre(centred_gram(y)))


@dataclass(frozen=True)
class LayerGrams:
    """One layer's centred and U-centred Gram matrices and the width p of its flattened
    activations: what every CKA with this layer needs, computed once."""

    centred: Tensor
    u_centred: Tensor
    width: int

    @classmethod
    def of(cls, x: Tensor) -> LayerGrams:
        k = centred_gram(x)
        return cls(k, u_centre(k), x[0].numel())

    def cka(self, other: LayerGrams, estimator: Estimator) -> float:
        """The biased or debiased CKA of this layer with ``other`` (NaN when a side is
        constant over the inputs)."""
        if estimator == "biased":
            return _alignment(self.centred, other.centred)
        return _alignment(self.u_centred, other.u_centred)


def layer_grams(acts: dict[str, Tensor]) -> dict[str, LayerGrams]:
    """:class:`LayerGrams` of every layer of :func:`layer_activations`' output."""
    return {k: LayerGrams.of(v) for k, v in acts.items()}


@torch.no_grad()
def layer_activations(
    model: nn.Module, x: Tensor, layers: Sequence[str], spatial_mean: bool = False
) -> dict[str, Tensor]:
    """Eval-mode outputs of ``layers`` (module paths) on ``x``, flattened per input (or averaged
    over spatial positions first); the logits under the key ``"logits"``. Computed on the model's
    device (``x`` moved there), returned on the CPU."""
    was = model.training
    model.eval()
    try:
        out = forward_with_features(model, x.to(device.model_device(model)), list(layers))
    finally:
        model.train(was)
    feats = {**out.features, "logits": out.logits}
    if spatial_mean:
        feats = {
            k: v.mean(dim=tuple(range(2, v.dim()))) if v.dim() > 2 else v for k, v in feats.items()
        }
    return {k: v.reshape(len(x), -1).cpu() for k, v in feats.items()}


def cka_matrix(
    a: dict[str, LayerGrams], b: dict[str, LayerGrams], estimator: Estimator
) -> list[list[float]]:
    """CKA between every layer of ``a`` (rows) and every layer of ``b`` (columns)."""
    return [[x.cka(y, estimator) for y in b.values()] for x in a.values()]
