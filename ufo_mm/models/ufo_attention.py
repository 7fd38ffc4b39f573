"""UFO attention: softmax-free, linear-complexity self-attention (UFO-ViT).

Shapes: B batch, N tokens, C channels, h heads, d = C / h head channels.

    q, k, v = split(qkv(x))               each (B, h, N, d)
    kv      = k^T v                       (B, h, d, d)   keys times values first: O(N d^2)
    out     = XNorm(q) @ XNorm(kv)        (B, h, N, d)
    out     = proj(merge_heads(out))      (B, N, C)

No N x N tensor is ever formed, so time and memory grow linearly with N.

How it is computed (same result, fewer passes over the N-sized tensors):
the output projection is linear, so ``merge_heads(XNorm(q) @ kv) @ W^T`` equals
``merge_heads(XNorm(q)) @ (blockdiag(kv) @ W^T)``. ``UFOAttention.forward``
first folds the (B, h, d, d) key-values into the projection weight, a (B, C, C)
matrix whose cost does not depend on N, and then needs one GEMM over the
tokens instead of a batched ``q @ kv``, a head-merging copy and the projection.
q is normalised while it is copied out of the fused qkv output, which gives
the (B, N, C) token-major layout that GEMM wants.
"""
from typing import Optional

import torch
import torch.nn as nn

from . import cpu_fusion

KV_NORM_DIMS = (-2, -1)
# Tokens per tile of UFOAttention and the MLP in CPU inference on long inputs
# (docs/performance.md); 0 or None turns tiling off.
INFERENCE_TILE_TOKENS = 2048


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
    attention alone."""

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

    def split_heads(self, x: torch.Tensor):
        """(B, N, C) -> q, k, v, each a (B, h, N, d) view of one projection."""
        B, N, C = x.shape
        h = self.num_heads
        return self.linear(self.qkv, x).reshape(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4) \
            .unbind(0)

    def merge_heads(self, out: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) -> projected (B, N, C)."""
        B, h, N, d = out.shape
        return self.proj_drop(self.linear(self.proj, out.transpose(1, 2).reshape(B, N, h * d)))

    @staticmethod
    def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``layer(x)``; in CPU inference through oneDNN's GEMM with the bias
        inside, about 25% faster in fp32 than the plain addmm at these shapes."""
        dtype = cpu_fusion.inference_dtype(x, layer)
        if dtype is None:
            return layer(x)
        return cpu_fusion.linear(x, layer.weight, layer.bias, 'none', dtype)


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
    #: tokens per tile in inference on long inputs (see ``INFERENCE_TILE_TOKENS``)
    tile_tokens: Optional[int] = INFERENCE_TILE_TOKENS

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

    def _tile(self, x: torch.Tensor) -> int:
        """Tokens per tile: ``tile_tokens`` in inference (no autograd, no trace)
        on inputs longer than that, else all of them."""
        N = x.shape[1]
        if not self.tile_tokens or N <= self.tile_tokens or torch.jit.is_tracing() or \
                (torch.is_grad_enabled() and (x.requires_grad or self.qkv.weight.requires_grad)):
            return N
        return self.tile_tokens

    def _qkv(self, x: torch.Tensor):
        """(B, T, C) -> q, k, v: (B, T, h, d) views into the fused projection."""
        B, T, C = x.shape
        return self.linear(self.qkv, x).view(B, T, 3, self.num_heads, C // self.num_heads) \
            .unbind(2)

    @staticmethod
    def _keys_times_values(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, T, h, d) keys and values -> k^T v (B, h, d, d) in float32 at least.

        bf16 inputs go to the bf16 GEMM as they are: it accumulates in float32
        (oneDNN and PyTorch's CPU GEMM both do), and only the (d, d) result is
        rounded before it is widened again. Other half types are widened first.
        """
        acc = accumulation_dtype(k)
        if k.dtype == v.dtype == torch.bfloat16 and k.device.type == 'cpu':
            # Head-major copies first: the bf16 batched GEMM copies strided
            # operands itself, more slowly (0.40 vs 0.79 ms for 2048 tokens).
            k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
            return (k.transpose(-2, -1) @ v).to(acc)
        return k.to(acc).permute(0, 2, 3, 1) @ v.to(acc).transpose(1, 2)

    def _normalised_queries(self, q: torch.Tensor, out: Optional[torch.Tensor] = None):
        """XNorm of (B, T, h, d) queries as a (B, T, C) tensor (into ``out`` if given)."""
        B, T, h, d = q.shape
        gamma_q = (self.gamma if self.seed_compat else self.gamma_q).view(h, 1)
        if out is None:
            return xnorm(q, gamma_q, dim=-1, eps=self.eps).reshape(B, T, h * d)
        # Inference on tiles: written straight into the tile of ``out``.
        xnorm(q, gamma_q, dim=-1, eps=self.eps, out=out.view(B, T, h, d))
        return out

    def queries_and_kv(self, x: torch.Tensor, tile: int):
        """The pass over the tokens: XNorm'd queries (B, N, C) and k^T v
        (B, h, d, d, float32 at least; not yet normalised), ``tile`` tokens at
        a time.

        Long inputs in inference: the (T, 3C) projection of one tile at a time
        stays in cache and below malloc's mmap threshold (a full (N, 3C) one is
        page-faulted in anew at every call); k^T v is a sum over tokens, so it
        adds up tile by tile.
        """
        B, N, C = x.shape
        kv = q = None
        for start in range(0, N, tile):
            qt, kt, vt = self._qkv(x[:, start:start + tile])
            # k^T v sums N products per entry: accumulated in fp16/bf16 it would
            # overflow or lose all precision at large N, so it accumulates in
            # float32, with autocast off (see _keys_times_values). The cost is
            # O(N d^2), small next to the projections.
            with torch.autocast(device_type=x.device.type, enabled=False):
                part = self._keys_times_values(kt, vt)
            kv = part if kv is None else kv.add_(part)
            if tile >= N:
                q = self._normalised_queries(qt)
            else:
                if q is None:
                    q = x.new_empty(B, N, C, dtype=qt.dtype)
                self._normalised_queries(qt, out=q[:, start:start + tile])
        return q, kv

    def output_weight(self, kv: torch.Tensor, dtype: torch.dtype):
        """XNorm'd key-values folded into the output projection: the (B, C, C)
        matrix and the (C,) bias that turn queries into the attention output,
        in ``dtype``."""
        B, h, d, _ = kv.shape
        C = h * d
        gamma_kv = self.gamma if self.seed_compat else self.gamma_kv
        with torch.autocast(device_type=kv.device.type, enabled=False):
            kv = self.attn_drop(xnorm(kv, gamma_kv, dim=self.kv_norm_dim, eps=self.eps))
            # blockdiag(kv) @ W^T: head i's d x d block times rows i*d..(i+1)*d
            # of W^T -> (B, C, C); O(C^2 d), independent of N.
            weight = self.proj.weight.to(kv.dtype).t().reshape(h, d, C)
            fused = (kv @ weight).reshape(B, C, C)
        return fused.to(dtype), self.proj.bias.to(dtype)

    def project(self, q: torch.Tensor, fused: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(B, T, C) queries -> (B, T, C) attention output: ``q @ fused + bias``."""
        if cpu_fusion.inference_dtype(q, self.proj) is not None:
            # oneDNN's GEMM wants the weight as (out, in): fused^T, C x C per image
            out = [cpu_fusion.linear(q[b], fused[b].t().contiguous(), bias, 'none', q.dtype)
                   for b in range(q.shape[0])]
            return out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)
        # addmm is faster than baddbmm for one matrix; a trace keeps the batched
        # op so that an exported graph accepts any batch size.
        if q.shape[0] == 1 and not torch.jit.is_tracing():
            return torch.addmm(bias, q[0], fused[0]).unsqueeze(0)
        return torch.baddbmm(bias, q, fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, kv = self.queries_and_kv(x, self._tile(x))
        fused, bias = self.output_weight(kv, q.dtype)
        return self.proj_drop(self.project(q, fused, bias))
