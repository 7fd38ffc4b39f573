"""The fused oneDNN kernels of the fast route (ufo_mm.models.fast.kernels)
against the plain modules they replace."""
import pytest
import torch
import torch.nn.functional as F

from ufo_mm import cpu_features
from ufo_mm.models.fast import cpu_inference
from ufo_mm.models.fast.kernels import (ONEDNN_AVAILABLE, bn_conv2d, upsample_nchw,
                                        upsampling_layers)
from ufo_mm.models.ufo_vit import LPI, Mlp

needs_onednn = pytest.mark.skipif(not ONEDNN_AVAILABLE, reason='no oneDNN fused ops in this torch')
needs_onednn_bf16 = pytest.mark.skipif(
    not (ONEDNN_AVAILABLE and cpu_features.onednn_bf16_kernels()),
    reason='oneDNN has no bf16 primitives on this CPU (AVX2 only)')


def plain_mlp(mlp, x):
    return mlp.fc2(F.gelu(mlp.fc1(x)))


@needs_onednn
@pytest.mark.parametrize('tile', [None, 100])
@pytest.mark.parametrize('batch', [1, 2])
def test_fused_mlp_matches_plain_fp32(tile, batch):
    torch.manual_seed(0)
    mlp = Mlp(64, 256).eval()
    x = torch.randn(batch, 333, 64)  # with tile 100: 4 tiles, the last one partial
    with torch.no_grad():
        out = cpu_inference.mlp(mlp, x, torch.float32, tile)
        torch.testing.assert_close(out, plain_mlp(mlp, x), rtol=1e-5, atol=1e-5)


@needs_onednn_bf16
def test_fused_mlp_bf16_close_to_fp32():
    torch.manual_seed(0)
    mlp = Mlp(64, 256).eval()
    x = torch.randn(1, 300, 64)
    with torch.no_grad():
        ref = plain_mlp(mlp, x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = cpu_inference.mlp(mlp, x, torch.bfloat16, None)
            autocast_plain = plain_mlp(mlp, x)
    assert out.dtype == autocast_plain.dtype == torch.bfloat16
    err = ((out.float() - ref).norm() / ref.norm()).item()
    err_plain = ((autocast_plain.float() - ref).norm() / ref.norm()).item()
    assert err < 1e-2 and err < 2 * err_plain


def _randomise_bn(module):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_(0, 3)  # a large shift: border errors would show


@pytest.mark.parametrize('chain', ['convt', 'convt-bn-gelu-convt'])
@pytest.mark.parametrize('shape', [(2, 16, 7, 5), (1, 16, 1, 3)])
def test_upsample_nchw_equals_transposed_convolutions(chain, shape):
    """Row-tiled GEMM up-sampling (several tiles, a partial last one) gives the
    modules' result, as contiguous NCHW."""
    torch.manual_seed(0)
    mods = [torch.nn.ConvTranspose2d(16, 16, 2, stride=2)]
    if chain != 'convt':
        mods += [torch.nn.BatchNorm2d(16), torch.nn.GELU(), torch.nn.ConvTranspose2d(16, 8, 2, 2)]
    seq = torch.nn.Sequential(*mods)
    _randomise_bn(seq)
    seq.eval()
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    layers = upsampling_layers(seq)
    with torch.no_grad():
        ref = seq(x)
        for tile in (1, 300, 1 << 22):  # one row per tile, 2 rows, everything
            out = upsample_nchw(x, layers, torch.float32, tile_elems=tile)
            assert out.is_contiguous() and out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_upsampling_layers_refuses_other_modules():
    assert upsampling_layers(torch.nn.ConvTranspose2d(4, 4, 3, stride=2)) is None
    assert upsampling_layers(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 4, 2, 2),
                                                 torch.nn.ReLU())) is None
    bn = torch.nn.BatchNorm2d(4)  # training mode: batch statistics, cannot fold
    assert upsampling_layers(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 4, 2, 2), bn)) is None
    assert upsampling_layers(torch.nn.MaxPool2d(2)) is None


@needs_onednn
@pytest.mark.parametrize('hw', [(1, 1), (2, 5), (3, 3), (5, 4), (17, 33)])
def test_bn_folded_into_following_conv_is_exact_at_borders(hw):
    """conv(bn(x)) with the BN folded: the zero padding is of bn(x), not of x."""
    torch.manual_seed(0)
    H, W = hw
    lpi = LPI(24, dict(type='BN'))
    _randomise_bn(lpi)
    lpi.eval()
    x = torch.randn(2, 24, H, W)
    with torch.no_grad():
        ref = lpi.conv2(lpi.bn(x))
        out = bn_conv2d(x, lpi.bn, lpi.conv2, torch.float32)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        tokens = torch.randn(2, H * W, 24)
        fast = cpu_inference.lpi(lpi, tokens, H, W, torch.float32)
        torch.testing.assert_close(fast, lpi(tokens, H, W), rtol=1e-5, atol=1e-5)
