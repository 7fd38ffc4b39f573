"""ufo_mm.analysis.complexity (and tools/get_flops.py, its command line) against
a multiply-add count written out by hand from the architecture (docs/model.md
sections 2-6), independently of any counting library."""
import math

import pytest
import torch

from tests.tool_runner import REPO, run_tool
from ufo_mm.analysis import complexity as flops


ARCHS = {  # embed dims, heads, blocks built (last out index + 1), patch
    'small_12_p16': (384, 8, 12, 16),
    'tiny_12_p8': (192, 4, 12, 8),
}


def down(n):
    return -(-n // 2)  # a stride-2 3x3 convolution with padding 1 rounds up


def analytic_macs(C, heads, depth, patch, H, W, attention='ufo'):
    """Multiply-adds of one UFO-ViT forward (batch 1), by hand."""
    macs = 0
    # Patch embedding: log2(patch) stride-2 3x3 convolutions, channels 3 -> C/2^(k-1) .. -> C.
    k = int(math.log2(patch))
    chans = [3] + [C // 2 ** i for i in range(k - 1, -1, -1)]
    h, w = H, W
    for cin, cout in zip(chans[:-1], chans[1:]):
        h, w = down(h), down(w)
        macs += h * w * cout * cin * 9
    N = h * w
    d = C // heads
    macs += N * 64 * C  # Fourier encoding: 1x1 conv from 2 x 32 channels
    per_block = (3 * N * C * C  # fused qkv projection
                 + N * C * C  # output projection
                 + 2 * 9 * N * C  # LPI: two depthwise 3x3 convolutions
                 + 8 * N * C * C)  # MLP, ratio 4
    if attention == 'ufo':
        per_block += N * d * d * heads  # k^T v
        per_block += N * d * d * heads  # q @ kv
    else:  # softmax: q k^T and attn @ v, N x N per head
        per_block += 2 * N * N * d * heads
    macs += depth * per_block
    # Pyramid adapters: a 2x2 stride-2 transposed convolution costs 4 C^2 per input pixel.
    if patch == 16:
        macs += 4 * N * C * C + 4 * (4 * N) * C * C  # fpn1: up x2 twice
        macs += 4 * N * C * C  # fpn2: up x2
    else:
        macs += 4 * N * C * C  # fpn1: up x2 (fpn2 identity, fpn3/fpn4 max-pooling)
    return macs


@pytest.mark.parametrize('arch,shape', [('small_12_p16', (224, 224)),
                                        ('small_12_p16', (512, 320)),
                                        ('tiny_12_p8', (160, 224))])
def test_backbone_macs_match_analytic_count(arch, shape):
    C, heads, depth, patch = ARCHS[arch]
    model = flops.build_backbone(arch)
    with torch.no_grad():
        result = flops.complexity(model, (torch.randn(1, 3, *shape),))
    expected = analytic_macs(C, heads, depth, patch, *shape)
    assert result['macs'] == pytest.approx(expected, rel=0.05)
    assert result['params'] == sum(p.numel() for p in model.parameters())


def test_attention_matmuls_are_counted():
    """Without them the attention would count as its two projections alone."""
    model = flops.build_backbone('small_12_p16')
    H = W = 512
    with torch.no_grad():
        result = flops.complexity(model, (torch.randn(1, 3, H, W),))
    N, C, d, h = (H // 16) * (W // 16), 384, 48, 8
    attn = result['macs_by_module']['blocks.0.attn']
    projections = 4 * N * C * C
    attention_matmuls = attn - projections
    # k^T v (N d^2 h), then applying kv to q: either q @ kv (N d^2 h more) or
    # folding kv into the output projection (C^2 d, independent of N).
    assert N * d * d * h < attention_matmuls <= 2 * N * d * d * h + C * C * d
    assert result['macs_by_operator'].get('matmul', 0) > 0


def test_softmax_attention_counted_quadratically():
    C, heads, depth, patch = ARCHS['small_12_p16']
    model = flops.build_backbone('small_12_p16', attn_type='softmax')
    with torch.no_grad():
        result = flops.complexity(model, (torch.randn(1, 3, 256, 256),))
    expected = analytic_macs(C, heads, depth, patch, 256, 256, attention='softmax')
    assert result['macs'] == pytest.approx(expected, rel=0.05)


def test_handles_broadcast_and_batched_matmuls():
    class Shape:  # what get_shape reads from a traced value
        def __init__(self, *s):
            self.s = list(s)

        def isCompleteTensor(self):
            return True

        def type(self):
            return self

        def sizes(self):
            return self.s

    # (B, h, d, d) @ (h, d, C): the batch is broadcast to B x h.
    assert flops.matmul_macs([Shape(2, 8, 48, 48), Shape(8, 48, 384)], []) == \
        2 * 8 * 48 * 48 * 384
    # (h, d, C) first, broadcast against a (B, h, ...) second operand
    assert flops.matmul_macs([Shape(8, 5, 7), Shape(3, 8, 7, 2)], []) == 3 * 8 * 5 * 7 * 2
    assert flops.baddbmm_macs([Shape(4, 6, 9), Shape(4, 6, 5), Shape(4, 5, 9)], []) == \
        4 * 6 * 5 * 9
    assert flops.sdpa_macs([Shape(1, 6, 100, 64), Shape(1, 6, 50, 64),
                                Shape(1, 6, 50, 32)], []) == 6 * 100 * 50 * (64 + 32)


def test_cli_prints_gmacs_table():
    out = run_tool('get_flops.py', 'tiny_12_p16', '--shape', '256', timeout=300)
    lines = out.stdout.splitlines()
    assert 'input 1x3x256x256' in lines[0]
    total = next(line for line in lines if line.startswith('total')).split()
    expected = analytic_macs(192, 4, 12, 16, 256, 256)
    assert float(total[2]) * 1e9 == pytest.approx(expected, rel=0.05)
    assert 'GMACs: multiply-adds' in out.stdout


def test_full_model_config_counts_backbone_and_heads():
    config = REPO / 'configs/ufo_vit/upernet/upernet_ufo-vit-t12-p16_8xb2-160k_ade20k-512x512.py'
    if not config.exists():
        pytest.skip('UperNet config not present')
    from ufo_mm.builder import build_model, library_of
    model = build_model(str(config))
    scope = library_of(model.cfg)
    assert scope == 'mmseg'
    inputs = flops.full_model_inputs(model, scope, 256, 256)
    with torch.no_grad():
        result = flops.complexity(model, inputs)
    by = result['macs_by_module']
    assert by['backbone'] == pytest.approx(analytic_macs(192, 4, 12, 16, 256, 256), rel=0.05)
    assert by['decode_head'] > 0
    assert result['macs'] >= by['backbone'] + by['decode_head']
    assert result['params'] == sum(p.numel() for p in model.parameters())
