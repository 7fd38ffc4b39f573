"""ufo_mm.deploy (onnx_export, targets) and tools/export_onnx.py: ONNX files
with dynamic H and W that onnxruntime runs at other resolutions than the traced
one, matching PyTorch within 1e-4 (max |diff| / max |reference|)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn

from tests.tiny_seg_training import make_data, write_config
from tests.tool_runner import run_tool
from ufo_mm.deploy.onnx_export import (AdaptiveAvgPool2dExportable, export_onnx,
                                       replace_adaptive_pools)
from ufo_mm.deploy.targets import export_target
from ufo_mm.models import UFOViT

# traced at 224 x 320; checked at other sizes, one not a multiple of 32 (nor 16)
CHECK_SIZES = [(256, 256), (200, 145)]


def rel_err(ref: torch.Tensor, out: np.ndarray) -> float:
    ref = ref.detach().numpy()
    assert ref.shape == out.shape
    return float(np.abs(ref - out).max() / np.abs(ref).max())


def test_backbone_arch_export_dynamic_hw(tmp_path):
    torch.manual_seed(0)
    model = UFOViT(arch='tiny_12_p16')
    model.init_weights()
    ckpt = tmp_path / 't12.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'ufo_t12.onnx'
    module, metadata = export_target('tiny_12_p16', str(ckpt))
    names = export_onnx(module, str(out), shape=(224, 320), metadata=metadata)
    assert ', '.join(names) == 'feat0, feat1, feat2, feat3'

    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    dims = session.get_inputs()[0].shape
    assert dims == ['batch', 3, 'height', 'width']
    model.eval()
    for batch, (h, w) in zip((1, 2), CHECK_SIZES):
        x = torch.randn(batch, 3, h, w)
        with torch.no_grad():
            refs = model(x)
        outs = session.run(None, {'input': x.numpy()})
        for s, ref, o in zip((4, 8, 16, 32), refs, outs):
            assert o.shape == (batch, 192, -(-h // s), -(-w // s))
            assert rel_err(ref, o) < 1e-4


def _tiny_upernet(config_path):
    """The segmentor of a config, built in this process under a temporary mmseg scope."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(str(config_path))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_upernet_segmentor_export_through_tool(tmp_path):
    """Backbone + UperNet decode head (with its pyramid pooling) + resize."""
    config = write_config(tmp_path / 'tiny_upernet.py', make_data(tmp_path / 'data', 2))
    torch.manual_seed(0)
    model = _tiny_upernet(config)
    # non-trivial BN statistics, so eval-mode BN is really exercised
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    ckpt = tmp_path / 'upernet.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = tmp_path / 'upernet.onnx'
    run_tool('export_onnx.py', config, '--checkpoint', ckpt, '--out', out, '--shape', 224, 320)

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert 'logits' in meta['exported'] and meta['preprocess_mean'].startswith('[123.675')
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    model.eval()
    for h, w in CHECK_SIZES:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = nn.functional.interpolate(model._forward(x), size=(h, w), mode='bilinear',
                                            align_corners=False)
        (logits,) = session.run(None, {'input': x.numpy()})
        assert logits.shape == (1, 9, h, w)
        assert rel_err(ref, logits) < 1e-4


@pytest.mark.parametrize('output_size', [1, 2, 3, 6, (2, 5)])
def test_exportable_adaptive_pool_equals_torch(output_size):
    torch.manual_seed(0)
    torch_pool = nn.AdaptiveAvgPool2d(output_size)
    ours = AdaptiveAvgPool2dExportable(output_size)
    for h, w in [(7, 7), (13, 9), (56, 80), (5, 3)]:
        x = 10 * torch.randn(2, 4, h, w)
        torch.testing.assert_close(ours(x), torch_pool(x), rtol=1e-5, atol=1e-5)


def test_pyramid_pooling_exports_with_dynamic_shapes(tmp_path):
    """PPM-like module: plain adaptive pooling cannot be exported with dynamic
    H/W by torch's exporter; after replace_adaptive_pools it exports and runs
    at any size."""
    class PPM(nn.Module):
        def __init__(self):
            super().__init__()
            self.pools = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in (1, 2, 3, 6))

        def forward(self, x):
            return torch.cat([nn.functional.interpolate(p(x), size=x.shape[-2:],
                                                        mode='bilinear') for p in self.pools], 1)

    with pytest.raises(Exception, match='adaptive_avg_pool2d'):
        torch.onnx.export(PPM(), (torch.randn(1, 3, 24, 24),), str(tmp_path / 'plain.onnx'),
                          input_names=['input'], dynamic_axes={'input': {2: 'h', 3: 'w'}},
                          dynamo=False)
    module = PPM()
    reference = PPM()
    assert replace_adaptive_pools(module) == 4
    out = tmp_path / 'ppm.onnx'
    export_onnx(module, str(out), shape=(24, 24), dynamic_batch=False)
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for h, w in [(24, 24), (37, 50), (7, 9)]:
        x = torch.randn(1, 3, h, w)
        (y,) = session.run(None, {'input': x.numpy()})
        assert rel_err(reference(x), y) < 1e-5


def test_export_rejects_bad_arguments(tmp_path):
    proc = run_tool('export_onnx.py', 'tiny_12_p16', '--out', tmp_path / 'x.onnx', '--verify',
                    224, check=False)
    assert proc.returncode == 2 and '--verify takes pairs H W' in proc.stderr
    with pytest.raises(FileNotFoundError, match='not found'):
        export_target(str(tmp_path / 'missing.py'))
    with pytest.raises(ValueError, match='backbone only'):
        export_target('tiny_12_p16', part='neck')
    with pytest.raises(KeyError, match='unknown UFO-ViT arch'):
        export_target('huge_99')


DET_CONFIG = '''
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='UFOViT', init_cfg=None,
                  arch=dict(embed_dims=64, num_heads=2, depth=4, patch_size=16)),
    neck=dict(in_channels=[64] * 4, out_channels=64))
'''


@pytest.mark.slow
def test_detector_backbone_neck_export_through_tool(tmp_path):
    config = tmp_path / 'mask_rcnn_ufo.py'
    config.write_text(DET_CONFIG)
    out = tmp_path / 'det.onnx'
    proc = run_tool('export_onnx.py', config, '--out', out, '--verify', 256, 256, 200, 145)
    # five FPN levels at both sizes, each within 1e-4 of PyTorch (checked by --verify)
    lines = [line for line in proc.stdout.splitlines() if 'rel err' in line]
    assert len(lines) == 10
    assert '(1, 64, 50, 37)' in proc.stdout and '(1, 64, 4, 3)' in proc.stdout
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [o.name for o in session.get_outputs()] == [f'feat{i}' for i in range(5)]
