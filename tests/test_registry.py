"""`custom_imports=['ufo_mm']` is all a config needs, for mmdet, mmseg and
mmpretrain (where it is installed)."""
import importlib.util
import subprocess
import sys
import textwrap

import pytest

from tests.tool_runner import run_tool

CONFIG = textwrap.dedent("""
    custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)
    backbone = dict(type='UFOViT', arch=dict(embed_dims=64, num_heads=4, depth=4),
                    norm_cfg=dict(type='BN'))
""")

BUILD = textwrap.dedent("""
    import sys
    assert 'ufo_mm' not in sys.modules
    from mmengine.config import Config
    cfg = Config.fromfile(sys.argv[1])   # custom_imports runs here
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    import torch
    for registry in (DET, SEG):
        model = registry.build(cfg.backbone)
        feats = model(torch.randn(1, 3, 64, 64))
        print(registry.scope, type(model).__module__, type(model).__name__,
              [tuple(f.shape) for f in feats])
""")


def build_in_fresh_process(tmp_path, config: str, script: str) -> list:
    """Run ``script`` on the config text ``config`` in a new interpreter (nothing
    imported yet); its printed lines."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(config)
    path = tmp_path / 'build.py'
    path.write_text(script)
    return run_tool(path, cfg, timeout=300).stdout.strip().splitlines()


def test_custom_imports_registers_in_mmdet_and_mmseg(tmp_path):
    lines = build_in_fresh_process(tmp_path, CONFIG, BUILD)
    shapes = '[(1, 64, 16, 16), (1, 64, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2)]'
    assert lines == [f'mmdet ufo_mm.models.ufo_vit UFOViT {shapes}',
                     f'mmseg ufo_mm.models.ufo_vit UFOViT {shapes}']


def test_registered_in_both_registries():
    import ufo_mm
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    assert DET.get('UFOViT') is ufo_mm.UFOViT
    assert SEG.get('UFOViT') is ufo_mm.UFOViT
    with_pretrain = importlib.util.find_spec('mmpretrain') is not None
    assert ufo_mm.REGISTERED_IN == ['mmdet', 'mmseg'] + ['mmpretrain'] * with_pretrain


CLS_CONFIG = textwrap.dedent("""
    custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)
    model = dict(
        type='ImageClassifier',
        backbone=dict(type='UFOViTClsBackbone',
                      arch=dict(embed_dims=32, num_heads=2, depth=2, patch_size=8)),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=32))
""")

CLS_BUILD = textwrap.dedent("""
    import sys
    assert 'ufo_mm' not in sys.modules
    from mmengine.config import Config
    cfg = Config.fromfile(sys.argv[1])   # custom_imports runs here
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    import torch
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32), mode='tensor')
    print(type(model.backbone).__name__, type(model.head).__name__, tuple(logits.shape))
""")


def test_custom_imports_registers_the_classifier_in_mmpretrain(tmp_path):
    pytest.importorskip('mmpretrain', reason='mmpretrain is not installed (it needs '
                        'torchvision: requirements/constraints.txt has both)')
    lines = build_in_fresh_process(tmp_path, CLS_CONFIG, CLS_BUILD)
    assert lines[-1] == 'UFOViTClsBackbone LinearClsHead (2, 5)'


def _seg_model(**extra):
    from mmengine.config import ConfigDict  # what a config file gives the segmentor
    return ConfigDict(type='EncoderDecoder',
                data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
                backbone=dict(type='UFOViT', arch=dict(embed_dims=32, num_heads=2, depth=4),
                              **extra.pop('backbone_extra', {})),
                decode_head=dict(type='FCNHead', in_channels=32, channels=16, num_convs=1,
                                 in_index=3, num_classes=3),
                **extra)


@pytest.fixture
def mmseg_scope():
    import ufo_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def test_mmseg_model_pretrained_reaches_backbone_init_cfg(mmseg_scope):
    """mmseg 1.x's EncoderDecoder still passes `pretrained` to the backbone."""
    from mmseg.registry import MODELS
    model = MODELS.build(_seg_model(pretrained='ckpt.pth'))
    assert model.backbone.init_cfg == dict(type='Pretrained', checkpoint='ckpt.pth')


def test_pretrained_and_init_cfg_together_is_an_error(mmseg_scope):
    from mmseg.registry import MODELS
    cfg = _seg_model(pretrained='a.pth', backbone_extra=dict(
        init_cfg=dict(type='Pretrained', checkpoint='b.pth')))
    with pytest.raises(ValueError, match='not both'):
        MODELS.build(cfg)


def test_import_is_light():
    """`import ufo_mm` must not drag in the detector/segmentor/classifier model zoos."""
    code = ('import sys, ufo_mm; print(sorted(m for m in ("mmdet.models", "mmseg.models", '
            '"mmpretrain.models", "torchvision") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
