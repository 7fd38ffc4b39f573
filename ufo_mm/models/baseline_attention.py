"""Attention variants that UFO attention is compared with, on the same backbone.

``attn_type='softmax'`` (ViT/DeiT multi-head self-attention, O(N^2)) and
``attn_type='xca'`` (XCiT cross-covariance attention, O(N d^2) with a softmax
over the d x d channel map). They exist for ablations and benchmarks: swapping
``attn_type`` changes the attention and nothing else.

Shapes: x (B, N, C) -> (B, N, C); h heads, d = C / h.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .ufo_attention import QKVAttentionBase


class SoftmaxAttention(QKVAttentionBase):
    """softmax(q k^T / sqrt(d)) v: an N x N map per head, quadratic in N."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.attn_drop.p if self.training else 0.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)


class XCAttention(QKVAttentionBase):
    """XCiT cross-covariance attention: softmax over a d x d map of
    L2-normalised (over tokens) queries and keys, times a learned temperature."""

    def __init__(self, dim: int, num_heads: int = 8, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q, dim=-2)  # over tokens
        k = F.normalize(k, dim=-2)
        attn = (q.transpose(-2, -1) @ k) * self.temperature  # (B, h, d, d)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return v @ attn.transpose(-2, -1)  # (B, h, N, d)
