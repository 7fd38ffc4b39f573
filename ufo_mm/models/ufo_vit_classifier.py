"""UFO-ViT image classifier (docs/model.md section 8): the UFO-ViT trunk, XCiT's
two class-attention layers on a class token, a final LayerNorm and a linear head.

The trunk (patch embedding, position encoding, UFO blocks) is
:class:`~ufo_mm.models.ufo_vit.UFOViTTrunk`, the same module the dense backbone
builds on, so a classifier checkpoint initialises :class:`~ufo_mm.models.UFOViT`
with every trunk tensor and the other way round.

UFO-ViT's paper does not say how the image-level prediction is formed; this
follows XCiT, as timm's ``xcit.py`` implements it:

- the patch tokens run through every block; then a learnable class token is
  put in front of them;
- two class-attention blocks (CaiT's): softmax attention with the class token
  as the only query (so linear in the number of tokens), an MLP on the class
  token, layer scale with XCiT's initial value (1.0 for depth 12, 1e-5 for 24),
  every token normalised after the attention (XCiT's ``tokens_norm=True``);
- a LayerNorm and the linear head read the class token.

Parameter names are XCiT's (``cls_token``, ``cls_attn_blocks.N.attn.q/k/v/proj``,
``norm``, ``head``; the class-attention q, k and v as timm splits them), which
``ufo_mm.models.checkpoint_convert`` recognises: it loads them into a classifier
and drops them, reported, for the dense backbone.

This module knows nothing of mmpretrain; ``ufo_mm.registry`` registers
:class:`UFOViTClsBackbone` there.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_

from .ufo_vit import Mlp, UFOViTTrunk


class ClassAttention(nn.Module):
    """Softmax attention whose only query is the class token (CaiT).

    Shape: x (B, 1 + N, C), class token first -> the class token's update (B, 1, C).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not a multiple of num_heads {num_heads}')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads

        def heads(t):  # (B, n, C) -> (B, h, n, d)
            return t.reshape(B, t.shape[1], h, C // h).transpose(1, 2)

        q, k, v = heads(self.q(x[:, :1])), heads(self.k(x)), heads(self.v(x))
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, 1, C)))


class ClassAttentionBlock(nn.Module):
    """XCiT's class-attention block, with every token normalised (``tokens_norm``).

    As XCiT writes it: the attention's output replaces the class token of the
    normalised tokens, and that whole tensor is the residual branch (so the
    patch tokens get their normalised values added); after ``norm2`` over all
    tokens, the MLP updates the class token only, and the residual adds the
    tokens once more. Only the class token reaches the head; the patch tokens
    are the next block's keys and values.

    Shape: x (B, 1 + N, C), class token first -> (B, 1 + N, C).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., layer_scale_init_value: float = 1.):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.gamma1 = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        branch = torch.cat([self.attn(x_norm), x_norm[:, 1:]], dim=1)
        x = self.norm2(x + self.gamma1 * branch)
        cls_update = self.gamma2 * self.mlp(x[:, :1])
        return x + torch.cat([cls_update, x[:, 1:]], dim=1)


class UFOViTClassifier(UFOViTTrunk):
    """UFO-ViT for image classification: images -> class logits.

    Args:
        arch, patch_size, in_channels: as :class:`~ufo_mm.models.ufo_vit.UFOViTTrunk`
            (every block of the arch is built).
        num_classes: classes of the linear head; 0 builds no head, and
            ``forward`` returns the normalised class token (B, C).
        num_cls_attn_blocks: class-attention blocks (XCiT: 2).
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate: of the blocks and the
            class-attention blocks, as in XCiT.
        **kwargs: the other arguments of ``UFOViTTrunk`` (attn_type, attn_cfg,
            drop_path_rate, layer_scale_init_value, norm_cfg, frozen_stages,
            norm_eval, with_cp, check_finite, pretrained, init_cfg). The
            class-attention blocks take ``layer_scale_init_value`` too and no
            stochastic depth (as XCiT's); ``frozen_stages`` freezes trunk parts only.

    Shape: (B, in_channels, H, W) -> (B, num_classes), any H, W >= patch size.
    """

    def __init__(self, arch: Union[str, dict] = 'small_12_p16', num_classes: int = 1000,
                 num_cls_attn_blocks: int = 2, patch_size: Optional[int] = None,
                 in_channels: int = 3, mlp_ratio: float = 4., qkv_bias: bool = True,
                 drop_rate: float = 0., attn_drop_rate: float = 0., **kwargs):
        for name, value in (('num_classes', num_classes),
                            ('num_cls_attn_blocks', num_cls_attn_blocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        super().__init__(arch, patch_size, in_channels, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                         drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, **kwargs)
        C = self.embed_dims
        self.num_classes = num_classes
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.cls_attn_blocks = nn.ModuleList([
            ClassAttentionBlock(C, self.num_heads, mlp_ratio, qkv_bias, drop_rate,
                                attn_drop_rate, self.layer_scale_init_value)
            for _ in range(num_cls_attn_blocks)])
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.head = nn.Linear(C, num_classes) if num_classes > 0 else nn.Identity()
        self._freeze_stages()

    def init_weights(self):
        """The trunk's (a Pretrained checkpoint, or XCiT's init, which covers
        the class-attention blocks and head too) and, without a checkpoint,
        the class token from a truncated normal of std 0.02, as XCiT."""
        super().init_weights()
        if not (self.init_cfg and self.init_cfg.get('type') == 'Pretrained'):
            trunc_normal_(self.cls_token, std=.02)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> the normalised class token (B, C)."""
        self._check_input(x)
        tokens, (B, C, Hp, Wp) = self.embed(x)
        for blk in self.blocks:
            tokens = self.run_block(blk, tokens, Hp, Wp)
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        for blk in self.cls_attn_blocks:
            x = blk(x)
        # XCiT normalises every token and reads the first: a LayerNorm is per token
        return self.norm(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes), or the class
        token (B, C) when built with ``num_classes=0``."""
        return self.head(self.forward_features(x))


class UFOViTClsBackbone(UFOViTClassifier):
    """The classifier without its head, as a backbone of mmpretrain's
    ``ImageClassifier``: images -> ``(class token,)``, a one-tuple of the
    normalised class token (B, C), which ``LinearClsHead`` classifies.

    Its checkpoint (``backbone.*`` plus the head's ``head.fc.*``) initialises
    :class:`~ufo_mm.models.UFOViT` through ``init_cfg=dict(type='Pretrained', ...)``.

    Args: those of :class:`UFOViTClassifier` except ``num_classes``.
    """

    def __init__(self, arch: Union[str, dict] = 'small_12_p16', **kwargs):
        if 'num_classes' in kwargs:
            raise TypeError('UFOViTClsBackbone has no head (num_classes): the classifier '
                            "head is the ImageClassifier's, e.g. dict(type='LinearClsHead', "
                            'num_classes=..., in_channels=embed_dims)')
        super().__init__(arch, num_classes=0, **kwargs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.forward_features(x),)
