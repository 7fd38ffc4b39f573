"""Every shipped mmseg config (UperNet / Semantic FPN with UFO-ViT on ADE20K, the
synthetic demo) loads, builds, trains one iteration and predicts in both
``whole`` and ``slide`` mode on synthetic ADE20K data.

The real ADE20K configs are shrunk only where CPU time demands it (64x64
inputs instead of 512x512 crops, SyncBN -> BN); model, heads, optimizer with
its paramwise rules, and the pipelines' transforms are the configs' own.
"""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict

from ufo_mm.engine.distributed import sync_bn_to_bn

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIRS = ('configs/ufo_vit/upernet', 'configs/ufo_vit/sem_fpn', 'configs/ufo_vit/demo')
IMG = 64


def _default_scope(path: Path) -> str:
    return Config.fromfile(str(path)).get('default_scope')


def seg_configs():
    # the classification demo (mmpretrain bases) is tests/configs/test_cls_configs.py's
    paths = sorted(p for d in CONFIG_DIRS for p in (REPO / d).glob('*.py')
                   if 'mmpretrain::' not in p.read_text())
    return [p for p in paths if _default_scope(p) == 'mmseg']


SEG_CONFIGS = seg_configs()
REAL_CONFIGS = [p for p in SEG_CONFIGS if 'ade20k-512x512' in p.name]
CONFIG_IDS = [p.name for p in SEG_CONFIGS]


def test_expected_configs_are_shipped():
    names = {p.name for p in SEG_CONFIGS}
    for arch in ('t12-p16', 's12-p16', 's24-p16', 's12-p8'):
        assert f'upernet_ufo-vit-{arch}_8xb2-160k_ade20k-512x512.py' in names
    assert any(n.startswith('fpn_ufo-vit') for n in names)
    assert 'upernet_ufo-vit-demo_synthetic.py' in names


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    from ufo_mm.datasets import make_ade20k
    return make_ade20k(tmp_path_factory.mktemp('ade'), num_train=2, num_val=2, img_size=IMG)


def shrink_pipeline(pipeline):
    """Real ADE20K scales (2048x512, 512 crops) -> a 64-pixel version."""
    for t in pipeline:
        if t['type'] in ('RandomResize', 'Resize') and 'scale' in t:
            t['scale'] = (2 * IMG, IMG)
        if t['type'] == 'RandomCrop':
            t['crop_size'] = (IMG, IMG)
    return pipeline


def cpu_config(path: Path, data_root: Path) -> Config:
    cfg = Config.fromfile(str(path))
    sync_bn_to_bn(cfg._cfg_dict)
    cfg.model.data_preprocessor.size = (IMG, IMG)
    for loader in ('train_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        dataset.data_root = str(data_root)
        shrink_pipeline(dataset.pipeline)
    return cfg


def build_segmentor(cfg):
    import ufo_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(cfg, loader: str, num: int):
    from mmengine.dataset import pseudo_collate
    from mmseg.registry import DATASETS
    dataset = DATASETS.build(cfg[loader].dataset)
    return pseudo_collate([dataset[i] for i in range(num)]), dataset


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=CONFIG_IDS)
def test_config_trains_and_predicts_whole_and_slide(path, ade_root):
    from mmengine.optim import build_optim_wrapper
    cfg = cpu_config(path, ade_root)
    assert 'ufo_mm' in cfg.custom_imports['imports']
    assert cfg.model.backbone.type == 'UFOViT'
    torch.manual_seed(0)
    model = build_segmentor(cfg)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    data, _ = batch(cfg, 'train_dataloader', 2)
    model.train()
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    losses = model.train_step(data, optim_wrapper)
    assert torch.isfinite(losses['loss']), losses
    assert 'decode.loss_ce' in losses
    if cfg.model.get('auxiliary_head'):
        assert 'aux.loss_ce' in losses
    changed = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert 'patch_embed.proj.0.0.weight' in changed and 'blocks.0.attn.qkv.weight' in changed

    model.eval()
    data, dataset = batch(cfg, 'test_dataloader', 1)
    num_classes = cfg.model.decode_head.num_classes
    modes = [dict(mode='whole'), dict(mode='slide', crop_size=(48, 48), stride=(32, 32))]
    preds = {}
    for test_cfg in modes:
        model.test_cfg = ConfigDict(test_cfg)
        with torch.no_grad():
            (sample,) = model.test_step(copy.deepcopy(data))
        pred = sample.pred_sem_seg.data
        # predictions come back at the original image size, whatever the test-time resize
        assert pred.shape == (1, IMG, IMG) == sample.gt_sem_seg.data.shape
        assert sample.seg_logits.data.shape == (num_classes, IMG, IMG)
        assert 0 <= int(pred.min()) and int(pred.max()) < num_classes
        preds[test_cfg['mode']] = sample.seg_logits.data
    # slide really tiles the (resized) image: logits differ from one whole pass
    assert not torch.allclose(preds['whole'], preds['slide'])


@pytest.mark.parametrize('path', REAL_CONFIGS, ids=[p.name for p in REAL_CONFIGS])
def test_real_configs_follow_the_ade20k_recipe(path):
    cfg = Config.fromfile(str(path))
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.model.backbone.init_cfg is None and cfg.model.pretrained is None
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.data_preprocessor.size == (512, 512)
    crop = [t for t in cfg.train_pipeline if t['type'] == 'RandomCrop'][0]
    assert crop['crop_size'] == (512, 512)
    # batch 16 as 8 GPUs x 2
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 6e-5, 0.01)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 1500)
    total = 160000 if '-160k_' in path.name else 80000
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == \
        ('PolyLR', 1.0, 0.0, 1500, total)
    assert cfg.train_cfg.max_iters == total
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'Resize'][0]
    assert resize['scale'] == (2048, 512) and resize['keep_ratio']
    if 'upernet' in path.name:
        C = cfg.model.decode_head.in_channels[0]
        assert cfg.model.decode_head.in_channels == [C] * 4
        aux = cfg.model.auxiliary_head
        assert (aux.type, aux.in_index, aux.in_channels) == ('FCNHead', 2, C)


@pytest.mark.parametrize('name, C, depth', [
    ('upernet_ufo-vit-t12-p16_8xb2-160k_ade20k-512x512.py', 192, 12),
    ('upernet_ufo-vit-s24-p16_8xb2-160k_ade20k-512x512.py', 384, 24),
])
def test_head_channels_match_backbone(name, C, depth):
    from ufo_mm.models.ufo_vit import resolve_arch
    cfg = Config.fromfile(str(REPO / 'configs/ufo_vit/upernet' / name))
    arch = resolve_arch(cfg.model.backbone.arch)
    assert (arch['embed_dims'], arch['depth']) == (C, depth)
    assert cfg.model.decode_head.in_channels == [C] * 4
    assert cfg.model.auxiliary_head.in_channels == C


def test_slide_variant_differs_only_in_test_mode():
    base = Config.fromfile(str(REPO / 'configs/ufo_vit/upernet/'
                               'upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'))
    slide = Config.fromfile(str(REPO / 'configs/ufo_vit/upernet/'
                                'upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512-slide.py'))
    assert base.model.test_cfg == dict(mode='whole')
    assert slide.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    slide.model.test_cfg = base.model.test_cfg
    assert slide.model.to_dict() == base.model.to_dict()
    assert slide.train_dataloader.to_dict() == base.train_dataloader.to_dict()


def test_no_weight_decay_on_norms_gammas_and_position_encoding():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(str(REPO / 'configs/ufo_vit/upernet/'
                              '_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'))
    sync_bn_to_bn(cfg._cfg_dict)
    cfg.model.backbone.arch = dict(embed_dims=64, num_heads=2, depth=4, patch_size=16)
    cfg.model.decode_head.in_channels = [64] * 4
    cfg.model.auxiliary_head.in_channels = 64
    model = build_segmentor(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    no_decay = ['backbone.blocks.0.norm1.weight', 'backbone.blocks.1.norm3.bias',
                'backbone.blocks.0.gamma1', 'backbone.blocks.3.gamma2',
                'backbone.blocks.0.attn.gamma_q', 'backbone.blocks.0.attn.gamma_kv',
                'backbone.pos_embed.token_projection.weight',
                'backbone.patch_embed.proj.0.1.weight',  # BN of the patch embedding
                'backbone.blocks.0.local_mp.bn.weight', 'backbone.fpn1.1.weight',
                'decode_head.bottleneck.bn.weight']
    for name in no_decay:
        assert decay[name] == 0., name
    for name in ('backbone.blocks.0.attn.qkv.weight', 'backbone.blocks.2.mlp.fc1.weight',
                 'backbone.patch_embed.proj.0.0.weight', 'decode_head.conv_seg.weight'):
        assert decay[name] == pytest.approx(0.01), name


def test_demo_validates_on_the_unseen_split_at_native_size():
    # (its schedule knob, train_cfg.max_iters: tests/configs/test_config_bases.py)
    cfg = Config.fromfile(str(REPO / 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py'))
    assert cfg.val_dataloader.dataset.data_prefix.img_path == 'images/validation'
    assert not [t for t in cfg.test_pipeline if 'Resize' in t['type']]
