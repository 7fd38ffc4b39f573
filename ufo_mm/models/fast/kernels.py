"""Fused CPU inference kernels of the fast route (docs/performance.md).

In inference on CPU (no autograd, no tracing) the fast route calls oneDNN's
fused kernels, the ones torch.compile's CPU backend calls:
``torch.ops.mkldnn._linear_pointwise`` and ``_convolution_pointwise``. They
apply the bias and an activation (GELU) inside the GEMM / convolution, so an
activation tensor is written once instead of three times; an eval-mode
BatchNorm right after a convolution is folded into its weight and bias. The
pyramid's up-sampling (2x2 stride-2 transposed convolutions) runs as row-tiled
GEMMs that write NCHW directly (:func:`upsample_nchw`). Each result equals the
plain ``Conv -> BN -> GELU`` (or ``Linear -> GELU``) one up to float rounding.
Under bf16 autocast the kernels run in bf16, as autocast's own linear/conv
would; they need oneDNN's bf16 primitives
(:func:`ufo_mm.cpu_features.onednn_bf16_kernels`), which AVX2-only CPUs lack.
A missing kernel (another torch build) only makes the fast route unavailable
(``ONEDNN_AVAILABLE``).
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


_OPS = ('_linear_pointwise', '_convolution_pointwise')


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and \
            all(hasattr(torch.ops.mkldnn, op) for op in _OPS)
    except (AttributeError, RuntimeError):
        return False


ONEDNN_AVAILABLE = _available()


def cpu_autocast_dtype() -> Optional[torch.dtype]:
    """The dtype of an active CPU autocast region, or None outside one
    (``torch.is_autocast_enabled('cpu')`` where this torch has it, the older
    ``is_autocast_cpu_enabled`` API otherwise)."""
    try:
        if torch.is_autocast_enabled('cpu'):
            return torch.get_autocast_dtype('cpu')
        return None
    except TypeError:  # torch < 2.4: no device argument
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def compiling() -> bool:
    """Inside ``torch.compile``'s tracing (``torch.compiler.is_compiling``,
    torch >= 2.3; False where this torch has no such API)."""
    check = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    return bool(check()) if check is not None else False


def foldable_bn(norm: nn.Module) -> bool:
    """An eval-mode BatchNorm with running statistics: an affine map to fold."""
    return isinstance(norm, _BatchNorm) and not norm.training and \
        norm.running_mean is not None and norm.running_var is not None


def bn_affine(bn: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel float32 (scale, shift) with ``bn(x) = x * scale + shift`` in eval mode."""
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
    return scale, shift


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: _BatchNorm,
            out_dim: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution; ``out_dim`` is the
    weight's output-channel axis (0 for Conv2d, 1 for ConvTranspose2d)."""
    scale, shift = bn_affine(bn)
    if bias is not None:
        shift = shift + bias.float() * scale
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    return weight.float() * scale.view(shape), shift


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           act: str, dtype: torch.dtype) -> torch.Tensor:
    """``act(x @ weight^T + bias)``; act 'gelu' (exact, erf) or 'none'."""
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), act, [],
        'none' if act == 'gelu' else '')


def conv2d(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor,
           bias: Optional[torch.Tensor], act: str, dtype: torch.dtype,
           padding=None) -> torch.Tensor:
    """``act(conv(x))`` with ``conv``'s geometry (``padding``, if given,
    instead of its own) and the given weight and bias."""
    if isinstance(conv.padding, str) or conv.padding_mode != 'zeros':
        raise ValueError('fused conv2d needs numeric zero padding')
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
        list(conv.padding if padding is None else padding), list(conv.stride), list(conv.dilation), conv.groups, act, [],
        'none' if act == 'gelu' else '')


def bn_conv2d(x: torch.Tensor, bn: _BatchNorm, conv: nn.Conv2d,
              dtype: torch.dtype) -> torch.Tensor:
    """``conv(bn(x))`` for an eval-mode BatchNorm before a stride-1 convolution
    with 'same' zero padding, as ONE convolution with the BN folded in.

    Folding a BN into the convolution AFTER it is exact except at the borders:
    there the convolution pads ``bn(x)`` with zeros, the folded one pads ``x``
    (i.e. ``bn(x)`` with the BN's shift). So the folded result is used inside
    and the ``padding``-wide border strips are recomputed the plain way, from
    thin slices of ``x``. Inputs too small to have an inside run plainly.
    """
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != 'zeros' or \
            (ph, pw) != (kh // 2, kw // 2) or not (kh % 2 and kw % 2):
        raise ValueError('bn_conv2d needs a stride-1 convolution with odd kernel and same padding')
    H, W = x.shape[-2:]
    scale, shift = bn_affine(bn)

    def plain(t):
        t = (t.float() * scale.view(-1, 1, 1) + shift.view(-1, 1, 1)).to(dtype)
        return F.conv2d(t, conv.weight.to(dtype), None if conv.bias is None else conv.bias.to(dtype),
                        1, conv.padding, 1, conv.groups)

    if H <= 2 * ph or W <= 2 * pw:
        return plain(x)
    # input channel of weight[o, i]: (o // (C_out / g)) * (C_in / g) + i
    c_out, c_in_g = conv.weight.shape[:2]
    idx = (torch.arange(c_out).view(-1, 1) // (c_out // conv.groups)) * c_in_g + \
        torch.arange(c_in_g).view(1, -1)
    weight = conv.weight.float()
    folded_w = weight * scale[idx][..., None, None]
    folded_b = (weight * shift[idx][..., None, None]).sum((1, 2, 3))
    if conv.bias is not None:
        folded_b = folded_b + conv.bias.float()
    out = F.conv2d(x.to(dtype), folded_w.to(dtype), folded_b.to(dtype), 1, conv.padding, 1,
                   conv.groups)
    out[..., :ph, :] = plain(x[..., :2 * ph, :])[..., :ph, :]
    out[..., H - ph:, :] = plain(x[..., H - 2 * ph:, :])[..., ph:, :]
    out[..., :, :pw] = plain(x[..., :, :2 * pw])[..., :, :pw]
    out[..., :, W - pw:] = plain(x[..., :, W - 2 * pw:])[..., :, pw:]
    return out


def upsampling_layers(seq: nn.Module) -> Optional[List[Tuple[torch.Tensor, torch.Tensor, str]]]:
    """``seq`` as a chain of stride-2 2x2 transposed convolutions, each with an
    optional eval-mode BatchNorm (folded) and GELU after it, or None when it
    is anything else. Each layer is ``(matrix, bias, act)``: the (4 * C_out,
    C_in) matrix whose row ``(a * 2 + b) * C_out + c`` gives output channel
    ``c`` at sub-pixel ``(a, b)``, its bias column (4 * C_out, 1), and 'gelu'
    or 'none'."""
    mods = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    layers, i = [], 0
    while i < len(mods):
        conv = mods[i]
        if not (type(conv) is nn.ConvTranspose2d and conv.kernel_size == (2, 2) and
                conv.stride == (2, 2) and conv.padding == (0, 0) and
                conv.output_padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1):
            return None
        weight = conv.weight
        bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[1])
        i += 1
        if i < len(mods) and isinstance(mods[i], _BatchNorm):
            if not foldable_bn(mods[i]):
                return None
            weight, bias = fold_bn(weight, bias, mods[i], out_dim=1)
            i += 1
        act = 'none'
        if i < len(mods) and type(mods[i]) is nn.GELU and mods[i].approximate == 'none':
            act, i = 'gelu', i + 1
        c_in, c_out = weight.shape[:2]
        layers.append((weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in),
                       bias.repeat(4).view(-1, 1), act))
    return layers


#: output elements per row tile of :func:`upsample_nchw` (16 MB in fp32)
UPSAMPLE_TILE_ELEMS = 1 << 22


def upsample_nchw(x: torch.Tensor, layers: List[Tuple[torch.Tensor, torch.Tensor, str]],
                  dtype: torch.dtype, tile_elems: int = UPSAMPLE_TILE_ELEMS) -> torch.Tensor:
    """Apply :func:`upsampling_layers`' chain to (B, C, H, W) ``x``; the result
    is a contiguous NCHW (B, C_out, H * 2^L, W * 2^L) tensor of ``dtype``.

    A 2x2 stride-2 transposed convolution is one GEMM per input pixel, so it
    runs as ``matrix @ X`` on a band of input rows (X: (C_in, rows * W), a
    view of the NCHW input) and the sub-pixels are interleaved into place.
    The band goes through the whole chain while it is in cache, and the
    output is written once, in NCHW. oneDNN's convolution instead writes a
    channels_last result that then needs a full transposing copy: at 2048^2
    that copy of a 400 MB stride-4 map took as long as the convolution.
    """
    B, C, H, W = x.shape
    x = x.to(dtype, memory_format=torch.contiguous_format)
    mats = [(m.to(dtype), b.to(dtype), act) for m, b, act in layers]
    f = 2 ** len(mats)
    c_out = mats[-1][0].shape[0] // 4
    out = x.new_empty(B, c_out, H * f, W * f)
    rows = max(1, tile_elems // (c_out * f * f * W))
    for n in range(B):
        for i0 in range(0, H, rows):
            r0 = min(rows, H - i0)
            r, w = r0, W
            t = x[n, :, i0:i0 + r0]  # (C, r0, W)
            for k, (matrix, bias, act) in enumerate(mats):
                co = matrix.shape[0] // 4
                y = torch.addmm(bias, matrix, t.reshape(t.shape[0], r * w))  # (4 co, r w)
                if act == 'gelu':
                    torch.ops.aten.gelu_(y)
                # rows (a, b, c), columns (i, j) -> (c, i, a, j, b) = (c, 2 i + a, 2 j + b)
                y = y.view(2, 2, co, r, w).permute(2, 3, 0, 4, 1)
                if k + 1 < len(mats):
                    t = y.reshape(co, 2 * r, 2 * w)
                else:
                    out[n, :, i0 * f:(i0 + r0) * f].view(co, r, 2, w, 2).copy_(y)
                r, w = 2 * r, 2 * w
    return out


def _register_flop_formulas():
    """Let torch's FlopCounterMode count the fused kernels as it counts
    nn.Linear / nn.Conv2d (2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula
    mk = torch.ops.mkldnn

    def register(op, formula):
        if op not in flop_registry:
            register_flop_formula(op)(formula)

    def linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]

    def conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        # weight (C_out, C_in / groups, kh, kw): each output element costs C_in/g*kh*kw
        return 2 * math.prod(out_shape) * math.prod(w_shape[1:])

    register(mk._linear_pointwise, linear_flops)
    register(mk._convolution_pointwise, conv_flops)


if ONEDNN_AVAILABLE:
    try:
        _register_flop_formulas()
    except (ImportError, AttributeError):  # a torch without register_flop_formula
        pass
