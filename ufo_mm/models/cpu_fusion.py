"""Fused CPU inference kernels for UFO-ViT (docs/performance.md).

In inference on CPU (no autograd, no tracing) the backbone calls oneDNN's
fused kernels, the ones torch.compile's CPU backend calls:
``torch.ops.mkldnn._linear_pointwise``, ``_convolution_pointwise`` and
``_convolution_transpose_pointwise``. They apply the bias and an activation
(GELU) inside the GEMM / convolution, so an activation tensor is written once
instead of three times; an eval-mode BatchNorm right after a convolution is
folded into its weight and bias. Each result equals the plain
``Conv -> BN -> GELU`` (or ``Linear -> GELU``) one up to float rounding. Under
bf16 autocast the kernels run in bf16, as autocast's own linear/conv would.

Everything else (training, autograd, tracing/ONNX export, scripting, other
devices and dtypes, non-BatchNorm norms) takes the plain modules; a missing
kernel (another torch build) only makes the fast path unavailable.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

_OPS = ('_linear_pointwise', '_convolution_pointwise', '_convolution_transpose_pointwise')


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and \
            all(hasattr(torch.ops.mkldnn, op) for op in _OPS)
    except (AttributeError, RuntimeError):
        return False


ONEDNN_AVAILABLE = _available()


def inference_dtype(x: torch.Tensor, module: nn.Module) -> Optional[torch.dtype]:
    """The dtype a fused kernel would compute ``module(x)`` in, or None when the
    plain path must run (autograd needed, tracing, not CPU, unsupported dtype)."""
    if not ONEDNN_AVAILABLE or x.device.type != 'cpu' or torch.jit.is_tracing() or \
            torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return None
    weight = next(module.parameters(), None)
    if weight is None:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or
                                    any(p.requires_grad for p in module.parameters())):
        return None
    if torch.is_autocast_enabled('cpu'):
        dtype = torch.get_autocast_dtype('cpu')
    else:
        dtype = x.dtype
        if weight.dtype != dtype:
            return None
    return dtype if dtype in (torch.float32, torch.bfloat16) else None


def foldable_bn(norm: nn.Module) -> bool:
    """An eval-mode BatchNorm with running statistics: an affine map to fold."""
    return isinstance(norm, _BatchNorm) and not norm.training and \
        norm.running_mean is not None and norm.running_var is not None


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: _BatchNorm,
            out_dim: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution; ``out_dim`` is the
    weight's output-channel axis (0 for Conv2d, 1 for ConvTranspose2d)."""
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
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
           bias: Optional[torch.Tensor], act: str, dtype: torch.dtype) -> torch.Tensor:
    """``act(conv(x))`` with ``conv``'s geometry and the given weight and bias."""
    if isinstance(conv.padding, str) or conv.padding_mode != 'zeros':
        raise ValueError('fused conv2d needs numeric zero padding')
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
        list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, act, [],
        'none' if act == 'gelu' else '')


def conv_transpose2d(x: torch.Tensor, conv: nn.ConvTranspose2d, weight: torch.Tensor,
                     bias: Optional[torch.Tensor], act: str, dtype: torch.dtype) -> torch.Tensor:
    """``act(conv_transpose(x))`` with ``conv``'s geometry and the given weight and bias."""
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
        list(conv.padding), list(conv.output_padding), list(conv.stride),
        list(conv.dilation), conv.groups, act, [], 'none' if act == 'gelu' else '')


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

    def conv_transpose_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        # weight (C_in, C_out / groups, kh, kw): each input element feeds C_out/g*kh*kw
        return 2 * math.prod(x_shape) * math.prod(w_shape[1:])

    register(mk._linear_pointwise, linear_flops)
    register(mk._convolution_pointwise, conv_flops)
    register(mk._convolution_transpose_pointwise, conv_transpose_flops)


if ONEDNN_AVAILABLE:
    _register_flop_formulas()
