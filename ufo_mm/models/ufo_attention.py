"""UFO attention: softmax-free, linear-complexity self-attention (UFO-ViT).

Shapes: B batch, N tokens, C channels, h heads, d = C / h head channels.

    q, k, v = split_heads(qkv(x))         each (B, h, N, d)
    kv      = k^T v                       (B, h, d, d)   keys times values first: O(N d^2)
    out     = XNorm(q) @ XNorm(kv)        (B, h, N, d)
    out     = proj(merge_heads(out))      (B, N, C)

No N x N tensor is ever formed, so time and memory grow linearly with N.
``UFOAttention.forward`` is exactly these lines; it serves training, autograd,
export and as the reference. CPU inference takes a faster route with the same
result (``ufo_mm.models.fast``), checked against this one by the tests.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

KV_NORM_DIMS = (-2, -1)


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision tensors, the tensor's own dtype otherwise."""
    return torch.promote_types(x.dtype, torch.float32)


def xnorm(x: torch.Tensor, gamma: torch.Tensor, dim: int = -1, eps: float = 1e-6,
          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-normalisation: ``gamma * x / max(||x||_2, eps)`` along ``dim``.

    The norm is accumulated in float32 whatever the input dtype, because in
    fp16 a sum of squares overflows (65504) long before the values do, and
    ``eps`` = 1e-6 is not representable in fp16. The result has ``x``'s dtype.

    Args:
        x: any tensor, e.g. (B, h, N, d) queries or (B, h, d, d) key-values.
        gamma: learnable scale broadcastable to ``x`` (per head: (h, 1, 1)).
        dim: axis whose vectors become (gamma-scaled) unit vectors.
        eps: lower bound of the norm; an all-zero vector maps to zeros rather
            than NaN. ``eps=0`` reproduces implementations without epsilon
            (an all-zero vector then gives NaN).
        out: optional tensor of ``x``'s shape and dtype to write the result
            into (no autograd). The per-vector scale is then rounded to
            ``x``'s dtype first (and for half-precision ``x`` expanded to its
            shape), so the product writes ``x``'s dtype directly, with no
            float32 temporary of ``x``'s size.
    """
    acc = accumulation_dtype(x)
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=acc)
    if eps > 0:
        norm = norm.clamp_min(eps)
    scale = gamma.to(acc) / norm
    if out is not None:
        scale = scale.to(x.dtype)
        if x.dtype != torch.float32:
            # Half-precision products with a broadcast scale take a slow
            # element-wise loop (0.39 vs 0.17 ms for 2048 x 8 x 48 in bf16):
            # the scale is expanded to x's shape first.
            scale = scale.expand_as(x).contiguous()
        return torch.mul(x, scale, out=out)
    # x (any float dtype) times a float32 scale computes in float32 in one pass.
    return (x * scale).to(x.dtype)


class QKVAttentionBase(nn.Module):
    """Fused q/k/v projection and output projection shared by every attention
    variant of the backbone (UFO, softmax, XCA), so that ablations differ in the
    attention alone: ``forward(x) = merge_heads(attend(*split_heads(x)))``, and
    each variant defines ``attend(q, k, v)`` on (B, h, N, d) tensors."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    #: the attention mixes tokens only through a sum over them (UFO's k^T v):
    #: computed band by band, it is the sum of the bands' (``ufo_mm.streaming``)
    sums_over_tokens = False

    def heads(self, t: torch.Tensor, n: int):
        """(B, N, n * C) projections -> n tensors (B, h, N, d), views of ``t``."""
        B, N, _ = t.shape
        return t.reshape(B, N, n, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def projection(self, part: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight and bias of the queries ('q') or of the keys and values ('kv'):
        rows [0, C) and [C, 3C) of the fused q/k/v projection."""
        C = self.qkv.in_features
        rows = slice(0, C) if part == 'q' else slice(C, 3 * C)
        bias = self.qkv.bias
        return self.qkv.weight[rows], None if bias is None else bias[rows]

    def split_heads(self, x: torch.Tensor):
        """(B, N, C) -> q, k, v, each a (B, h, N, d) view of one projection."""
        return self.heads(self.qkv(x), 3)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> q (B, h, N, d)."""
        return self.heads(F.linear(x, *self.projection('q')), 1)[0]

    def keys_and_values(self, x: torch.Tensor):
        """(B, N, C) -> k, v, each (B, h, N, d)."""
        return self.heads(F.linear(x, *self.projection('kv')), 2)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) -> projected (B, N, C)."""
        B, h, N, d = out.shape
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, h * d)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        return self.merge_heads(self.attend(*self.split_heads(x)))


class UFOAttention(QKVAttentionBase):
    """UFO self-attention on a token sequence.

    Args:
        dim: channels C of the tokens.
        num_heads: heads h; ``dim`` must be divisible by it.
        qkv_bias: bias of the fused q/k/v projection.
        attn_drop: dropout on the normalised key-value matrix.
        proj_drop: dropout after the output projection.
        kv_norm_dim: axis of the (B, h, d, d) key-value matrix that XNorm
            normalises. -2 (default, docs/model.md section 1): the key-channel axis,
            so each of the d columns that meets q in ``q @ kv`` (a "cluster") is
            a unit vector and ``q @ kv`` is a cosine similarity between every
            token and every cluster. -1 normalises the rows instead.
        eps: epsilon of XNorm (see :func:`xnorm`).
        seed_compat: reproduce the widely copied External-Attention-pytorch
            ``UFOAttention`` snippet: ONE gamma shared by q and kv, initialised
            from ``randn`` (can be negative), kv normalised over its last axis,
            no epsilon. Overrides ``kv_norm_dim`` and ``eps``. For comparison
            only; not what the shipped configs use.

    Shape:
        x: (B, N, C) -> (B, N, C).
    """
    sums_over_tokens = True

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., kv_norm_dim: int = -2,
                 eps: float = 1e-6, seed_compat: bool = False):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if kv_norm_dim not in KV_NORM_DIMS:
            raise ValueError(f'kv_norm_dim must be one of {KV_NORM_DIMS}, got {kv_norm_dim}')
        self.seed_compat = seed_compat
        self.kv_norm_dim = -1 if seed_compat else kv_norm_dim
        self.eps = 0. if seed_compat else eps
        if seed_compat:
            self.gamma = nn.Parameter(torch.randn(num_heads, 1, 1))
        else:
            self.gamma_q = nn.Parameter(torch.ones(num_heads, 1, 1))
            self.gamma_kv = nn.Parameter(torch.ones(num_heads, 1, 1))

    def gammas(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """XNorm scales (h, 1, 1) of the queries and of the key-values."""
        if self.seed_compat:
            return self.gamma, self.gamma
        return self.gamma_q, self.gamma_kv

    def key_values(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """k^T v: (B, h, N, d) keys and values -> (B, h, d, d), float32 at least.

        It sums N products per entry: in fp16/bf16 it would overflow or lose
        all precision at large N, so it is computed with autocast off, in
        float32 (the input's dtype if wider). A sum over tokens, it may also be
        added up over parts of the tokens (``ufo_mm.streaming``).
        """
        with torch.autocast(device_type=k.device.type, enabled=False):
            acc = accumulation_dtype(k)
            return k.to(acc).transpose(-2, -1) @ v.to(acc)

    def normalise_kv(self, kv: torch.Tensor) -> torch.Tensor:
        """XNorm of the (B, h, d, d) key-value matrix (its norms in float32)."""
        with torch.autocast(device_type=kv.device.type, enabled=False):
            return self.attn_drop(xnorm(kv, self.gammas()[1], dim=self.kv_norm_dim,
                                        eps=self.eps))

    def normalised_kv(self, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """XNorm(k^T v): (B, h, N, d) keys and values -> (B, h, d, d), float32 at least."""
        return self.normalise_kv(self.key_values(k, v))

    def attend_normalised(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """XNorm(q) @ kv for a normalised key-value matrix ``kv``: (B, h, N, d)."""
        q = xnorm(q, self.gammas()[0], dim=-1, eps=self.eps)
        return q @ kv.to(q.dtype)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """XNorm(q) @ XNorm(k^T v): (B, h, N, d) each -> (B, h, N, d)."""
        return self.attend_normalised(q, self.normalised_kv(k, v))
