"""The ImageNet-1k classification configs (mmpretrain): each builds an
``ImageClassifier`` around the UFO-ViT classifier of its arch, and carries the
DeiT/XCiT recipe (optimizer, schedule, augmentation, loss, stochastic depth,
no weight decay on norms, biases, scales, position encoding and class token).

Skipped where mmpretrain is not importable (the torch 2.13 CPU stack has no
torchvision, which mmpretrain's models need)."""
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

pytest.importorskip('mmpretrain', reason='mmpretrain is not installed: it needs torchvision, '
                    'which requirements/constraints-torch2.13-cpu.txt cannot have')

from ufo_mm.engine.distributed import sync_bn_to_bn  # noqa: E402
from ufo_mm.models import UFOViTClassifier, resolve_arch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLS_DIR = REPO / 'configs/ufo_vit/classification'
CONFIGS = sorted(p for p in CLS_DIR.glob('ufo-vit-*_in1k.py'))
IDS = [p.name for p in CONFIGS]
# XCiT's stochastic depth per size (its ImageNet training recipe)
DROP_PATH = {'tiny_12': 0.0, 'small_12': 0.05, 'small_24': 0.1, 'medium_24': 0.15}
ARCHS = {'t12': 'tiny_12', 's12': 'small_12', 's24': 'small_24', 'm24': 'medium_24'}


def arch_of(path: Path) -> str:
    """'ufo-vit-s12-p16_8xb128_in1k.py' -> 'small_12_p16'."""
    size, patch = path.name.split('_')[0].split('-')[2:4]
    return f'{ARCHS[size]}_{patch}'


def build(cfg: Config):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    sync_bn_to_bn(cfg._cfg_dict)  # no process group here
    return MODELS.build(cfg.model)


def test_every_size_and_patch_is_shipped():
    assert IDS == sorted(f'ufo-vit-{s}-p{p}_8xb128_in1k.py' for s in ARCHS for p in (16, 8))


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_builds_the_classifier_of_its_arch(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports.imports == ['ufo_mm'] and cfg.default_scope == 'mmpretrain'
    arch = arch_of(path)
    model = build(cfg)
    setting = resolve_arch(arch)
    C = setting['embed_dims']
    assert type(model.backbone).__name__ == 'UFOViTClsBackbone'
    assert (model.backbone.embed_dims, model.backbone.depth, model.backbone.patch_size) == (
        C, setting['depth'], setting['patch_size'])
    assert model.head.fc.in_features == C and model.head.fc.out_features == 1000
    # the same network as the stand-alone classifier: backbone + the head's fc
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in UFOViTClassifier(arch).parameters())
    rate = DROP_PATH[arch.rsplit('_', 1)[0]]
    assert [b.drop_path.p for b in model.backbone.blocks] == [rate] * model.backbone.depth
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32), mode='tensor')
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize('path', CONFIGS, ids=IDS)
def test_config_follows_the_deit_xcit_recipe(path):
    cfg = Config.fromfile(str(path))
    batch = 8 * cfg.train_dataloader.batch_size
    assert batch == cfg.auto_scale_lr.base_batch_size == 1024
    optim = cfg.optim_wrapper.optimizer
    assert optim.type == 'AdamW' and optim.weight_decay == 0.05
    assert optim.lr == pytest.approx(5e-4 * batch / 512)
    assert cfg.train_cfg.max_epochs == 300
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.by_epoch) == ('LinearLR', 5, True)
    assert (cosine.type, cosine.begin) == ('CosineAnnealingLR', 5) and 'end' not in cosine
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    rand = train['RandAugment']
    assert (rand.num_policies, rand.magnitude_level, rand.magnitude_std,
            rand.policies) == (2, 9, 0.5, 'timm_increasing')  # rand-m9-mstd0.5-inc1
    assert train['RandomErasing'].erase_prob == 0.25 and train['RandomResizedCrop'].scale == 224
    augments = {a.type: a.alpha for a in cfg.model.train_cfg.augments}
    assert augments == {'Mixup': 0.8, 'CutMix': 1.0}
    loss = cfg.model.head.loss
    assert (loss.type, loss.label_smooth_val) == ('LabelSmoothLoss', 0.1)


def test_no_weight_decay_on_norms_biases_scales_and_class_token():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(str(CLS_DIR / 'ufo-vit-s12-p16_8xb128_in1k.py'))
    model = build(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert set(decay) == set(names.values())

    def no_decay(name):
        leaf = name.rsplit('.', 1)[-1]
        return (leaf == 'bias' or 'norm' in name or '.bn.' in name or '.1.weight' in name
                or leaf.startswith('gamma') or 'cls_token' in name or 'pos_embed' in name)

    wrong = {n: wd for n, wd in decay.items() if wd != (0. if no_decay(n) else 0.05)}
    assert not wrong, wrong
    assert decay['backbone.cls_token'] == 0. and decay['backbone.blocks.0.attn.gamma_q'] == 0.
    assert decay['backbone.blocks.0.attn.qkv.weight'] == 0.05
    assert decay['backbone.cls_attn_blocks.1.attn.q.weight'] == 0.05
    assert decay['head.fc.weight'] == 0.05
    assert math.isclose(wrapper.optimizer.defaults['lr'], 1e-3)


DEMO = REPO / 'configs/ufo_vit/demo/ufo-vit-cls-demo_synthetic.py'
DENSE_DEMOS = [REPO / 'configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py',
               REPO / 'configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py']


def test_demo_classifier_has_the_dense_demos_trunk():
    from ufo_mm.models import UFOViT
    cfg = Config.fromfile(str(DEMO))
    arch = cfg.model.backbone.arch.to_dict()
    model = build(cfg)
    trunk = {k: v.shape for k, v in model.backbone.state_dict().items()
             if not k.startswith(('cls_token', 'cls_attn_blocks.', 'norm.'))}
    for path in DENSE_DEMOS:
        dense_arch = Config.fromfile(str(path)).model.backbone.arch.to_dict()
        dense_arch.pop('out_indices', None)
        assert dense_arch == arch, path.name
        dense = UFOViT(arch=Config.fromfile(str(path)).model.backbone.arch.to_dict())
        assert trunk == {k: v.shape for k, v in dense.state_dict().items()
                         if not k.startswith('fpn')}, path.name
    assert cfg.model.head.num_classes == 5 and cfg.train_dataloader.dataset.split == 'train'
    assert cfg.val_dataloader.dataset.split == 'val'


# ------------------------------------------------ classifier checkpoints -> dense configs
DENSE_FROM_CLS = [
    ('demo/ufo-vit-cls-demo_synthetic.py', 'demo/mask-rcnn_ufo-vit-demo_synthetic.py'),
    ('demo/ufo-vit-cls-demo_synthetic.py', 'demo/upernet_ufo-vit-demo_synthetic.py'),
    ('classification/ufo-vit-s12-p16_8xb128_in1k.py',
     'mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py'),
    ('classification/ufo-vit-s12-p16_8xb128_in1k.py',
     'upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'),
]


def classifier_checkpoint(cls_config: str, path: Path) -> dict:
    """A checkpoint as mmpretrain's train.py writes it for ``cls_config``: the
    ImageClassifier's state dict (``backbone.*``, ``head.fc.*``) under
    'state_dict', beside 'meta'. Returns that state dict."""
    torch.manual_seed(1)
    model = build(Config.fromfile(str(REPO / 'configs/ufo_vit' / cls_config)))
    model.init_weights()
    sd = model.state_dict()
    torch.save({'meta': {'iter': 1000, 'dataset_meta': {}}, 'state_dict': sd}, path)
    return sd


def dense_model_from(config: str, checkpoint: Path):
    """The model of a dense config, its backbone's init_cfg pointing at
    ``checkpoint``, built and initialised as the Runner does (init_weights)."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(REPO / 'configs/ufo_vit' / config))
    sync_bn_to_bn(cfg._cfg_dict)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(checkpoint))
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.mark.parametrize('cls_config, dense_config', DENSE_FROM_CLS,
                         ids=[d.split('/')[1] for _, d in DENSE_FROM_CLS])
def test_classifier_checkpoint_initialises_the_dense_backbone(tmp_path, cls_config,
                                                              dense_config):
    from ufo_mm.models.checkpoint_convert import convert_state_dict
    path = tmp_path / 'iter_1000.pth'
    sd = classifier_checkpoint(cls_config, path)
    model = dense_model_from(dense_config, path)
    backbone = model.backbone.state_dict()
    _, report = convert_state_dict(sd, model.backbone)
    # zero missing trunk keys: only the pyramid adapters are new
    assert report['missing'] and all(k.startswith('fpn') for k in report['missing'])
    assert report['unexpected'] == [] and report['shape_mismatch'] == []
    assert sorted(report['dropped_classification']) == sorted(
        k.replace('backbone.', '', 1).replace('head.fc.', 'head.') for k in sd
        if k.startswith(('backbone.cls_token', 'backbone.cls_attn_blocks.', 'backbone.norm.',
                         'head.')))
    trunk = [k for k in backbone if not k.startswith('fpn')]
    assert sorted(report['loaded']) == sorted(trunk)
    for k in trunk:  # the checkpoint's tensors, not the dense model's own init
        assert torch.equal(backbone[k], sd[f'backbone.{k}']), k
