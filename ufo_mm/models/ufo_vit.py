"""UFO-ViT backbone for dense prediction (docs/model.md sections 2-5), and the
trunk it shares with the classifier (``ufo_mm.models.ufo_vit_classifier``).

XCiT's layout with UFO attention in place of cross-covariance attention:
a convolutional patch embedding, a Fourier positional encoding computed from
the token grid at run time (no learned table tied to one input size), blocks of
attention + local patch interaction (LPI) + MLP with layer scale, and four
adapters that turn the token maps of four blocks into a feature pyramid at
strides 4, 8, 16 and 32.

This module knows nothing of mmdet, mmseg or mmpretrain; ``ufo_mm.registry``
registers it.

Every module's ``forward`` here is the model's math in a few lines: it is
what training, autograd and export run, and the reference. The block's
residual steps are written once, in :class:`UFOBlock`; what computes each
step's branch is a :class:`Kernels` object: the modules themselves
(:data:`REFERENCE`), or in CPU inference (no autograd, eval mode) the fused
kernels of ``ufo_mm.models.fast``, chosen by one check in
:meth:`UFOViT.kernels_for`. The streamed route (``ufo_mm.streaming``)
composes the same steps on bands of token rows. The tests hold every route
to the reference's result.

Memory layout: tokens are kept as (B, N, C) with N = H * W in row-major order,
which is exactly the memory of an NHWC image. So the convolutions (patch
embedding, LPI, pyramid adapters) run on ``channels_last`` views of the
tokens, without the NCHW <-> token copies. The four outputs are returned as
plain contiguous NCHW tensors, as every mmdet/mmseg backbone's: downstream ops
that read raw memory (mmcv's CPU RoIAlign, for one) take NHWC strides for
NCHW ones and return garbage.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch.nn.modules.batchnorm import _BatchNorm

from . import fast
from .arch_zoo import (ARCH_ALIASES, ARCH_ZOO, PATCH_SIZES, arch_names,  # noqa: F401
                       resolve_arch)
from .baseline_attention import SoftmaxAttention, XCAttention
from .checkpoint_convert import load_pretrained
from .ufo_attention import UFOAttention

ATTENTIONS = {'ufo': UFOAttention, 'softmax': SoftmaxAttention, 'xca': XCAttention}


def conv3x3_norm(in_channels: int, out_channels: int, norm_cfg: dict) -> nn.Sequential:
    """3x3 stride-2 convolution (no bias) followed by a norm layer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        build_norm_layer(norm_cfg, out_channels)[1])


class ConvPatchEmbed(nn.Module):
    """Patch embedding by stride-2 3x3 convolutions with GELU between them.

    Patch 16: channels C/8 -> C/4 -> C/2 -> C; patch 8: C/4 -> C/2 -> C.
    Each stride-2 convolution rounds up, so (B, 3, H, W) gives
    (B, C, ceil(H / p), ceil(W / p)).
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, norm_cfg: dict):
        super().__init__()
        if patch_size not in PATCH_SIZES:
            raise ValueError(f'patch_size must be one of {PATCH_SIZES}, got {patch_size}')
        self.patch_size = patch_size
        n = int(math.log2(patch_size))
        chans = [in_channels] + [embed_dims // 2 ** i for i in range(n - 1, -1, -1)]
        layers = []
        for i in range(n):
            if i:
                layers.append(nn.GELU())
            layers.append(conv3x3_norm(chans[i], chans[i + 1], norm_cfg))
        self.proj = nn.Sequential(*layers)

    def layers(self):
        """The embedding as (conv, norm, act) steps, act a GELU or None."""
        mods = list(self.proj)
        for i, m in enumerate(mods):
            if isinstance(m, nn.Sequential):
                act = mods[i + 1] if i + 1 < len(mods) else None
                yield m[0], m[1], act

    def forward(self, x: torch.Tensor, kernels: Optional['Kernels'] = None) -> torch.Tensor:
        k = kernels or REFERENCE
        # channels_last: oneDNN's fast convolution layout, and the output is then
        # already in token order, (B, C, H, W) -> (B, N, C) being a free view.
        x = x.contiguous(memory_format=torch.channels_last)
        for conv, norm, act in self.layers():
            x = k.conv(conv, norm, act, x)
        return x


class FourierPositionEncoding(nn.Module):
    """Sinusoidal encoding of normalised (y, x) grid coordinates, projected to C.

    Computed from the grid of the token map it is given, with that map's device
    and with tensor ops only (cumsum, no Python ints taken from shapes), so
    any resolution works and tracing/ONNX keeps H and W dynamic.

    Shape: (B, C, H, W) token map -> (1, C, H, W) encoding.
    """

    def __init__(self, embed_dims: int, hidden_dim: int = 32, temperature: float = 10000.):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.token_projection = nn.Conv2d(hidden_dim * 2, embed_dims, kernel_size=1)

    EPS, SCALE = 1e-6, 2 * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(x[:1, 0], dtype=torch.float32)  # (1, H, W)
        y = ones.cumsum(1)
        xx = ones.cumsum(2)
        return self.encode(y / (y[:, -1:, :] + self.EPS) * self.SCALE,
                           xx / (xx[:, :, -1:] + self.EPS) * self.SCALE)

    def rows(self, grid: Tuple[int, int], start: int, stop: int,
             device: Optional[torch.device] = None) -> torch.Tensor:
        """Rows ``[start, stop)`` of the encoding of an (H, W) token grid,
        (1, C, stop - start, W): the same numbers as those rows of ``forward``'s."""
        H, W = grid
        f32 = dict(dtype=torch.float32, device=device)
        y = torch.arange(start + 1, stop + 1, **f32).view(1, -1, 1).expand(1, stop - start, W)
        xx = torch.arange(1, W + 1, **f32).view(1, 1, -1).expand(1, stop - start, W)
        return self.encode(y / (torch.tensor(float(H), **f32) + self.EPS) * self.SCALE,
                           xx / (torch.tensor(float(W), **f32) + self.EPS) * self.SCALE)

    def encode(self, y: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        """Normalised (1, H, W) row and column coordinates, scaled to [0, 2 pi]
        -> the (1, C, H, W) encoding."""
        dim_t = torch.arange(self.hidden_dim, dtype=torch.float32, device=y.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor') / self.hidden_dim)
        pos_x = xx[..., None] / dim_t
        pos_y = y[..., None] / dim_t
        pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=4).flatten(3)
        pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (1, 2 * hidden, H, W)
        return self.token_projection(pos.to(self.token_projection.weight.dtype))


class LPI(nn.Module):
    """Local patch interaction: depthwise 3x3 -> GELU -> norm -> depthwise 3x3.

    Shape: x (B, N, C) with N = H * W -> (B, N, C). The convolutions run on
    a channels_last view of the tokens: no copy in or out.
    """

    def __init__(self, dim: int, norm_cfg: dict, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.act = nn.GELU()
        self.bn = build_norm_layer(norm_cfg, dim)[1]
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        x = x.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W), channels_last
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.permute(0, 2, 3, 1).reshape(B, N, C)


class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> linear -> dropout. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0. or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Kernels:
    """How the steps of the model are computed: here the modules' own math,
    the reference (training, autograd, export, any device). The fast CPU route
    (``ufo_mm.models.fast.CPUKernels``) computes the same steps with fused
    oneDNN kernels. :class:`UFOBlock`, :class:`ConvPatchEmbed` and
    ``ufo_mm.streaming`` compose the steps; they never compute one themselves.
    Shapes: tokens (B, n, C); ``kv`` a (B, h, d, d) key-value matrix."""

    def conv(self, conv: nn.Conv2d, norm: Optional[nn.Module], act: Optional[nn.Module],
             x: torch.Tensor, padding=None) -> torch.Tensor:
        """``act(norm(conv(x)))``; ``padding`` overrides the convolution's."""
        if padding is None:
            x = conv(x)
        else:
            x = F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation,
                         conv.groups)
        x = x if norm is None else norm(x)
        return x if act is None else act(x)

    def key_values(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """k^T v of the tokens ``x`` (not normalised; float32 at least)."""
        return attn.key_values(*attn.keys_and_values(x))

    def attention(self, attn: nn.Module, x: torch.Tensor,
                  kv: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention of the tokens ``x``: without ``kv``, ``attn(x)``, the
        module itself (``x`` all the tokens; its hooks see it); given the
        normalised ``kv`` of all the tokens, XNorm(q) @ kv projected (``x``
        any of them)."""
        if kv is None:
            return attn(x)
        return attn.merge_heads(attn.attend_normalised(attn.queries(x), kv))

    def lpi(self, lpi: nn.Module, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return lpi(x, H, W)

    def mlp(self, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return mlp(x)

    def adapt(self, adapter: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A pyramid adapter on a (B, C, H, W) map."""
        # NCHW copies of the channels_last token views: the backward of the
        # transposed convolutions is slower on channels_last (a S12/16
        # training step 512x512 batch 1: 1.40 vs 1.60 s, AVX2 EPYC, 2 threads).
        return adapter(x.contiguous())


#: the modules' own math
REFERENCE = Kernels()


class UFOBlock(nn.Module):
    """x += ls1 * Attn(LN(x)); x += ls3 * LPI(LN(x)); x += ls2 * MLP(LN(x)).

    Parameter names follow XCiT (norm1/attn/gamma1, norm3/local_mp/gamma3,
    norm2/mlp/gamma2) so XCiT checkpoints map onto it.
    Shape: x (B, N, C), with the token grid (H, W) -> (B, N, C).

    The three residual steps below are the block's math, written once. The
    whole-image routes run :meth:`forward`; the streamed route
    (``ufo_mm.streaming``) runs the same steps on bands of token rows, with
    UFO attention's k^T v summed over all the bands first. ``kernels``
    (:class:`Kernels`) computes each step's branch; ``in_place`` lets the
    LPI and MLP steps write into the block's own new tensor (inference).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 layer_scale_init_value: float = 1., norm_cfg: dict = dict(type='BN'),
                 attn_type: str = 'ufo', attn_cfg: Optional[dict] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ATTENTIONS[attn_type](dim, num_heads=num_heads, qkv_bias=qkv_bias,
                                          attn_drop=attn_drop, proj_drop=drop, **(attn_cfg or {}))
        self.drop_path = DropPath(drop_path)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.local_mp = LPI(dim, norm_cfg)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.gamma3 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor, H: int, W: int, kernels: Optional[Kernels] = None,
                in_place: bool = False) -> torch.Tensor:
        k = kernels or REFERENCE
        x = self.attention_residual(x, k)
        x = self.lpi_residual(x, k, W, in_place=in_place)
        return self.mlp_residual(x, k, in_place=in_place)

    def key_values(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        """UFO attention's k^T v of the tokens ``x`` (B, n, C), not yet
        normalised: a sum over tokens, so that of all the tokens is the sum
        of those of bands that cover them."""
        return kernels.key_values(self.attn, self.norm1(x))

    def attention_residual(self, x: torch.Tensor, kernels: Kernels,
                           kv: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x + gamma1 * Attn(LN1(x)), in a new tensor. ``x`` all the tokens;
        or, with UFO attention and ``kv`` = XNorm(k^T v) of all the block's
        tokens given, any band of them."""
        return self.residual(x, self.gamma1, kernels.attention(self.attn, self.norm1(x), kv))

    def lpi_residual(self, x: torch.Tensor, kernels: Kernels, W: int, halo=(0, 0),
                     in_place: bool = False) -> torch.Tensor:
        """x + gamma3 * LPI(LN3(x)) on ``x`` (B, R * W, C), R full token rows.
        ``halo`` (top, bottom): that many first and last rows only feed the
        two 3x3 convolutions of the others (2 each make them exact) and are
        left out of the result, a new tensor then. The convolutions pad the
        rows given with zeros, as the whole map's edges are."""
        R = x.shape[1] // W
        local = kernels.lpi(self.local_mp, self.norm3(x), R, W)
        top, bottom = halo
        if top or bottom:
            x, local = (t[:, top * W:(R - bottom) * W] for t in (x, local))
            in_place = False
        return self.residual(x, self.gamma3, local, in_place)

    def mlp_residual(self, x: torch.Tensor, kernels: Kernels,
                     in_place: bool = False) -> torch.Tensor:
        """x + gamma2 * MLP(LN2(x)), on any tokens."""
        return self.residual(x, self.gamma2, kernels.mlp(self.mlp, self.norm2(x)), in_place)

    def residual(self, x: torch.Tensor, gamma: torch.Tensor, branch: torch.Tensor,
                 in_place: bool = False) -> torch.Tensor:
        """``x + drop_path(gamma * branch)``; one pass when no path is dropped
        (into ``x`` itself when ``in_place``)."""
        if self.drop_path.p == 0. or not self.training:
            return x.addcmul_(gamma, branch) if in_place else torch.addcmul(x, gamma, branch)
        return x + self.drop_path(gamma * branch)


def check_out_indices(out_indices: Sequence[int], depth: int) -> Tuple[int, ...]:
    """The four pyramid blocks as indices in [0, depth), increasing.

    Raises:
        ValueError: not four, or not distinct and increasing.
        IndexError: an entry outside [-depth, depth).
    """
    out_indices = list(out_indices)
    if len(out_indices) != 4:
        raise ValueError(f'out_indices must name 4 blocks (one per stride 4, 8, 16, 32), '
                         f'got {out_indices}')
    for i in out_indices:
        if not -depth <= i < depth:
            raise IndexError(f'out_indices entry {i} is out of range for depth {depth} '
                             f'(valid: {-depth}..{depth - 1})')
    resolved = tuple(i % depth for i in out_indices)
    if list(resolved) != sorted(set(resolved)):
        raise ValueError(f'out_indices must be distinct and increasing, got {out_indices}')
    return resolved


class UFOViTTrunk(BaseModule):
    """What the dense backbone and the classifier share: patch embedding,
    position encoding and the UFO blocks (XCiT's trunk with UFO attention).

    Subclasses add what their task needs on top (:class:`UFOViT`: the
    pyramid adapters; ``ufo_mm.models.ufo_vit_classifier``: class token,
    class attention, norm and head); the trunk's parameter names are the
    same in both, so their checkpoints initialise each other.

    Args:
        arch: a model size with optional patch size ('tiny_12_p16',
            'small_12_p16', 'small_24_p8', 'medium_24_p16', aliases 't12',
            's12_p8', 'S24/16', ...; see :func:`arch_names`) or a custom dict
            with embed_dims, num_heads, depth (optional patch_size,
            layer_scale_init_value, out_indices).
        patch_size: 8 or 16; overrides the one in ``arch`` when given.
        in_channels: image channels.
        num_blocks: how many of the arch's blocks to build (default all of
            them; the dense backbone builds none past its last output).
        attn_type: 'ufo' (default), 'softmax' or 'xca'; the rest of the model
            is identical, for ablations and benchmarks.
        attn_cfg: extra arguments of the attention (for 'ufo':
            ``kv_norm_dim``, ``eps``, ``seed_compat``).
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate: as in ViT.
        drop_path_rate: stochastic depth; with ``drop_path_schedule='linear'``
            that of the last block, growing linearly from 0 over the blocks;
            with 'constant' that of every block (XCiT's ImageNet training).
        drop_path_schedule: 'linear' (default) or 'constant'.
        layer_scale_init_value: overrides the arch's (1.0 for depth 12, 1e-5
            for 24).
        norm_cfg: norm of the patch embedding, LPI and pyramid adapters
            (``dict(type='SyncBN')`` for multi-GPU training, 'BN' on one
            device or CPU).
        frozen_stages: -1 freezes nothing; 0 freezes the patch embedding and
            position encoding; k > 0 also freezes blocks 0..k-1. Frozen parts
            stay in eval mode in ``train()``.
        norm_eval: keep every BatchNorm in eval mode (frozen statistics) during
            training.
        with_cp: activation checkpointing of each block while training: less
            memory, one more forward per block.
        check_finite: raise on NaN/Inf input (one reduction per forward).
        pretrained: deprecated alias of
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads a UFO-ViT
            or XCiT checkpoint (classification or dense, official, timm,
            mmpretrain or mmengine key names), converting keys and dropping
            what the model does not have; see
            ``ufo_mm.models.checkpoint_convert``.
    """

    def __init__(self, arch: Union[str, dict] = 'small_12_p16', patch_size: Optional[int] = None,
                 in_channels: int = 3, num_blocks: Optional[int] = None,
                 attn_type: str = 'ufo', attn_cfg: Optional[dict] = None,
                 mlp_ratio: float = 4., qkv_bias: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.,
                 drop_path_schedule: str = 'linear',
                 layer_scale_init_value: Optional[float] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 check_finite: bool = True, pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        name = type(self).__name__
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'{name}: set either init_cfg or pretrained, not both '
                                 '(pretrained is the deprecated form of '
                                 "init_cfg=dict(type='Pretrained', checkpoint=...))")
            if not isinstance(pretrained, str):
                raise TypeError(f'pretrained must be a checkpoint path (str), got {pretrained!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        if attn_type not in ATTENTIONS:
            raise ValueError(f'unknown attn_type {attn_type!r}; valid: {sorted(ATTENTIONS)}')
        setting = resolve_arch(arch)
        self.arch_setting = setting
        self.embed_dims = setting['embed_dims']
        self.num_heads = setting['num_heads']
        self.depth = setting['depth']
        self.patch_size = patch_size or setting['patch_size']
        self.in_channels = in_channels
        self.attn_type = attn_type
        self.check_finite = check_finite
        if layer_scale_init_value is None:
            layer_scale_init_value = setting['layer_scale_init_value']
        self.layer_scale_init_value = layer_scale_init_value
        self.frozen_stages = frozen_stages
        if not -1 <= frozen_stages <= self.depth:
            raise ValueError(f'frozen_stages must be in [-1, {self.depth}], got {frozen_stages}')
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        C = self.embed_dims
        self.patch_embed = ConvPatchEmbed(in_channels, C, self.patch_size, norm_cfg)
        self.pos_embed = FourierPositionEncoding(C)
        self.pos_drop = nn.Dropout(drop_rate)
        if drop_path_schedule == 'linear':
            dpr = torch.linspace(0, drop_path_rate, self.depth).tolist()
        elif drop_path_schedule == 'constant':
            dpr = [drop_path_rate] * self.depth
        else:
            raise ValueError(f"drop_path_schedule must be 'linear' or 'constant', "
                             f'got {drop_path_schedule!r}')
        self.blocks = nn.ModuleList([
            UFOBlock(C, self.num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                     dpr[i], layer_scale_init_value, norm_cfg, attn_type, attn_cfg)
            for i in range(self.depth if num_blocks is None else num_blocks)])

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.patch_embed
            yield self.pos_embed
        yield from self.blocks[:max(self.frozen_stages, 0)]

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self):
        """Pretrained: load and convert a checkpoint; otherwise XCiT's init
        (truncated normal 0.02 for linear layers, unit LayerNorm)."""
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained(self, self.init_cfg['checkpoint'],
                            prefix=self.init_cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def check_geometry(self, channels: int, height: Optional[int] = None,
                       width: Optional[int] = None, shape=None):
        """Refuse inputs of the wrong channel count or (when the size is
        given) smaller than a patch; ``shape``: the input's, for the message."""
        if channels != self.in_channels:
            seen = f' (input shape {tuple(shape)})' if shape is not None else ''
            raise ValueError(f'{type(self).__name__} was built for {self.in_channels} input '
                             f'channels, got {channels}{seen}')
        if height is not None and (height < self.patch_size or width < self.patch_size):
            raise ValueError(f'input {height}x{width} is smaller than one {self.patch_size}x'
                             f'{self.patch_size} patch')

    def _check_input(self, x: torch.Tensor):
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(f'{name} expects (B, C, H, W) images, got shape {tuple(x.shape)}')
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            self.check_geometry(x.shape[1], shape=x.shape)  # sizes may be symbolic
            return
        self.check_geometry(x.shape[1], *x.shape[-2:], shape=x.shape)
        if self.check_finite and not torch.isfinite(x).all():
            raise ValueError(f'{name} input contains NaN or Inf values')

    def embed(self, x: torch.Tensor, kernels: Optional[Kernels] = None):
        """Images (B, in_channels, H, W) -> tokens (B, N, C) with the position
        encoding added, and the token grid's shape (B, C, Hp, Wp)."""
        x = self.patch_embed(x, kernels)
        B, C, Hp, Wp = x.shape
        x = x + self.pos_embed(x).to(x.dtype)
        return self.pos_drop(x.flatten(2).transpose(1, 2)), (B, C, Hp, Wp)

    def run_block(self, blk: nn.Module, x: torch.Tensor, Hp: int, Wp: int,
                  kernels: Optional[Kernels] = None, in_place: bool = False) -> torch.Tensor:
        """One block on tokens (B, N, C), with activation checkpointing when
        ``with_cp`` asks for it (training, autograd)."""
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(blk, x, Hp, Wp, use_reentrant=False)
        return blk(x, Hp, Wp, kernels, in_place)

    def kernels_for(self, x: torch.Tensor) -> Kernels:
        """The kernels that compute the model on ``x``: in CPU inference the
        fast route's (:class:`ufo_mm.models.fast.CPUKernels`, same result),
        otherwise the modules' own math. The one place that chooses."""
        dtype = fast.route_dtype(self, x)
        return REFERENCE if dtype is None else fast.CPUKernels(dtype)


class UFOViT(UFOViTTrunk):
    """UFO-ViT backbone: a tuple of four NCHW maps at strides 4, 8, 16, 32.

    Args:
        arch, patch_size, in_channels, attn_type, attn_cfg, mlp_ratio,
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate,
        layer_scale_init_value, norm_cfg, frozen_stages, norm_eval, with_cp,
        check_finite, pretrained, init_cfg: those of :class:`UFOViTTrunk`.
        out_indices: the four blocks whose outputs form the pyramid (strides
            4, 8, 16, 32 in that order); negative indices count from the end.
            Default: [3, 5, 7, 11] for depth 12, [7, 11, 15, 23] for depth 24.
            Blocks after the last one are not built.

    Inputs whose sides are not multiples of the patch size are handled by the
    rounding-up stride-2 convolutions; output ``i`` at stride ``s`` has size
    ``(ceil(H / s), ceil(W / s))``, as ResNet's. Sides must be >= patch size.
    """

    def __init__(self, arch: Union[str, dict] = 'small_12_p16', patch_size: Optional[int] = None,
                 in_channels: int = 3, out_indices: Optional[Sequence[int]] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True), **kwargs):
        setting = resolve_arch(arch)
        out_indices = check_out_indices(
            setting['out_indices'] if out_indices is None else out_indices, setting['depth'])
        super().__init__(arch, patch_size, in_channels, num_blocks=max(out_indices) + 1,
                         norm_cfg=norm_cfg, **kwargs)
        self.out_indices = out_indices
        self._build_adapters(norm_cfg)
        self._freeze_stages()

    def _build_adapters(self, norm_cfg: dict):
        """fpn1..fpn4 bring the stride-p token maps to strides 4, 8, 16, 32."""
        C = self.embed_dims

        def up2():
            return nn.ConvTranspose2d(C, C, kernel_size=2, stride=2)

        if self.patch_size == 16:
            self.fpn1 = nn.Sequential(up2(), build_norm_layer(norm_cfg, C)[1], nn.GELU(), up2())
            self.fpn2 = nn.Sequential(up2())
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        else:
            self.fpn1 = nn.Sequential(up2())
            self.fpn2 = nn.Identity()
            self.fpn3 = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
            self.fpn4 = nn.MaxPool2d(kernel_size=4, stride=4, ceil_mode=True)

    def forward_blocks(self, x: torch.Tensor, B: int, C: int, Hp: int, Wp: int,
                       kernels: Optional[Kernels] = None) -> list:
        """Tokens (B, N, C) through the blocks -> the outputs of the
        ``out_indices`` blocks as (B, C, Hp, Wp) channels_last views. Other
        kernels than the reference's run in inference: each block's LPI and
        MLP steps then go into its own new tensor, in place."""
        feats = []
        in_place = kernels is not None and kernels is not REFERENCE
        for i, blk in enumerate(self.blocks):
            x = self.run_block(blk, x, Hp, Wp, kernels, in_place)
            if i in self.out_indices:
                # (B, C, Hp, Wp) channels_last view of the tokens, no copy
                feats.append(x.reshape(B, Hp, Wp, C).permute(0, 3, 1, 2))
        return feats

    @staticmethod
    def pyramid_sizes(image_size) -> list:
        """(ceil(H / s), ceil(W / s)) of the pyramid levels, s = 4, 8, 16, 32."""
        H, W = image_size
        # ceil(H / s) as (H + s - 1) // s: ONNX tracing turns // into a division
        # that truncates toward zero, so the -(-H // s) idiom would give floor.
        return [((H + s - 1) // s, (W + s - 1) // s) for s in (4, 8, 16, 32)]

    def forward_pyramid(self, feats: Sequence[torch.Tensor], image_size,
                        kernels: Optional[Kernels] = None) -> Tuple[torch.Tensor, ...]:
        """The four block outputs -> maps at strides 4, 8, 16, 32 of an image
        of ``image_size`` (H, W): (B, C, ceil(H/s), ceil(W/s)), contiguous NCHW."""
        k = kernels or REFERENCE
        sizes = self.pyramid_sizes(image_size)
        adapters = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        # Contiguous NCHW: mmcv's CPU RoIAlign ignores strides, and on channels_last
        # maps it silently pools the wrong pixels (Mask R-CNN then cannot learn).
        return tuple(k.adapt(adapter, f)[..., :h, :w].contiguous()
                     for adapter, f, (h, w) in zip(adapters, feats, sizes))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, in_channels, H, W) -> 4 maps (B, C, ceil(H/s), ceil(W/s)), s = 4, 8, 16, 32."""
        self._check_input(x)
        k = self.kernels_for(x)
        tokens, shape = self.embed(x, k)
        return self.forward_pyramid(self.forward_blocks(tokens, *shape, kernels=k),
                                    x.shape[-2:], k)
