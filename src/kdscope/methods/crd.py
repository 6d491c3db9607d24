"""Contrastive representation distillation (Tian et al. 2020, RepDistiller form).

Embeddings of the flattened ``penultimate`` features: e_s = normalise(W_s f_s + b_s),
e_t = normalise(W_t f_t + b_t), dimension d (both heads trained with the student; the teacher's
features are constants). Two memory banks m^s, m^t (n_data x d buffers, initialised uniformly in
[-a, a], a = 1/sqrt(d/3)) hold one slot per training example.

For anchor i (dataset index) the candidates are k_0 = i (positive) and N negatives k_1..k_N drawn
uniformly with replacement from the training examples of other classes. Scoring an embedding e
against a memory m:

    P_j = exp(m_{k_j} . e / tau) / Z,   Z = n_data * mean over the first batch of exp(m_k . e / tau)

(Z fixed once, per direction, and kept in a buffer). With noise probability P_n = 1/n_data the NCE
loss of one anchor is

    l = -log(P_0 / (P_0 + N P_n)) - sum_{j=1..N} log(N P_n / (P_j + N P_n))

and CRD = mean_b [ l(e_t against m^s) + l(e_s against m^t) ]. ``loss="softmax"`` replaces l by
the exact softmax cross-entropy over the N + 1 candidates, -log softmax(m_k . e / tau)_0 (Z
cancels). After the loss (in training mode) the memories of the batch's examples move:
m_i <- normalise(momentum * m_i + (1 - momentum) * e(x_i)), detached.

Total: gamma * CE (term ``"ce"``) + beta * CRD (term ``"crd"``).

Z is computed as mean(exp(.)) * n_data over all B (N + 1) scores of the first batch, as
RepDistiller does; Z_s belongs to the student embedding scored against the teacher memory, Z_t to
the teacher embedding scored against the student memory. Negatives use the global torch RNG, so a
trainer that seeds it per epoch gets reproducible draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.base import Batch
from kdscope.errors import KdscopeError
from kdscope.methods.base import BindContext, Method, bind_layers, check_weights, require_teacher
from kdscope.methods.registry import register_method
from kdscope.models.hooks import Outputs

LOSSES = ("nce", "softmax")


class Embed(nn.Module):
    """normalise(Linear(flatten(f))): the CRD embedding head."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, f: Tensor) -> Tensor:
        return F.normalize(self.linear(f.flatten(1)), dim=1)


def init_memory(n_data: int, dim: int, device: torch.device | None = None) -> Tensor:
    """An (n_data, dim) bank uniform in [-a, a], a = 1/sqrt(dim/3) (variance 1/dim per entry)."""
    a = 1.0 / math.sqrt(dim / 3)
    return torch.rand(n_data, dim, device=device).mul_(2 * a).sub_(a)


def candidate_scores(memory: Tensor, idx: Tensor, emb: Tensor, tau: float) -> Tensor:
    """(B, N+1) scores m_{idx[b, j]} . e_b / tau; the memory is a constant."""
    return torch.einsum("bjd,bd->bj", memory.detach()[idx], emb) / tau


def nce_loss(log_p: Tensor, n_data: int) -> Tensor:
    """Batch mean of the NCE loss from log P_j (column 0 = positive, N negatives).

    l = -log(P_0 / (P_0 + N P_n)) - sum_j log(N P_n / (P_j + N P_n)), P_n = 1/n_data, computed in
    log space: log(P + N P_n) = logaddexp(log P, log(N/n_data)).
    """
    n_neg = log_p.shape[1] - 1
    c = torch.full_like(log_p, math.log(n_neg / n_data))
    log_den = torch.logaddexp(log_p, c)
    pos = log_p[:, 0] - log_den[:, 0]
    neg = (c[:, 1:] - log_den[:, 1:]).sum(dim=1)
    return -(pos + neg).mean()


def softmax_loss(scores: Tensor) -> Tensor:
    """Batch mean of -log softmax(scores)_0 over the N + 1 candidates."""
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores, target)


def momentum_update(memory: Tensor, index: Tensor, emb: Tensor, momentum: float) -> None:
    """In place: memory[i] <- normalise(momentum * memory[i] + (1 - momentum) * emb), detached."""
    with torch.no_grad():
        new = memory[index] * momentum + emb.detach().to(memory.dtype) * (1 - momentum)
        memory.index_copy_(0, index, F.normalize(new, dim=1))


def class_table(labels: Tensor, num_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(order, count, start): indices sorted by class, examples per class, first slot per class."""
    labels = labels.long().flatten()
    k = int(num_classes or int(labels.max()) + 1)
    order = torch.argsort(labels, stable=True)
    count = torch.bincount(labels, minlength=k)
    start = torch.cumsum(count, 0) - count
    return order, count, start


def sample_other_class(
    order: Tensor, count: Tensor, start: Tensor, anchor_labels: Tensor, n_negatives: int
) -> Tensor:
    """(B, n_negatives) dataset indices drawn uniformly, with replacement, from other classes.

    With indices sorted by class (``order``), the examples not of class c are
    order[:start_c] followed by order[start_c + n_c:]: draw j uniform in [0, n - n_c) and shift it
    by n_c when j >= start_c. Vectorised, memory O(n + B N); uses the global torch RNG.
    """
    n = order.shape[0]
    lab = anchor_labels.long().to(order.device)
    n_c = count[lab].unsqueeze(1)
    first = start[lab].unsqueeze(1)
    u = torch.rand(lab.shape[0], n_negatives, dtype=torch.float64, device=order.device)
    j = torch.minimum((u * (n - n_c).to(torch.float64)).long(), n - n_c - 1)
    j = torch.where(j >= first, j + n_c, j)
    return order[j]


@register_method("crd")
class CRD(Method):
    """gamma * CE (term ``"ce"``) + beta * CRD (term ``"crd"``); see the module docstring.

    Parameters: ``layer`` (role or path, default ``"penultimate"``), ``student_layer`` /
    ``teacher_layer`` (overrides), ``gamma`` (1.0), ``beta`` (0.8), ``tau`` (0.07),
    ``n_negatives`` (4096), ``feat_dim`` (128), ``momentum`` (0.5), ``loss`` ("nce" or
    "softmax", default "nce").
    """

    distill_weight = "beta"

    def __init__(
        self,
        layer: str = "penultimate",
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        gamma: float = 1.0,
        beta: float = 0.8,
        tau: float = 0.07,
        n_negatives: int = 4096,
        feat_dim: int = 128,
        momentum: float = 0.5,
        loss: str = "nce",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise KdscopeError(f"crd: loss must be one of {LOSSES}, got {loss!r}")
        check_weights("crd", gamma=gamma, beta=beta)
        if not tau > 0 or n_negatives < 1 or feat_dim < 1 or not 0.0 <= momentum <= 1.0:
            raise KdscopeError(
                "crd: need tau > 0, n_negatives >= 1, feat_dim >= 1 and momentum in [0, 1] (got "
                f"tau={tau}, n_negatives={n_negatives}, feat_dim={feat_dim}, momentum={momentum})"
            )
        self.layer = layer
        self.student_layer = student_layer or layer
        self.teacher_layer = teacher_layer or layer
        self.gamma = float(gamma)
        self.beta = float(beta)
        self.tau = float(tau)
        self.n_negatives = int(n_negatives)
        self.feat_dim = int(feat_dim)
        self.momentum = float(momentum)
        self.loss = loss
        self._student_path = ""
        self._teacher_path = ""
        self.embed_s: nn.Module | None = None
        self.embed_t: nn.Module | None = None
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        self.register_buffer("memory_s", torch.empty(0, self.feat_dim))
        self.register_buffer("memory_t", torch.empty(0, self.feat_dim))
        for name in ("train_labels", "class_order", "class_count", "class_start"):
            self.register_buffer(name, torch.empty(0, dtype=torch.long), persistent=False)

    def bind(self, ctx: BindContext) -> None:
        b = bind_layers(ctx, self.name, [self.student_layer], [self.teacher_layer])
        (self._student_path,), (self._teacher_path,) = b.student_paths, b.teacher_paths
        fs, ft = b.student[self._student_path], b.teacher[self._teacher_path]
        device = next(ctx.student.parameters()).device
        self.embed_s = Embed(fs[0].numel(), self.feat_dim).to(device)
        self.embed_t = Embed(ft[0].numel(), self.feat_dim).to(device)
        n_data = len(ctx.train)
        self.memory_s = init_memory(n_data, self.feat_dim, device)
        self.memory_t = init_memory(n_data, self.feat_dim, device)
        self.z_s = torch.tensor(-1.0, device=device)
        self.z_t = torch.tensor(-1.0, device=device)
        labels = ctx.train.labels.long()
        order, count, start = class_table(labels, ctx.num_classes)
        if bool((count[count > 0] == n_data).any()):
            raise KdscopeError(
                "crd needs training examples of at least two classes (for negatives)"
            )
        self.train_labels = labels.to(device)
        self.class_order, self.class_count, self.class_start = (
            t.to(device) for t in (order, count, start)
        )

    def student_layers(self) -> list[str]:
        return [self._student_path] if self._student_path else []

    def teacher_layers(self) -> list[str]:
        return [self._teacher_path] if self._teacher_path else []

    @property
    def n_data(self) -> int:
        return int(self.memory_s.shape[0])

    def candidates(self, index: Tensor) -> Tensor:
        """(B, N+1) dataset indices: the anchor itself, then N other-class negatives."""
        index = index.long().to(self.memory_s.device)
        negatives = sample_other_class(
            self.class_order,
            self.class_count,
            self.class_start,
            self.train_labels[index],
            self.n_negatives,
        )
        return torch.cat([index.unsqueeze(1), negatives], dim=1)

    def contrast(self, e_s: Tensor, e_t: Tensor, idx: Tensor) -> Tensor:
        """CRD value for embeddings e_s, e_t and candidate indices ``idx`` (fixes Z if unset)."""
        s_scores = candidate_scores(self.memory_t, idx, e_s, self.tau)  # student vs teacher memory
        t_scores = candidate_scores(self.memory_s, idx, e_t, self.tau)  # teacher vs student memory
        if self.loss == "softmax":
            return softmax_loss(s_scores) + softmax_loss(t_scores)
        with torch.no_grad():
            if float(self.z_s) < 0:
                self.z_s.fill_(float(s_scores.exp().mean()) * self.n_data)
            if float(self.z_t) < 0:
                self.z_t.fill_(float(t_scores.exp().mean()) * self.n_data)
        return nce_loss(s_scores - self.z_s.log(), self.n_data) + nce_loss(
            t_scores - self.z_t.log(), self.n_data
        )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        if self.embed_s is None or self.embed_t is None:
            raise RuntimeError("crd: bind() must be called before forward()")
        index = batch.index.long().to(self.memory_s.device)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_data):
            raise KdscopeError(
                f"crd: batch indices must address the {self.n_data} training examples "
                "it was bound to"
            )
        e_s = self.embed_s(student.features[self._student_path])
        e_t = self.embed_t(teacher.features[self._teacher_path].detach())
        crd = self.contrast(e_s, e_t, self.candidates(index))
        if self.training:
            momentum_update(self.memory_s, index, e_s, self.momentum)
            momentum_update(self.memory_t, index, e_t, self.momentum)
        return {
            "ce": self.gamma * F.cross_entropy(student.logits, batch.label),
            "crd": self.beta * crd,
        }

    def extra_repr(self) -> str:
        return (
            f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}, "
            f"gamma={self.gamma}, beta={self.beta}, tau={self.tau}, "
            f"n_negatives={self.n_negatives}, feat_dim={self.feat_dim}, "
            f"momentum={self.momentum}, loss={self.loss!r}"
        )
