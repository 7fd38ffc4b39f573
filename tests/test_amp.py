"""Mixed precision: ``tools/train.py --amp`` (bf16 autocast on CPU, fp16
``AmpOptimWrapper`` on GPU) and UFO attention's finiteness in half precision
at the token counts of 2048 x 2048 images."""
import copy
import math

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from tests.tiny_seg_training import load_state_dict, logged_scalars, make_data, write_config
from tests.tool_runner import REPO, run_tool
from ufo_mm import cpu_features
from ufo_mm.engine.amp import BF16AutocastOptimWrapper, enable_amp
from ufo_mm.models.ufo_attention import UFOAttention


@pytest.mark.parametrize('native', [True, False])
def test_enable_amp_picks_wrapper_for_device(monkeypatch, native):
    """--amp: fp16 AmpOptimWrapper on GPU; on CPU bf16 autocast only where bf16
    is native (faked both ways), plain fp32 elsewhere."""
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: native)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', loss_scale=512.,
                                         optimizer=dict(type='AdamW', lr=1e-3))))
    chosen = enable_amp(cfg)
    if torch.cuda.is_available():
        assert chosen == cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.loss_scale == 512.
    else:
        expected = 'BF16AutocastOptimWrapper' if native else 'OptimWrapper'
        assert chosen == cfg.optim_wrapper.type == expected
        assert 'loss_scale' not in cfg.optim_wrapper  # bf16 needs no loss scaling
    assert cfg.optim_wrapper.optimizer.lr == 1e-3

    with pytest.raises(ValueError, match='--amp cannot convert'):
        enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapperDict'))))


def test_enable_amp_dtype_on_the_cpu(monkeypatch):
    """--amp-dtype on the CPU: bf16 forces bf16 autocast, fp16 is refused."""
    if torch.cuda.is_available():
        pytest.skip('checks the CPU')
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: False)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    assert enable_amp(cfg, 'bf16') == 'BF16AutocastOptimWrapper'
    with pytest.raises(ValueError, match='fp16 needs a GPU'):
        enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapper'))), 'fp16')


@pytest.mark.parametrize('bf16,asked,expected', [(True, 'auto', 'bfloat16'),
                                                 (False, 'auto', 'float16'),
                                                 (True, 'fp16', 'float16')])
def test_enable_amp_on_a_gpu_picks_bf16_where_it_exists(monkeypatch, bf16, asked, expected):
    """On a GPU (faked here): AmpOptimWrapper in bf16 where the GPU has it, fp16
    with dynamic loss scaling elsewhere or when asked; one log line says which."""
    from ufo_mm.engine import amp
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a, **k: 'Fake GPU')
    messages = []
    monkeypatch.setattr(amp, 'print_log', lambda msg, *a, **k: messages.append(msg))
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    assert enable_amp(cfg, asked) == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == expected
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    why = 'asked for' if asked != 'auto' else f'Fake GPU {"supports" if bf16 else "lacks"} bf16'
    assert messages == [f'--amp on CUDA: AmpOptimWrapper in {expected} ({why}), '
                        'loss scale dynamic']
    if not bf16:
        with pytest.raises(ValueError, match='does not support bf16'):
            enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapper'))), 'bf16')


DEMO_SEG = REPO / 'configs' / 'ufo_vit' / 'demo' / 'upernet_ufo-vit-demo_synthetic.py'


@pytest.mark.parametrize('native', [True, False])
def test_seg_demo_precision_follows_the_cpu(monkeypatch, native):
    """The seg demo's optimizer wrapper: bf16 autocast where the CPU has native
    bf16, fp32 elsewhere with a log line saying why; either can be forced."""
    from mmengine.optim import build_optim_wrapper

    from ufo_mm.engine import amp
    monkeypatch.setattr(cpu_features, 'bf16_native', lambda: native)
    # the status line too, so the test means the same on CPUs of either kind
    monkeypatch.setattr(cpu_features, 'bf16_status',
                        lambda: f'bf16 is {"" if native else "not "}native on this CPU (faked)')
    messages = []
    monkeypatch.setattr(amp, 'print_log', lambda msg, *a, **k: messages.append(msg))
    cfg = Config.fromfile(str(DEMO_SEG))
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    x = torch.randn(4, 8)
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    assert wrapper.autocast is native
    with wrapper.optim_context(model):
        assert model(x).dtype == (torch.bfloat16 if native else torch.float32)
    assert len(messages) == (0 if native else 1)
    forced = {kind: build_optim_wrapper(model, dict(copy.deepcopy(cfg.optim_wrapper), type=kind))
              for kind in ('OptimWrapper', 'BF16AutocastOptimWrapper')}
    if not native:
        assert 'not native' in messages[0] and 'training in fp32' in messages[0]
    with forced['BF16AutocastOptimWrapper'].optim_context(model):
        assert model(x).dtype == torch.bfloat16
    with forced['OptimWrapper'].optim_context(model):
        assert model(x).dtype == torch.float32


def test_bf16_wrapper_autocasts_forward_only_inside_context():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    wrapper = BF16AutocastOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(4, 8)
    with wrapper.optim_context(model):
        y = model(x)
    assert y.dtype == torch.bfloat16
    assert model(x).dtype == torch.float32
    before = model[0].weight.detach().clone()
    wrapper.update_params(y.float().pow(2).mean())
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model[0].weight)


def test_train_cpu_bf16(tmp_path):
    """bf16 autocast training on CPU (forced, so it runs on any CPU, emulated
    where bf16 is not native): finite, falling loss and updated weights."""
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (bf16) path')
    data_root = make_data(tmp_path / 'data')
    config = write_config(tmp_path / 'tiny_upernet.py', data_root, max_iters=10,
                          ckpt_interval=5, lr=2e-3)
    work_dir = tmp_path / 'work'
    run_tool('train.py', config, '--work-dir', work_dir, '--cfg-options',
             'optim_wrapper.type=BF16AutocastOptimWrapper')

    dumped = Config.fromfile(str(work_dir / 'tiny_upernet.py'))  # what the run used
    assert dumped.optim_wrapper.type == 'BF16AutocastOptimWrapper'
    losses = [r['loss'] for r in logged_scalars(work_dir) if 'loss' in r]
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[0], losses
    mid, last = (load_state_dict(work_dir / f'iter_{i}.pth') for i in (5, 10))
    assert all(v.dtype != torch.bfloat16 for v in last.values())  # fp32 master weights
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())
    changed = [k for k in last if 'weight' in k and not torch.equal(mid[k], last[k])]
    assert len(changed) > 50


def _fp16_attention_at(num_tokens: int):
    torch.manual_seed(0)
    attn = UFOAttention(384, num_heads=8).eval()  # S12 width
    # Activations of a trained model are large; 30 * N(0, 1) makes the naive
    # fp16 k^T v overflow (> 65504), so the test would catch a half-precision sum.
    x = 30 * torch.randn(1, num_tokens, 384)
    with torch.no_grad():
        ref = attn(x)
        _, k, v = attn.split_heads(x)
        assert (k.transpose(-2, -1) @ v).abs().max() > 65504, 'too small to test overflow'
        out = attn.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - ref).norm() / ref.norm() < 1e-2


def test_fp16_attention_finite_s12_p16_2048px():
    """2048 x 2048 at patch 16: 128 x 128 = 16384 tokens."""
    _fp16_attention_at(128 * 128)


@pytest.mark.slow
def test_fp16_attention_finite_s12_p8_2048px():
    """2048 x 2048 at patch 8: 256 x 256 = 65536 tokens."""
    _fp16_attention_at(256 * 256)
