"""The fast CPU inference route (ufo_mm.models.fast) against the modules' own
forward, the reference: same results for every arch and attention variant at
odd sizes, chosen only where it may run, and out of autograd's, tracing's and
training's way."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ufo_mm import cpu_features
from ufo_mm.models import ARCH_ZOO, UFOViT, fast
from ufo_mm.models.fast import cpu_inference
from ufo_mm.models.ufo_attention import UFOAttention

needs_onednn = pytest.mark.skipif(not fast.ONEDNN_AVAILABLE,
                                  reason='no oneDNN fused ops in this torch')
needs_onednn_bf16 = pytest.mark.skipif(
    not (fast.ONEDNN_AVAILABLE and cpu_features.onednn_bf16_kernels()),
    reason='oneDNN has no bf16 primitives on this CPU (AVX2 only): the fast route does not '
           'run in bf16 here (its fallback is test_bf16_autocast_falls_back_to_reference)')
FUSED_OPS = {'mkldnn._linear_pointwise', 'mkldnn._convolution_pointwise'}


def randomise(model):
    """Non-trivial BN statistics, layer scales and XNorm gammas: a route that
    ignored one of them would differ."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_()
                m.bias.normal_(0, 3)
        for name, p in model.named_parameters():
            if name.split('.')[-1].startswith('gamma'):
                p.uniform_(0.5, 1.5)
    return model.eval()


def both_routes(model, x, **route_kw):
    """(fast route outputs, reference outputs) of ``model`` on ``x``."""
    with torch.no_grad():
        dtype = fast.route_dtype(model, x)
        assert dtype is not None
        k = fast.CPUKernels(dtype, **route_kw)
        tokens, shape = model.embed(x, k)
        got = model.forward_pyramid(model.forward_blocks(tokens, *shape, kernels=k),
                                    x.shape[-2:], k)
        tokens, shape = model.embed(x)
        ref = model.forward_pyramid(model.forward_blocks(tokens, *shape), x.shape[-2:])
    return got, ref


@needs_onednn
@pytest.mark.parametrize('arch', [f'{a}_p{p}' for a in ARCH_ZOO for p in (8, 16)])
def test_fast_route_equals_reference_for_every_arch(arch):
    torch.manual_seed(0)
    model = randomise(UFOViT(arch=arch))
    x = torch.randn(1, 3, 67, 93)  # not a multiple of the patch or of 32
    got, ref = both_routes(model, x)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.is_contiguous()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())
    with torch.no_grad():
        assert all(torch.equal(o, g) for o, g in zip(model(x), got))  # model(x) takes it


@needs_onednn
@pytest.mark.parametrize('attn_type, kv_norm_dim', [('ufo', -2), ('ufo', -1), ('xca', None),
                                                     ('softmax', None)])
@pytest.mark.parametrize('batch', [1, 2])
def test_fast_route_equals_reference_tiled(attn_type, kv_norm_dim, batch):
    """Tiles small enough to force many (a partial last one), any attention."""
    torch.manual_seed(0)
    attn_cfg = dict(kv_norm_dim=kv_norm_dim) if attn_type == 'ufo' else None
    model = randomise(UFOViT(arch=dict(embed_dims=64, num_heads=4, depth=4,
                                       out_indices=(0, 1, 2, 3)),
                             attn_type=attn_type, attn_cfg=attn_cfg).requires_grad_(False))
    x = torch.randn(batch, 3, 150, 211)  # 10 x 14 = 140 tokens
    got, ref = both_routes(model, x, tile_tokens=30)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


@needs_onednn
def test_a_change_to_the_reference_math_shows(monkeypatch):
    """The fast route must follow the reference: perturb the reference's
    attention and the comparison must fail (the test above can fail)."""
    torch.manual_seed(0)
    model = randomise(UFOViT(arch=dict(embed_dims=64, num_heads=4, depth=4,
                                       out_indices=(0, 1, 2, 3))))
    x = torch.randn(1, 3, 64, 80)
    original = UFOAttention.attend_normalised
    monkeypatch.setattr(UFOAttention, 'attend_normalised',
                        lambda self, q, kv: original(self, q, kv) * 1.01)
    got, ref = both_routes(model, x)
    assert any(not torch.allclose(g, r, rtol=1e-4, atol=1e-4) for g, r in zip(got, ref))


def test_route_chosen_only_where_it_may_run(monkeypatch):
    torch.manual_seed(0)
    model = UFOViT(arch=dict(embed_dims=32, num_heads=2, depth=4, out_indices=(0, 1, 2, 3)))
    x = torch.randn(1, 3, 32, 32)
    expected = torch.float32 if fast.ONEDNN_AVAILABLE else None
    assert fast.route_dtype(model.eval(), x) is None  # autograd needed (params require grad)
    with torch.no_grad():
        assert fast.route_dtype(model.train(), x) is None  # training mode
        model.eval()
        assert fast.route_dtype(model, x) == expected
        assert fast.route_dtype(model, x.double()) is None  # model is float32
        assert fast.route_dtype(model.double(), x.double()) is None  # float64 stays plain
        model.float()
        with torch.autocast('cpu', dtype=torch.float16):
            assert fast.route_dtype(model, x) is None
        gn = UFOViT(arch=dict(embed_dims=32, num_heads=2, depth=4, out_indices=(0, 1, 2, 3)),
                    norm_cfg=dict(type='GN', num_groups=4)).eval()
        assert fast.route_dtype(gn, x) is None  # only BatchNorms fold
        with monkeypatch.context() as m:  # torch.compile traces the reference math
            m.setattr(torch.compiler, 'is_compiling', lambda: True)
            assert fast.route_dtype(model, x) is None
        monkeypatch.setattr(cpu_inference.kernels, 'ONEDNN_AVAILABLE', False)
        assert fast.route_dtype(model, x) is None  # a torch without the kernels
    traced = torch.jit.trace(model, x, check_trace=False)
    assert 'mkldnn' not in str(traced.graph)


@pytest.mark.parametrize('onednn_bf16', [True, False])
def test_bf16_autocast_falls_back_to_reference(monkeypatch, onednn_bf16):
    """On a CPU without oneDNN bf16 primitives (AVX2 only; faked here where they
    exist) the fused kernels would raise under bf16 autocast: the backbone runs
    the reference modules instead, still in bf16, close to fp32, never crashes."""
    if onednn_bf16 and not cpu_features.onednn_bf16_kernels():
        pytest.skip('this CPU has no oneDNN bf16 primitives to keep')
    monkeypatch.setattr(cpu_features, 'onednn_bf16_kernels', lambda: onednn_bf16)
    torch.manual_seed(0)
    model = randomise(UFOViT(arch=dict(embed_dims=96, num_heads=4, depth=4,
                                       out_indices=(0, 1, 2, 3))))
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        ref = model(x)
        counter = FlopCounterMode(display=False)
        with torch.autocast('cpu', dtype=torch.bfloat16), counter:
            on_fast = fast.route_dtype(model, x) == torch.bfloat16
            out = model(x)
    assert on_fast == (onednn_bf16 and fast.ONEDNN_AVAILABLE)
    ops = {str(op) for op in counter.get_flop_counts()['Global']}
    assert bool(FUSED_OPS & ops) == on_fast, ops
    assert out[0].dtype == torch.bfloat16  # the up-sampling ran in bf16
    for o, r in zip(out, ref):
        assert torch.isfinite(o).all()
        assert ((o.float() - r).norm() / r.norm()) < 3e-2


@needs_onednn_bf16
def test_fast_route_bf16_close_to_reference_bf16():
    torch.manual_seed(0)
    model = randomise(UFOViT(arch='tiny_12_p16'))
    x = torch.randn(1, 3, 99, 131)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got, ref = both_routes(model, x, tile_tokens=20)
    with torch.no_grad():
        exact = model(x)  # fp32
    for g, r, e in zip(got, ref, exact):
        assert g.dtype == r.dtype
        err, err_ref = ((t.float() - e).norm() / e.norm() for t in (g, r))
        assert err < 3e-2 and err < 2 * err_ref + 1e-3


def test_block_inference_leaves_its_input_alone():
    """The fast route updates the residual stream in place, but only the
    block's own new tensor: the input (a pyramid output of the block before)
    is untouched."""
    torch.manual_seed(0)
    model = randomise(UFOViT(arch=dict(embed_dims=32, num_heads=4, depth=4,
                                       out_indices=(0, 1, 2, 3))))
    blk = model.blocks[0]
    x = torch.randn(2, 6 * 7, 32)
    before = x.clone()
    with torch.no_grad():
        dtype = fast.route_dtype(model, torch.randn(1, 3, 32, 32))
        if dtype is None:
            pytest.skip('no fast route here')
        out = blk(x, 6, 7, fast.CPUKernels(dtype), in_place=True)
        ref = blk(x, 6, 7)
    assert torch.equal(x, before)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_fused_kernels_run_and_flop_counter_sees_them():
    torch.manual_seed(0)
    model = randomise(UFOViT(arch=dict(embed_dims=96, num_heads=4, depth=4,
                                       out_indices=(0, 1, 2, 3))))
    x = torch.randn(1, 3, 128, 128)
    counts = []
    for grad in (False, True):
        counter = FlopCounterMode(display=False)
        with torch.set_grad_enabled(grad), counter:
            model(x)
        counts.append(counter.get_total_flops())
        ops = {str(op) for op in counter.get_flop_counts()['Global']}
        assert FUSED_OPS <= ops if not grad else not FUSED_OPS & ops, ops
    # The reference computes q @ kv per head (N C d) where the fast route folds
    # kv into the projection (C^2 d per image), and the fast route recomputes
    # the LPI's border strips: within 1% on this 8 x 8 token map.
    assert counts[0] == pytest.approx(counts[1], rel=1e-2)


def test_bf16_keys_times_values_accumulate_in_float32():
    """k^T v of bf16 tiles is a sum over many tokens: it must not accumulate in
    bf16 (8-bit mantissa: a running sum of ones would stop at 256)."""
    T = 65536
    ones = torch.ones(1, T, 2, 8, dtype=torch.bfloat16)
    kv = cpu_inference.keys_times_values(ones, ones)
    assert kv.dtype == torch.float32
    assert torch.equal(kv, torch.full((1, 2, 8, 8), float(T)))
    torch.manual_seed(0)
    k, v = torch.randn(2, T, 2, 8), torch.randn(2, T, 2, 8) + 0.5
    ref = k.double().permute(0, 2, 3, 1) @ v.double().transpose(1, 2)
    kv = cpu_inference.keys_times_values(k.bfloat16(), v.bfloat16())
    # bf16 inputs: each product is off by ~2^-8, those errors average out
    assert ((kv.double() - ref).norm() / ref.norm()) < 1e-2
