"""Text classifiers and a span-prediction model over token ids (docs/models_and_datasets.md).

Every model reads (B, L) token ids (``PAD_ID`` = padding) and looks them up in its module
``embed`` (``perturb_at = "embed"``): a knowledge-point analysis adds its noise to the embedding
output, one σ per token shared over the embedding dimensions. Padding never influences a real
token: convolutions see zeros at padded positions, attention masks padded keys, pooling skips
them, and every hidden state is zeroed at padded positions (so padded positions add nothing to a
diagnosed feature either). The perturbation scale s is the RMS of the embedding
vectors of the inputs' real tokens (padding and ``<sep>`` excluded): :meth:`TokenModel.perturbation_scale`.

Classifiers name their layers like the image and point models: ``conv`` (text CNN: the last
convolution, max over real positions, pre-ReLU) or ``pool`` (Transformer: the masked mean of the
last block's states), then the head ``fc1``, ``fc2`` (pre-ReLU) and ``fc3`` (logits). The span
model names its Transformer blocks ``block1..blockN`` (hidden states, all positions) and ``span``
(start and end logits); its output is the joint span logits of :mod:`kdscope.datasets.text`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdscope.datasets.text import EXCLUDED_IDS, PAD_ID, SEP_ID
from kdscope.models.base import add_head, run_head
from kdscope.models.registry import register_model


def real_tokens(ids: Tensor) -> Tensor:
    """(B, L) bool: True at tokens that are units (not padding or special)."""
    return ~torch.isin(ids, torch.tensor(EXCLUDED_IDS, dtype=ids.dtype))


def after_separator(ids: Tensor) -> Tensor:
    """(B, L) bool: positions from the first ``<sep>`` on (a QA row's context segment)."""
    return torch.cumsum((ids == SEP_ID).long(), 1) > 0


class TokenModel(nn.Module):
    """Token embedding ``embed`` shared by the text models; noise goes on its output."""

    perturb_at = "embed"

    def __init__(self, vocab_size: int, embed_dim: int) -> None:
        super().__init__()
        if min(vocab_size, embed_dim) < 1:
            raise ValueError("vocab_size and embed_dim must be positive")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)

    def perturbation_scale(self, ids: Tensor) -> float:
        """s = sqrt(mean e²) over the embedding entries of the real tokens of ``ids``."""
        with torch.no_grad():
            e = self.embed(ids)[real_tokens(ids)]
        return float(e.double().pow(2).mean().sqrt()) if e.numel() else 1.0


class TextCNN(TokenModel):
    """Embedding → 1-D convolutions (``stem``, ``stage1``, ...; kernel k, ReLU) → ``conv`` (a
    last convolution, max over the real positions, pre-ReLU) → head ``fc1``, ``fc2``, ``fc3``."""

    roles = {"middle": "stem", "last_conv": "conv", "penultimate": "fc2_act", "logits": "fc3"}
    diagnosable = ("conv", "fc1", "fc2")

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        embed_dim: int,
        widths: list[int],
        global_features: int,
        hidden: int,
        kernel: int = 3,
    ) -> None:
        super().__init__(vocab_size, embed_dim)
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(widths))]
        c_in = embed_dim
        for name, c_out in zip(self.stage_names, widths, strict=True):
            self.add_module(name, MaskedConv(c_in, c_out, kernel, relu=True))
            c_in = c_out
        self.conv = MaskedConv(c_in, global_features, kernel, relu=False, pool=True)
        self.conv_act = nn.ReLU()
        add_head(self, global_features, hidden, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != PAD_ID).unsqueeze(1)  # (B, 1, L)
        h = self.embed(ids).transpose(1, 2)
        for name in self.stage_names:
            h = getattr(self, name)(h, mask)
        return run_head(self, self.conv_act(self.conv(h, mask)))


class MaskedConv(nn.Module):
    """Conv1d over (B, C, L) with the input zeroed at padded positions; output zeroed there too,
    or (``pool``) the maximum over unpadded positions (0 for an all-padding row)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, relu: bool, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.relu, self.pool = relu, pool

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        z = self.conv(h * mask)
        if self.relu:
            z = F.relu(z)
        if not self.pool:
            return z * mask
        pooled = z.masked_fill(~mask, -math.inf).amax(2)
        return torch.where(mask.any(2), pooled, torch.zeros_like(pooled))


class Block(nn.Module):
    """A pre-norm Transformer block: h + MHA(LN(h)) over unpadded keys, then h + MLP(LN(h));
    states at padded positions are set to 0."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the model width {dim} must be divisible by heads={heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        keys = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]  # unpadded keys only
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keys
        )
        h = h + self.out(att.transpose(1, 2).reshape(b, n, d))
        h = h + self.mlp(self.norm2(h))
        return h * mask[..., None]


class Encoder(TokenModel):
    """Token embedding (``embed``, perturbed) + learned positions (+ segments) → blocks
    ``block1..blockN``. Segment 1 marks the tokens after the first ``<sep>`` (a QA context)."""

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        max_length: int,
        segments: bool,
    ) -> None:
        super().__init__(vocab_size, dim)
        if depth < 1 or max_length < 1:
            raise ValueError("depth and max_length must be positive")
        self.position = nn.Embedding(max_length, dim)
        self.segment = nn.Embedding(2, dim) if segments else None
        self.block_names = [f"block{i}" for i in range(1, depth + 1)]
        for name in self.block_names:
            self.add_module(name, Block(dim, heads, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.max_length = max_length

    def encode(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L, dim) final states (layer-normed, 0 at padding) and the (B, L) padding mask."""
        if ids.shape[1] > self.max_length:
            raise ValueError(f"inputs of {ids.shape[1]} tokens exceed max_length={self.max_length}")
        mask = ids != PAD_ID
        h = self.embed(ids) + self.position.weight[: ids.shape[1]]
        if self.segment is not None:
            h = h + self.segment(after_separator(ids).long())
        for name in self.block_names:
            h = getattr(self, name)(h, mask)
        return self.norm(h) * mask[..., None], mask


class MaskedMean(nn.Module):
    """(B, L, d), (B, L) mask → (B, d): the mean over unpadded positions (0 if none)."""

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextTransformer(Encoder):
    """Transformer sentence classifier: blocks, ``pool`` (masked mean of the final states, the
    pooled sentence representation) and the head ``fc1``, ``fc2``, ``fc3``."""

    roles = {"middle": "block1", "last_conv": "pool", "penultimate": "fc2_act", "logits": "fc3"}
    diagnosable = ("pool", "fc1", "fc2")

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        dim: int,
        depth: int,
        heads: int,
        hidden: int,
        max_length: int,
    ) -> None:
        super().__init__(vocab_size, dim, depth, heads, max_length, segments=False)
        self.pool = MaskedMean()
        add_head(self, dim, hidden, num_classes)

    def forward(self, ids: Tensor) -> Tensor:
        return run_head(self, self.pool(*self.encode(ids)))


def context_positions(ids: Tensor) -> Tensor:
    """(B, L) bool: the context tokens of ``[question] <sep> [context]`` rows (after the first
    ``<sep>``, not padding)."""
    return after_separator(ids) & real_tokens(ids)


class SpanHead(nn.Module):
    """(B, L, d) states and (B, L) context mask → (B, L·L) joint span logits
    z_{iL+j} = s_i + e_j from start/end logits. Positions outside the context get start and end
    logits ``MARGIN`` below the lowest context logit of their row (a probability below
    e^−30 of any context position's: answers lie in the context), finite so that entropies and
    KL terms stay defined."""

    MARGIN = 30.0

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def start_end(self, h: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """(B, L) start and end logits, positions outside the context pushed down."""
        z = self.proj(h)  # (B, L, 2)
        keep = context | ~context.any(1, keepdim=True)  # a row without context keeps all
        low = z.masked_fill(~keep[..., None], math.inf).amin(1, keepdim=True).detach()
        z = torch.where(keep[..., None], z, low - self.MARGIN)
        return z[..., 0], z[..., 1]

    def forward(self, h: Tensor, context: Tensor) -> Tensor:
        start, end = self.start_end(h, context)
        return (start[:, :, None] + end[:, None, :]).flatten(1)


def _span_length(num_classes: int) -> int:
    length = math.isqrt(num_classes)
    if length * length != num_classes:
        raise ValueError(
            f"a span model needs L*L span classes for inputs of L tokens, got {num_classes}"
        )
    return length


def _span_roles(model: nn.Module, blocks: list[str]) -> None:
    model.roles = {
        "middle": blocks[(len(blocks) - 1) // 2],
        "last_conv": blocks[-1],
        "penultimate": blocks[-1],
        "logits": "span",
    }
    model.diagnosable = tuple(blocks)


class SpanTransformer(Encoder):
    """Extractive QA: a Transformer encoder over ``[question] <sep> [context]`` (segment
    embeddings tell the two apart) and a linear start/end head ``span``; ``num_classes`` = L²
    span classes for inputs of L tokens."""

    def __init__(self, num_classes: int, vocab_size: int, dim: int, depth: int, heads: int) -> None:
        super().__init__(vocab_size, dim, depth, heads, _span_length(num_classes), segments=True)
        self.span = SpanHead(dim)
        _span_roles(self, self.block_names)

    def forward(self, ids: Tensor) -> Tensor:
        h, _ = self.encode(ids)
        return self.span(h, context_positions(ids))


class LSTMBlock(nn.Module):
    """A bidirectional LSTM over the unpadded tokens of each row (packed, so padding never
    reaches a real token): (B, L, d_in) → (B, L, 2·hidden), 0 at padded positions."""

    def __init__(self, d_in: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True, bidirectional=True)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths, True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, True, total_length=h.shape[1])
        return out * mask[..., None]


class SpanLSTM(TokenModel):
    """Extractive QA with stacked bidirectional LSTMs ``block1..blockN`` over token + segment
    embeddings and the start/end head ``span`` (rows hold their tokens first, then padding)."""

    def __init__(self, num_classes: int, vocab_size: int, dim: int, depth: int) -> None:
        super().__init__(vocab_size, dim)
        if depth < 1:
            raise ValueError("depth must be positive")
        _span_length(num_classes)
        self.segment = nn.Embedding(2, dim)
        self.block_names = [f"block{i}" for i in range(1, depth + 1)]
        for i, name in enumerate(self.block_names):
            self.add_module(name, LSTMBlock(dim if i == 0 else 2 * dim, dim))
        self.span = SpanHead(2 * dim)
        _span_roles(self, self.block_names)

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != PAD_ID
        h = self.embed(ids) + self.segment(after_separator(ids).long())
        for name in self.block_names:
            h = getattr(self, name)(h, mask)
        return self.span(h, context_positions(ids))


@register_model("text_cnn")
def text_cnn(
    num_classes: int, vocab_size: int, width: int = 32, embed_dim: int = 32, kernel: int = 3
) -> TextCNN:
    """Student-size text CNN: one convolution of w channels, ``conv`` of 2w, head of w units."""
    w = width
    return TextCNN(num_classes, vocab_size, embed_dim, [w], 2 * w, w, kernel)


@register_model("text_cnn_large")
def text_cnn_large(
    num_classes: int, vocab_size: int, width: int = 32, embed_dim: int = 64, kernel: int = 3
) -> TextCNN:
    """Teacher-size text CNN: convolutions of w and 2w channels, ``conv`` of 4w, head of 2w."""
    w = width
    return TextCNN(num_classes, vocab_size, embed_dim, [w, 2 * w], 4 * w, 2 * w, kernel)


@register_model("text_transformer")
def text_transformer(
    num_classes: int,
    vocab_size: int,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    max_length: int = 128,
) -> TextTransformer:
    """Transformer sentence classifier (head of ``dim`` units)."""
    return TextTransformer(num_classes, vocab_size, dim, depth, heads, dim, max_length)


@register_model("span_transformer")
def span_transformer(
    num_classes: int, vocab_size: int, dim: int = 64, depth: int = 2, heads: int = 4
) -> SpanTransformer:
    """Span-prediction Transformer for extractive QA (``num_classes`` = L² for L tokens)."""
    return SpanTransformer(num_classes, vocab_size, dim, depth, heads)


@register_model("span_lstm")
def span_lstm(num_classes: int, vocab_size: int, dim: int = 64, depth: int = 2) -> SpanLSTM:
    """Span-prediction BiLSTM for extractive QA (``num_classes`` = L² for L tokens)."""
    return SpanLSTM(num_classes, vocab_size, dim, depth)
