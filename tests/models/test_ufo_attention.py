"""UFO attention against an independent float64 transcription of its equations
(docs/model.md section 1)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ufo_mm.models import UFOAttention, xnorm

from .memory_tracker import LiveTensorTracker


def reference_ufo(x, w_qkv, b_qkv, w_proj, b_proj, heads, gamma_q, gamma_kv, kv_dim, eps):
    """docs/model.md section 1 (UFO attention) in float64 with explicit per-head loops."""
    x = x.double()
    B, N, C = x.shape
    d = C // heads
    qkv = x @ w_qkv.double().T + b_qkv.double()
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    out = torch.zeros(B, N, C, dtype=torch.float64)
    for b in range(B):
        for i in range(heads):
            sl = slice(i * d, (i + 1) * d)
            qh, kh, vh = q[b, :, sl], k[b, :, sl], v[b, :, sl]
            kv = kh.T @ vh  # (d, d)
            kv_n = gamma_kv[i] * kv / kv.norm(dim=kv_dim, keepdim=True).clamp_min(eps)
            q_n = gamma_q[i] * qh / qh.norm(dim=-1, keepdim=True).clamp_min(eps)
            out[b, :, sl] = q_n @ kv_n
    return out @ w_proj.double().T + b_proj.double()


def reference_seed_snippet(x, attn):
    """The External-Attention-pytorch UFOAttention forward (separate q/k/v
    linear layers, one shared gamma, XNorm over the last axis, no epsilon),
    with its fc_q/fc_k/fc_v/fc_o taken from ``attn``'s fused weights."""
    x = x.double()
    C = x.shape[-1]
    h = attn.num_heads
    W, bias = attn.qkv.weight.double(), attn.qkv.bias.double()
    fc = [(W[i * C:(i + 1) * C], bias[i * C:(i + 1) * C]) for i in range(3)]
    gamma = attn.gamma.double().reshape(1, h, 1, 1)

    def XNorm(t, g):
        return t * g / torch.norm(t, 2, -1, True)

    b_s, nq = x.shape[:2]
    q = (x @ fc[0][0].T + fc[0][1]).view(b_s, nq, h, C // h).permute(0, 2, 1, 3)
    k = (x @ fc[1][0].T + fc[1][1]).view(b_s, nq, h, C // h).permute(0, 2, 3, 1)
    v = (x @ fc[2][0].T + fc[2][1]).view(b_s, nq, h, C // h).permute(0, 2, 1, 3)
    kv = torch.matmul(k, v)
    out = torch.matmul(XNorm(q, gamma), XNorm(kv, gamma))
    out = out.permute(0, 2, 1, 3).contiguous().view(b_s, nq, h * (C // h))
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


def _randomise_gammas(attn):
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if name.startswith('gamma'):
                p.copy_(torch.randn_like(p))


@pytest.mark.parametrize('kv_norm_dim', [-2, -1])
def test_matches_float64_reference(kv_norm_dim):
    torch.manual_seed(0)
    attn = UFOAttention(32, num_heads=4, kv_norm_dim=kv_norm_dim).double()
    _randomise_gammas(attn)
    x = torch.randn(2, 50, 32, dtype=torch.float64)
    ref = reference_ufo(x, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias, 4,
                        attn.gamma_q.flatten(), attn.gamma_kv.flatten(), kv_norm_dim, attn.eps)
    torch.testing.assert_close(attn(x), ref, rtol=1e-6, atol=1e-6)


def test_default_normalises_kv_over_key_channel_axis():
    assert UFOAttention(32, 4).kv_norm_dim == -2


def test_float32_module_matches_reference():
    torch.manual_seed(1)
    attn = UFOAttention(64, num_heads=8)
    x = torch.randn(1, 200, 64)
    ref = reference_ufo(x, attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias, 8,
                        attn.gamma_q.flatten(), attn.gamma_kv.flatten(), -2, attn.eps)
    torch.testing.assert_close(attn(x).double(), ref, rtol=1e-4, atol=1e-5)


def test_seed_compat_reproduces_snippet():
    torch.manual_seed(2)
    attn = UFOAttention(48, num_heads=6, seed_compat=True).double()
    assert [n for n, _ in attn.named_parameters() if 'gamma' in n] == ['gamma']
    assert attn.kv_norm_dim == -1 and attn.eps == 0
    x = torch.randn(2, 30, 48, dtype=torch.float64)
    torch.testing.assert_close(attn(x), reference_seed_snippet(x, attn), rtol=1e-7, atol=1e-9)


def test_seed_compat_differs_from_default():
    torch.manual_seed(3)
    default = UFOAttention(32, 4).double()
    compat = UFOAttention(32, 4, seed_compat=True).double()
    compat.load_state_dict({k: v for k, v in default.state_dict().items()
                            if not k.startswith('gamma')} | {'gamma': torch.ones(4, 1, 1)})
    x = torch.randn(1, 20, 32, dtype=torch.float64)
    assert not torch.allclose(default(x), compat(x))


def test_zero_tokens_give_zero_not_nan():
    attn = UFOAttention(32, 4, qkv_bias=False)
    torch.nn.init.zeros_(attn.proj.bias)
    out = attn(torch.zeros(2, 16, 32))
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(xnorm(torch.zeros(3, 4), torch.ones(1)), torch.zeros(3, 4))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_xnorm_into_out_on_strided_queries(dtype):
    """The inference path normalises queries (a strided view of the fused qkv
    output) straight into a tile of another tensor: same values as a float64
    reference up to the dtype's rounding, zeros stay zeros, nothing else written."""
    torch.manual_seed(0)
    qkv = (5 * torch.randn(2, 37, 3, 4, 8)).to(dtype)
    qkv[0, 3, 0, 1] = 0  # one all-zero query head
    q = qkv[:, :, 0]  # (B, T, h, d), token stride 3 * h * d
    gamma = torch.rand(4, 1) + 0.5
    out = torch.full((2, 50, 4, 8), 7., dtype=dtype)
    res = xnorm(q, gamma, out=out[:, 5:42])
    assert res.data_ptr() == out[:, 5:42].data_ptr()
    ref = gamma.double() * q.double() / q.double().norm(dim=-1, keepdim=True).clamp_min(1e-6)
    tol = 1e-6 if dtype == torch.float32 else 2 ** -7  # two bf16 roundings
    torch.testing.assert_close(out[:, 5:42].double(), ref, rtol=tol, atol=1e-6)
    assert torch.equal(out[0, 8, 1], torch.zeros(8, dtype=dtype))
    assert (out[:, :5] == 7).all() and (out[:, 42:] == 7).all()


def test_no_n_by_n_tensor_and_linear_memory():
    torch.manual_seed(0)
    attn = UFOAttention(64, num_heads=4).eval()
    peaks = {}
    for n in (16384, 65536):
        x = torch.randn(1, n, 64)
        tracker = LiveTensorTracker()
        with torch.no_grad(), tracker:
            attn(x)
        # Largest tensor is the fused qkv projection, 3 * N * C elements.
        assert tracker.max_numel <= 3 * n * 64
        peaks[n] = tracker.peak
    # 64k tokens: an N x N float map alone would be 16 GiB; we stay within ~10 N C floats.
    assert peaks[65536] < 10 * 65536 * 64 * 4
    assert 3.5 < peaks[65536] / peaks[16384] < 4.5


def test_flops_grow_linearly_with_tokens():
    attn = UFOAttention(64, num_heads=4)
    flops = {}
    for n in (1024, 4096, 16384):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            attn(torch.randn(1, n, 64))
        flops[n] = counter.get_total_flops()
    C, d = 64, 16
    # qkv + proj linear layers (4 N C^2), k^T v and q @ kv (N C d each), times
    # 2 FLOPs per MAC.
    assert flops[4096] == 2 * 4096 * (4 * C * C + 2 * C * d)
    # linear in N: the cost per added token is the same at every size
    assert (flops[16384] - flops[4096]) / (16384 - 4096) == (flops[4096] - flops[1024]) / 3072
    assert flops[16384] / flops[4096] == pytest.approx(4.0, rel=1e-2)


@pytest.mark.parametrize('precision', ['bf16-autocast', 'fp16-model'])
def test_half_precision_finite_and_close_at_large_n(precision):
    """Large activations: k^T v over 32k-64k tokens would overflow fp16 (> 65504)
    or stall in bf16 if it were summed in half precision."""
    torch.manual_seed(0)
    attn = UFOAttention(96, num_heads=2).eval()
    x = 30 * torch.randn(1, 65536 if precision == 'bf16-autocast' else 32768, 96)
    with torch.no_grad():
        ref = attn(x)
        if precision == 'bf16-autocast':
            with torch.autocast('cpu', dtype=torch.bfloat16):
                out = attn(x)
        else:
            out = attn.half()(x.half())
    assert out.dtype == (torch.bfloat16 if precision == 'bf16-autocast' else torch.float16)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).norm() / ref.norm() < 2e-2


def test_invalid_arguments():
    with pytest.raises(ValueError, match='divisible'):
        UFOAttention(30, num_heads=4)
    with pytest.raises(ValueError, match='kv_norm_dim'):
        UFOAttention(32, 4, kv_norm_dim=0)
