"""On a CUDA GPU: the model, streaming and training as users run them there.

Skipped, saying why, where torch sees no GPU (CI, the CPU machines);
``tools/device_check.sh tests`` runs them on the lent GPU machine (``-m cuda``).

- streamed equals whole-image segmentation on the GPU (UperNet and Semantic
  FPN, sides that are multiples of neither 32 nor the bands, many bands),
  with the token tensors on the GPU and in pinned host memory; on disk, the
  labels of the tokens on the GPU;
- the fast CPU route is never taken for a CUDA input;
- fp16 and bf16 backbone inference at 2048 x 2048: finite and close to fp32,
  and UFO attention finite in fp16 at 4096 x 4096;
- ``tools/train.py --amp``: AmpOptimWrapper in fp16 with dynamic loss scaling
  on the seg demo setup: finite losses that fall; ``--amp`` alone picks bf16
  where the GPU has it, and the log says which.
"""
import math

import numpy as np
import pytest
import torch

from tests.streaming.test_segmentation import (HW, SEM_FPN, UPERNET, assert_same_prediction,
                                               build, small_cfg)
from tests.tiny_seg_training import logged_scalars, make_data, write_config
from tests.tool_runner import run_tool
from ufo_mm.models import UFOViT
from ufo_mm.models.ufo_vit import REFERENCE
from ufo_mm.streaming.inputs import array_source, tensor_source
from ufo_mm.streaming.predict import predict, segment_large

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason='needs a CUDA GPU (torch.cuda.is_available() is False)')]
BANDS = dict(band_rows=13, tokens_per_band=40)


@pytest.fixture(autouse=True)
def strict_fp32():
    """Exact float32 on the GPU (no TF32 matmuls / convolutions) inside each test."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize('token_device', ['cuda', 'cpu'])
@pytest.mark.parametrize('config', [UPERNET, SEM_FPN], ids=['upernet', 'semantic-fpn'])
def test_streamed_equals_whole_on_cuda(config, token_device):
    model = build(small_cfg(config)).cuda()
    torch.manual_seed(1)
    image = torch.randn(1, 3, *HW, device='cuda')
    meta = dict(ori_shape=HW, img_shape=HW, pad_shape=HW)
    info = {}
    with torch.no_grad():
        ref = model.inference(image, [meta])
        labels, logits = predict(model, tensor_source(image), 3, meta, with_logits=True,
                                 token_device=token_device, info=info, **BANDS)
    assert info['token_place'] == ('compute' if token_device == 'cuda' else 'host')
    assert logits.is_cuda
    assert_same_prediction(logits, ref, labels.to(ref.device), ref.argmax(1))


def test_segment_large_on_cuda_equals_cpu_labels():
    """An image in host memory: uint8 rows go up, labels come back band by band
    as uint8, equal to the CPU's (and the same with the tokens on the host)."""
    model = build(small_cfg(UPERNET, num_classes=9))
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, HW + (3,), dtype=np.uint8)
    with torch.no_grad():
        cpu = segment_large(model, img, band_rows=11, tokens_per_band=60)
        model.cuda()
        gpu = segment_large(model, img, band_rows=11, tokens_per_band=60)
        host = segment_large(model, img, band_rows=11, tokens_per_band=60, token_device='cpu')
    assert gpu.dtype == np.uint8 and gpu.shape == HW
    assert (gpu == cpu).mean() >= 0.999
    assert np.array_equal(gpu, host)


@pytest.mark.parametrize('dtype', [None, torch.bfloat16])
def test_tokens_on_disk_with_a_gpu_computation(tmp_path, dtype):
    """token_device 'disk' on CUDA: each band read from its file goes up to the
    GPU, each result comes back to the file; labels equal to the tokens kept
    on the GPU (same token dtype), handed band by band to a sink."""
    model = build(small_cfg(UPERNET, num_classes=9)).cuda()
    img = np.random.default_rng(3).integers(0, 256, HW + (3,), dtype=np.uint8)
    kw = dict(band_rows=11, tokens_per_band=60, token_dtype=dtype)
    info, got = {}, []
    with torch.no_grad():
        ref = segment_large(model, img, token_device='cuda', **kw)
        assert segment_large(model, img, token_device='disk', info=info, scratch_dir=tmp_path,
                             labels_sink=lambda a, b, rows: got.append(rows.copy()),
                             **kw) is None
    assert info['token_place'] == 'disk'
    assert np.array_equal(np.concatenate(got), ref)
    assert list(tmp_path.iterdir()) == []


def test_array_source_normalises_on_the_device():
    model = build(small_cfg(UPERNET)).cuda()
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    node, _ = array_source(img, model.data_preprocessor, 'cuda')
    rows = node.compute(3, 9)
    assert rows.is_cuda and rows.dtype == torch.float32
    ref, _ = array_source(img, model.cpu().data_preprocessor)
    assert torch.allclose(rows.cpu(), ref.compute(3, 9))


def test_fast_cpu_route_is_never_taken_on_cuda():
    model = UFOViT('tiny_12_p16').eval().cuda()
    x = torch.randn(1, 3, 64, 64, device='cuda')
    with torch.no_grad():
        assert model.kernels_for(x) is REFERENCE
        assert all(o.is_cuda for o in model(x))


@pytest.fixture(scope='module')
def s12():
    torch.manual_seed(0)
    return UFOViT('small_12_p16').eval().cuda()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_half_precision_backbone_at_2048_is_finite_and_close_to_fp32(s12, dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bf16')
    x = torch.randn(1, 3, 2048, 2048, device='cuda')
    with torch.no_grad():
        ref = s12(x)
        with torch.autocast('cuda', dtype=dtype):
            out = s12(x)
    for o, r in zip(out, ref):
        assert torch.isfinite(o).all()
        err = (o.float() - r).norm() / r.norm()
        assert err < (2e-2 if dtype == torch.float16 else 5e-2), err


def test_ufo_attention_finite_in_fp16_at_4096(s12):
    """4096 x 4096 at patch 16: 65536 tokens; a plain fp16 k^T v of inputs this
    large would overflow (> 65504)."""
    x = 3 * torch.randn(1, 3, 4096, 4096, device='cuda')
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        out = s12(x)
    assert all(torch.isfinite(o).all() for o in out)
    attn = s12.blocks[0].attn
    t = 30 * torch.randn(1, 256 * 256, 384, device='cuda')
    with torch.no_grad():
        _, k, v = attn.split_heads(t)
        assert (k.transpose(-2, -1) @ v).abs().max() > 65504, 'too small to test overflow'
        with torch.autocast('cuda', dtype=torch.float16):
            assert torch.isfinite(attn(t)).all()


@pytest.mark.parametrize('amp_dtype', ['fp16', 'auto'])
def test_amp_training_on_cuda(tmp_path, amp_dtype):
    data_root = make_data(tmp_path / 'data', num_train=8, img_size=64)
    config = write_config(tmp_path / 'tiny_upernet.py', data_root, max_iters=12,
                          ckpt_interval=12, lr=2e-3)
    work_dir = tmp_path / 'work'
    # the tiny config asks for deterministic algorithms (for the CPU resume tests); UperNet's
    # pyramid pooling has no deterministic backward on CUDA
    proc = run_tool('train.py', config, '--work-dir', work_dir, '--amp', '--amp-dtype', amp_dtype,
                    '--cfg-options', 'randomness.deterministic=False')
    expected = 'float16' if amp_dtype == 'fp16' or not torch.cuda.is_bf16_supported() \
        else 'bfloat16'
    assert f'AmpOptimWrapper in {expected}' in proc.stdout + proc.stderr
    losses = [r['loss'] for r in logged_scalars(work_dir) if 'loss' in r]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[0], losses
