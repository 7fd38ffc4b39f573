"""The CPU inference fast paths of UFOViT (fused MLP GEMM + GELU, channels_last
token views, kv folded into the output projection) give the same results as
the plain computation, stay out of autograd, tracing and FLOP counting's way."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ufo_mm import cpu_features
from ufo_mm.models import UFOViT
from ufo_mm.models.cpu_fusion import (ONEDNN_AVAILABLE, bn_conv2d, inference_dtype,
                                      upsample_nchw, upsampling_layers)
from ufo_mm.models.ufo_vit import LPI, Mlp

needs_onednn = pytest.mark.skipif(not ONEDNN_AVAILABLE, reason='no oneDNN fused ops in this torch')
needs_onednn_bf16 = pytest.mark.skipif(
    not (ONEDNN_AVAILABLE and cpu_features.onednn_bf16_kernels()),
    reason='oneDNN has no bf16 primitives on this CPU (AVX2 only): the fused bf16 route '
           'does not run here (its fallback is test_bf16_autocast_falls_back_to_plain_modules)')
FUSED_OPS = {'mkldnn._linear_pointwise', 'mkldnn._convolution_pointwise'}


def plain_mlp(mlp, x):
    return mlp.fc2(F.gelu(mlp.fc1(x)))


@needs_onednn
def test_fused_mlp_matches_plain_fp32():
    torch.manual_seed(0)
    mlp = Mlp(64, 256).eval()
    x = torch.randn(2, 50, 64)
    with torch.no_grad():
        assert mlp._fused_dtype(x) == torch.float32
        torch.testing.assert_close(mlp(x), plain_mlp(mlp, x), rtol=1e-5, atol=1e-5)


@needs_onednn_bf16
def test_fused_mlp_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    mlp = Mlp(64, 256).eval()
    x = torch.randn(1, 300, 64)
    with torch.no_grad():
        ref = plain_mlp(mlp, x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert mlp._fused_dtype(x) == torch.bfloat16
            out = mlp(x)
            autocast_plain = plain_mlp(mlp, x)
    assert out.dtype == autocast_plain.dtype == torch.bfloat16
    err = ((out.float() - ref).norm() / ref.norm()).item()
    err_plain = ((autocast_plain.float() - ref).norm() / ref.norm()).item()
    assert err < 1e-2 and err < 2 * err_plain


def test_plain_path_when_autograd_or_tracing_needs_it():
    mlp = Mlp(16, 32)
    x = torch.randn(1, 4, 16)
    assert mlp.eval()._fused_dtype(x) is None  # weights require grad, grad enabled
    with torch.no_grad():
        assert mlp.eval()._fused_dtype(x.double()) is None  # float64 stays plain
        with torch.autocast('cpu', dtype=torch.float16):
            assert mlp._fused_dtype(x) is None
        assert Mlp(16, 32, drop=0.1).train()._fused_dtype(x) is None
    traced = torch.jit.trace(mlp.eval(), x, check_trace=False)
    assert 'mkldnn' not in str(traced.graph)


def _model():
    torch.manual_seed(0)
    model = UFOViT(arch=dict(embed_dims=96, num_heads=4, depth=4, out_indices=(0, 1, 2, 3)))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('shape', [(1, 3, 128, 160), (2, 3, 96, 100)])
def test_backbone_inference_matches_autograd_path(shape):
    """no_grad takes every fast path; with autograd on, the MLP is unfused."""
    model = _model()
    x = torch.randn(shape)
    with torch.no_grad():
        fast = model(x)
    slow = model(x)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s.detach(), rtol=1e-4, atol=1e-4)


def test_block_inference_leaves_its_input_alone():
    """Inference updates the residual stream in place, but only the block's own
    new tensor: the input (a pyramid output of the block before) is untouched."""
    from ufo_mm.models.ufo_vit import UFOBlock
    torch.manual_seed(0)
    block = UFOBlock(32, 4).eval()
    x = torch.randn(2, 6 * 7, 32)
    before = x.clone()
    with torch.no_grad():
        out = block(x, 6, 7)
    assert torch.equal(x, before)
    ref = block(x.requires_grad_(), 6, 7)  # autograd: out-of-place updates
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)


def test_outputs_are_contiguous_and_not_overwritten_by_later_blocks():
    model = _model()
    img = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        outs = model(img)
        # the stride-16 output is an identity adapter on a view of the tokens
        # (copied to NCHW at the end): recompute that block's tokens with copies
        # everywhere and compare
        x = model.patch_embed(img)
        B, C, H, W = x.shape
        tokens = (x + model.pos_embed(x)).flatten(2).transpose(1, 2).clone()
        for i, blk in enumerate(model.blocks):
            tokens = blk(tokens, H, W).clone()
            if i == model.out_indices[2]:
                ref = tokens.transpose(1, 2).reshape(B, C, H, W).clone()
    assert all(o.is_contiguous() for o in outs)  # NCHW, as mmcv's RoIAlign needs
    assert model.out_indices[2] < model.out_indices[3]  # later blocks did run
    torch.testing.assert_close(outs[2], ref)


@needs_onednn
def test_fused_kernels_run_and_flop_counter_sees_them():
    model = _model()
    x = torch.randn(1, 3, 128, 128)
    counts = []
    for grad in (False, True):
        counter = FlopCounterMode(display=False)
        with torch.set_grad_enabled(grad), counter:
            model(x)
        counts.append(counter.get_total_flops())
        ops = {str(op) for op in counter.get_flop_counts()['Global']}
        assert FUSED_OPS <= ops if not grad else not FUSED_OPS & ops, ops
    # Same FLOPs but for the LPI's border strips that bn_conv2d recomputes
    # (0.4% on this 8x8 token map; 0.02% for S12/16 at 1024x1024).
    assert counts[1] <= counts[0] <= 1.005 * counts[1]


@needs_onednn_bf16
def test_backbone_bf16_fused_close_to_fp32():
    model = _model()
    x = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            fast = model(x)
    assert fast[0].dtype == torch.bfloat16  # the up-sampling convolutions ran in bf16
    for f, r in zip(fast, ref):
        assert ((f.float() - r).norm() / r.norm()) < 3e-2


@pytest.mark.parametrize('onednn_bf16', [True, False])
def test_bf16_autocast_falls_back_to_plain_modules(monkeypatch, onednn_bf16):
    """On a CPU without oneDNN bf16 primitives (AVX2 only; faked here where they
    exist) the fused kernels would raise under bf16 autocast: the backbone runs
    the plain modules instead, still in bf16 and close to fp32, never crashes."""
    if onednn_bf16 and not cpu_features.onednn_bf16_kernels():
        pytest.skip('this CPU has no oneDNN bf16 primitives to keep')
    monkeypatch.setattr(cpu_features, 'onednn_bf16_kernels', lambda: onednn_bf16)
    model = _model()
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        ref = model(x)
        assert inference_dtype(x, model.patch_embed) == torch.float32  # fp32 is unaffected
        counter = FlopCounterMode(display=False)
        with torch.autocast('cpu', dtype=torch.bfloat16), counter:
            assert inference_dtype(x, model.patch_embed) == (torch.bfloat16 if onednn_bf16
                                                             else None)
            out = model(x)
    ops = {str(op) for op in counter.get_flop_counts()['Global']}
    assert bool(FUSED_OPS & ops) == (onednn_bf16 and ONEDNN_AVAILABLE), ops
    assert out[0].dtype == torch.bfloat16  # the up-sampling ran in bf16
    for o, r in zip(out, ref):
        assert torch.isfinite(o).all()
        assert ((o.float() - r).norm() / r.norm()) < 3e-2


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('kv_norm_dim', [-2, -1])
def test_tiled_attention_equals_untiled(batch, kv_norm_dim):
    from ufo_mm.models import UFOAttention
    torch.manual_seed(0)
    attn = UFOAttention(64, num_heads=4, kv_norm_dim=kv_norm_dim).eval()
    x = torch.randn(batch, 333, 64)
    with torch.no_grad():
        attn.tile_tokens = None
        whole = attn(x)
        attn.tile_tokens = 100  # 4 tiles, the last one partial
        assert attn._tile(x) == 100
        tiled = attn(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            tiled_bf16 = attn(x)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    assert tiled_bf16.dtype == torch.bfloat16
    assert ((tiled_bf16.float() - whole).norm() / whole.norm()) < 2e-2
    assert attn._tile(x.requires_grad_()) == 333  # autograd: never tiled


@needs_onednn
@pytest.mark.parametrize('batch', [1, 2])
def test_tiled_mlp_equals_untiled(batch):
    torch.manual_seed(0)
    mlp = Mlp(32, 128).eval()
    x = torch.randn(batch, 333, 32)
    with torch.no_grad():
        mlp.tile_tokens = None
        whole = mlp(x)
        mlp.tile_tokens = 100
        tiled = mlp(x)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tiled, plain_mlp(mlp, x), rtol=1e-5, atol=1e-5)


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
        fast = lpi(tokens, H, W)
    torch.testing.assert_close(fast, lpi(tokens, H, W).detach(), rtol=1e-5, atol=1e-5)
