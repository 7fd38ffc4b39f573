"""The fast CPU inference route of UFOViT: the same math as the modules'
``forward`` (the reference), computed with fewer passes over the N-sized
tensors (docs/performance.md).

- Linear layers and convolutions run as oneDNN kernels with the bias and the
  GELU inside, eval-mode BatchNorms folded into the convolutions
  (:mod:`.kernels`); the pyramid's up-sampling writes NCHW directly.
- UFO attention folds XNorm(k^T v) into the output projection: since
  ``merge_heads(q @ kv) @ W^T = merge_heads(q) @ (blockdiag(kv) @ W^T)``, one
  (B, C, C) matrix, whose cost does not depend on N, turns the normalised
  queries into the output with one GEMM (no batched ``q @ kv``, no head-merging
  copy). The queries are normalised in place, tile by tile.
- Long inputs go through the attention and the MLP in tiles of
  ``tile_tokens`` tokens, so per-tile temporaries stay in cache (k^T v, a sum
  over tokens, adds up tile by tile).

:class:`CPUKernels` computes the steps that ``UFOBlock`` and the streamed
route compose (the block's residual structure is theirs, not this module's).
:func:`route_dtype` is the one check that decides whether it may run;
``UFOViT.kernels_for`` calls it. Each function takes the module whose
parameters it uses, so the reference and this route can never hold different
weights.
"""
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _NormBase

from ... import cpu_features
from ..ufo_attention import UFOAttention, accumulation_dtype, xnorm
from . import kernels

#: tokens per tile of the attention and the MLP on long inputs (0/None: no tiling)
TILE_TOKENS = 2048


def route_dtype(model: nn.Module, x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype the fast route computes ``model(x)`` in, or None when the
    reference modules must run: training mode, autograd needed, tracing /
    scripting / ONNX export / ``torch.compile`` (it compiles the reference math:
    inductor fails to lower the oneDNN pointwise ops), not CPU, a torch without
    the oneDNN kernels, a norm other than BatchNorm, a dtype other than float32
    (or bf16 autocast on a CPU with oneDNN bf16 primitives)."""
    if not kernels.ONEDNN_AVAILABLE or x.device.type != 'cpu' or model.training or \
            torch.jit.is_tracing() or torch.jit.is_scripting() or \
            torch.onnx.is_in_onnx_export() or kernels.compiling():
        return None
    weight = next(model.parameters(), None)
    if weight is None or torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in model.parameters())):
        return None
    convs = (model.patch_embed, model.fpn1, *(b.local_mp for b in model.blocks))
    if any(not kernels.foldable_bn(m) for part in convs for m in part.modules()
           if isinstance(m, (_NormBase, nn.GroupNorm, nn.LayerNorm))):
        return None  # only eval-mode BatchNorms fold into the convolutions
    dtype = kernels.cpu_autocast_dtype()
    if dtype is None:
        dtype = x.dtype
        if weight.dtype != dtype:
            return None
    if dtype == torch.bfloat16:
        # no oneDNN bf16 primitives on this CPU (AVX2 only): the kernels would raise
        return dtype if cpu_features.onednn_bf16_kernels() else None
    return dtype if dtype == torch.float32 else None


def linear(layer: nn.Linear, x: torch.Tensor, dtype: torch.dtype, act: str = 'none'):
    """``act(layer(x))`` as one oneDNN GEMM."""
    return kernels.linear(x, layer.weight, layer.bias, act, dtype)


def lpi(m: nn.Module, x: torch.Tensor, H: int, W: int, dtype: torch.dtype) -> torch.Tensor:
    """LPI: GELU inside the first depthwise convolution, BN folded into the second."""
    B, N, C = x.shape
    x = x.reshape(B, H, W, C).permute(0, 3, 1, 2)
    x = kernels.conv2d(x, m.conv1, m.conv1.weight, m.conv1.bias, 'gelu', dtype)
    x = kernels.bn_conv2d(x, m.bn, m.conv2, dtype)
    return x.permute(0, 2, 3, 1).reshape(B, N, C)


def tiled(fn, x: torch.Tensor, tile: Optional[int], out_dim: int, dtype: torch.dtype):
    """``fn`` over (B, N, C) ``x`` in tiles of ``tile`` tokens into one (B, N, out_dim)."""
    N = x.shape[1]
    if not tile or N <= tile:
        return fn(x)
    out = x.new_empty(x.shape[0], N, out_dim, dtype=dtype)
    for start in range(0, N, tile):
        out[:, start:start + tile] = fn(x[:, start:start + tile])
    return out


def mlp(m: nn.Module, x: torch.Tensor, dtype: torch.dtype, tile: Optional[int]):
    """Mlp: bias and GELU inside the first GEMM; the (tile, 4C) hidden
    activation stays in cache instead of a (N, 4C) one paged in at every call."""
    w1, b1, w2, b2 = (p.to(dtype) for p in (m.fc1.weight, m.fc1.bias, m.fc2.weight, m.fc2.bias))

    def run(t):
        return kernels.linear(kernels.linear(t, w1, b1, 'gelu', dtype), w2, b2, 'none', dtype)

    return tiled(run, x, tile, w2.shape[0], dtype)


def keys_times_values(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, T, h, d) keys and values -> k^T v (B, h, d, d) in float32 at least.

    bf16 inputs go to the bf16 GEMM as they are: it accumulates in float32
    (oneDNN and PyTorch's CPU GEMM both do), and only each tile's (d, d)
    result is rounded to bf16 before it is widened again. Other half types
    are widened first.
    """
    acc = accumulation_dtype(k)
    if k.dtype == v.dtype == torch.bfloat16:
        # Head-major copies first: the bf16 batched GEMM copies strided
        # operands itself, more slowly (0.40 vs 0.79 ms for 2048 tokens).
        k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        return (k.transpose(-2, -1) @ v).to(acc)
    return k.to(acc).permute(0, 2, 3, 1) @ v.to(acc).transpose(1, 2)


def ufo_key_values(attn: UFOAttention, x: torch.Tensor, dtype: torch.dtype,
                   tile: Optional[int]) -> torch.Tensor:
    """k^T v (B, h, d, d, float32; not normalised) of the tokens ``x``,
    ``tile`` tokens at a time: one GEMM for k and v, then their product."""
    B, N, C = x.shape
    h = attn.num_heads
    tile = tile if tile and N > tile else N
    w, b = attn.projection('kv')
    kv = None
    for start in range(0, N, tile):
        t = x[:, start:start + tile]
        kt, vt = kernels.linear(t, w, b, 'none', dtype).view(B, t.shape[1], 2, h, C // h).unbind(2)
        with torch.autocast(device_type='cpu', enabled=False):
            part = keys_times_values(kt, vt)
        kv = part if kv is None else kv.add_(part)
    return kv


def fold_kv_into_projection(attn: UFOAttention, kv: torch.Tensor, dtype: torch.dtype):
    """merge_heads(q @ kv) @ W^T = merge_heads(q) @ (blockdiag(kv) @ W^T): the
    (B, C, C) matrices (oneDNN's (out, in) layout) that take normalised
    queries straight to the output, and the projection's bias."""
    B, h, d, _ = kv.shape
    C = h * d
    with torch.autocast(device_type='cpu', enabled=False):
        # head i's d x d block times rows i*d..(i+1)*d of W^T -> (B, C, C);
        # O(C^2 d), independent of N
        fused = (kv @ attn.proj.weight.to(kv.dtype).t().reshape(h, d, C)).reshape(B, C, C)
    return [f.t().to(dtype).contiguous() for f in fused], attn.proj.bias.to(dtype)


def ufo_attention(attn: UFOAttention, x: torch.Tensor, kv: torch.Tensor, dtype: torch.dtype,
                  tile: Optional[int]) -> torch.Tensor:
    """UFOAttention of the tokens ``x`` given the normalised ``kv``: the
    queries ``tile`` tokens at a time (one GEMM each), their XNorm written
    straight into a token-major buffer, then one GEMM with XNorm(kv) folded
    into the output projection."""
    B, N, C = x.shape
    h = attn.num_heads
    tile = tile if tile and N > tile else N
    w, b = attn.projection('q')
    gamma_q = attn.gammas()[0].view(h, 1)
    q = x.new_empty(B, N, C, dtype=dtype)
    for start in range(0, N, tile):
        qt = kernels.linear(x[:, start:start + tile], w, b, 'none', dtype)
        qt = qt.view(B, qt.shape[1], h, C // h)
        xnorm(qt, gamma_q, dim=-1, eps=attn.eps, out=q[:, start:start + tile].view(qt.shape))
    fused, bias = fold_kv_into_projection(attn, kv, dtype)
    out = [kernels.linear(q[i], fused[i], bias, 'none', dtype) for i in range(B)]
    return out[0].unsqueeze(0) if B == 1 else torch.stack(out)


class CPUKernels:
    """Every step of :class:`~ufo_mm.models.ufo_vit.Kernels` with oneDNN's
    fused kernels, computing in ``dtype``, for a model in CPU inference
    (see :func:`route_dtype`); long inputs go through the attention and the
    MLP in tiles of ``tile_tokens`` tokens. Same results up to float rounding."""

    def __init__(self, dtype: torch.dtype, tile_tokens: Optional[int] = TILE_TOKENS):
        self.dtype, self.tile_tokens = dtype, tile_tokens

    def conv(self, conv, norm, act, x, padding=None):
        """The convolution with an eval-mode BatchNorm folded in and the GELU inside."""
        weight, bias = conv.weight, conv.bias
        if norm is not None:
            weight, bias = kernels.fold_bn(weight, bias, norm)
        return kernels.conv2d(x, conv, weight, bias, 'none' if act is None else 'gelu',
                              self.dtype, padding)

    def key_values(self, attn, x):
        return ufo_key_values(attn, x, self.dtype, self.tile_tokens)

    def attention(self, attn, x, kv=None):
        """UFO attention with XNorm(k^T v) folded into the output projection;
        another variant's own ``attend`` between oneDNN projections."""
        if kv is None and attn.sums_over_tokens:
            kv = attn.normalise_kv(self.key_values(attn, x))
        if kv is not None:
            return ufo_attention(attn, x, kv, self.dtype, self.tile_tokens)
        B, N, C = x.shape
        q, k, v = attn.heads(linear(attn.qkv, x, self.dtype), 3)
        return linear(attn.proj, attn.attend(q, k, v).transpose(1, 2).reshape(B, N, C),
                      self.dtype)

    def lpi(self, m, x, H, W):
        return lpi(m, x, H, W, self.dtype)

    def mlp(self, m, x):
        return mlp(m, x, self.dtype, self.tile_tokens)

    def adapt(self, adapter, x):
        """The up-sampling adapters as row-tiled GEMMs with the BN folded,
        written in NCHW (:func:`.kernels.upsample_nchw`)."""
        layers = kernels.upsampling_layers(adapter)
        return kernels.upsample_nchw(x, layers, self.dtype) if layers else adapter(x)
