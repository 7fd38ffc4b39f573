"""Every shipped mmdet config (Mask R-CNN, RetinaNet, Cascade Mask R-CNN with
UFO-ViT on COCO, the synthetic demo) loads, builds the model it names, trains
one iteration (finite loss, gradients reach the backbone) and predicts on
synthetic COCO data.

Only what CPU time demands is changed: SyncBN -> BN (no process group) and,
for the model step, 128-px images instead of 800-px ones. The backbone arch,
heads, optimizer with its paramwise rules are the configs' own; the configs'
own training and test pipelines are checked apart, on the synthetic images.
"""
import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from ufo_mm.engine.distributed import sync_bn_to_bn

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIRS = ('configs/ufo_vit/mask-rcnn', 'configs/ufo_vit/retinanet',
               'configs/ufo_vit/cascade-mask-rcnn', 'configs/ufo_vit/demo')
IMG = 128


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> Config:
    return Config.fromfile(str(path))


def load(path: Path) -> Config:
    """Config.fromfile, parsed once per test session (it takes a second or two)."""
    return copy.deepcopy(_load(path))


def det_configs():
    # the classification demo (mmpretrain bases, which need mmpretrain to load) is
    # tests/configs/test_cls_configs.py's
    paths = sorted(p for d in CONFIG_DIRS for p in (REPO / d).glob('*.py')
                   if 'mmpretrain::' not in p.read_text())
    return [p for p in paths if _load(p).get('default_scope') == 'mmdet']


DET_CONFIGS = det_configs()
REAL_CONFIGS = [p for p in DET_CONFIGS if p.name.endswith('_coco.py')]
DEMO_CONFIGS = [p for p in DET_CONFIGS if 'demo' in p.name]
MASK_RCNN_ARCHS = {'t12-p16': ('tiny_12_p16', 192), 's12-p16': ('small_12_p16', 384),
                   's24-p16': ('small_24_p16', 384), 's12-p8': ('small_12_p8', 384)}


def ids(paths):
    return [p.name for p in paths]


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    from ufo_mm.datasets import make_coco
    root = tmp_path_factory.mktemp('coco')
    make_coco(root, num_train=2, num_val=2, img_size=IMG, max_objects=3)
    return root


def point_to(dataset, root: Path, split: str):
    """The config's dataset, on the synthetic data (its 5 shape classes)."""
    from ufo_mm.datasets import COCO_CLASSES
    dataset.data_root = str(root)
    dataset.ann_file = f'annotations/instances_{split}.json'
    dataset.data_prefix = dict(img=f'{split}/')
    dataset.metainfo = dict(classes=COCO_CLASSES)
    return dataset


def small_pipeline(with_mask: bool):
    """128-px version of the pipelines for the model step (the real ones give 800 px)."""
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='Resize', scale=(IMG, IMG), keep_ratio=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]


def cpu_config(path: Path) -> Config:
    cfg = load(path)
    sync_bn_to_bn(cfg._cfg_dict)
    return cfg


def has_masks(cfg) -> bool:
    return 'mask_head' in cfg.model.get('roi_head', {})


def batch(cfg, root: Path, split: str, n: int = 2):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    dataset = copy.deepcopy(cfg.train_dataloader.dataset)
    point_to(dataset, root, split)
    dataset.pipeline = small_pipeline(has_masks(cfg))
    dataset.test_mode = False
    dataset.pop('filter_cfg', None)
    dataset = DATASETS.build(dataset)
    return pseudo_collate([dataset[i] for i in range(n)])


def num_classes(cfg) -> int:
    head = cfg.model.roi_head.bbox_head if 'roi_head' in cfg.model else cfg.model.bbox_head
    return (head[0] if isinstance(head, list) else head).num_classes


def build_detector(cfg):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import ufo_mm  # noqa: F401  (what custom_imports does)
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_expected_configs_are_shipped():
    names = set(ids(DET_CONFIGS))
    for arch in MASK_RCNN_ARCHS:
        for schedule in ('1x', '3x'):
            assert f'mask-rcnn_ufo-vit-{arch}_fpn_ms-crop-{schedule}_coco.py' in names
    assert any(n.startswith('retinanet_ufo-vit') for n in names)
    assert any(n.startswith('cascade-mask-rcnn_ufo-vit') for n in names)
    assert 'mask-rcnn_ufo-vit-demo_synthetic.py' in names


@pytest.mark.parametrize('path', DET_CONFIGS, ids=ids(DET_CONFIGS))
def test_config_loads_ufo_mm(path):
    cfg = load(path)
    assert cfg.custom_imports == dict(imports=['ufo_mm'], allow_failed_imports=False)
    assert cfg.model.backbone.type == 'UFOViT'


@pytest.mark.parametrize('path', REAL_CONFIGS, ids=ids(REAL_CONFIGS))
def test_real_config_follows_the_recipe(path):
    """COCO paths, SyncBN, AdamW 1e-4 / 0.05 with batch 16, the right schedule."""
    cfg = load(path)
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    assert cfg.model.backbone.init_cfg is None
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 0.05)
    assert 'momentum' not in opt
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    epochs = {'1x': 12, '3x': 36}[path.stem.split('_')[-2].split('-')[-1]]
    assert cfg.train_cfg.max_epochs == epochs
    steps = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
    assert steps and steps[0].end == epochs and max(steps[0].milestones) < epochs
    for arch, (name, channels) in MASK_RCNN_ARCHS.items():
        if f'ufo-vit-{arch}_' in path.name:
            assert cfg.model.backbone.arch == name
            assert cfg.model.neck.in_channels == [channels] * 4


def _transforms(pipeline):
    for t in pipeline:
        yield t
        for branch in t.get('transforms', []):
            yield from _transforms(branch if isinstance(branch, list) else [branch])


@pytest.mark.parametrize('path', [p for p in REAL_CONFIGS if 'ms-crop' in p.name],
                         ids=ids([p for p in REAL_CONFIGS if 'ms-crop' in p.name]))
def test_multiscale_crop_pipeline(path, coco_root):
    """The config's own training pipeline: short side 480..800, random crop
    branch, masks and boxes follow the image."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = load(path)
    types = [t['type'] for t in _transforms(cfg.train_pipeline)]
    assert 'RandomChoice' in types and 'RandomCrop' in types
    dataset = DATASETS.build(point_to(copy.deepcopy(cfg.train_dataloader.dataset),
                                      coco_root, 'train2017'))
    shorts = set()
    for seed in range(12):
        np.random.seed(seed)
        sample = dataset[seed % len(dataset)]
        _, h, w = sample['inputs'].shape
        shorts.add(min(h, w))
        assert 480 <= min(h, w) <= 800 and max(h, w) <= 1333
        gt = sample['data_samples'].gt_instances
        if has_masks(cfg):
            assert gt.masks.masks.shape[1:] == (h, w)
        boxes = gt.bboxes.tensor
        assert (boxes[:, 2] <= w + 1e-3).all() and (boxes[:, 3] <= h + 1e-3).all()
    assert len(shorts) > 1  # several scales, not one


def model_and_optimizer(path):
    cfg = load(path)
    return cfg.model.to_dict(), cfg.optim_wrapper.to_dict(), cfg.get('find_unused_parameters')


def distinct_models(paths):
    """One config per distinct (model, optimizer) pair: the 1x and 3x files of
    an arch differ only in their schedule, so one training step covers both."""
    seen, out = [], []
    for p in paths:
        key = model_and_optimizer(p)
        if key not in seen:
            seen.append(key)
            out.append(p)
    return out


MODEL_CONFIGS = distinct_models(DET_CONFIGS)


def test_1x_configs_differ_from_3x_only_in_schedule():
    for p in DET_CONFIGS:
        if '-1x_' in p.name and p.with_name(p.name.replace('-1x_', '-3x_')).exists():
            assert model_and_optimizer(p) == model_and_optimizer(
                p.with_name(p.name.replace('-1x_', '-3x_')))


def fewer_proposals(cfg):
    """Proposal and detection counts only (no weights change): an untrained
    detector keeps 1000 proposals and 100 boxes per image, slow on CPU."""
    if 'rpn_head' in cfg.model:
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
        rcnn = cfg.model.test_cfg.rcnn
    else:
        cfg.model.test_cfg.nms_pre = 200
        rcnn = cfg.model.test_cfg
    rcnn.max_per_img = 10


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=ids(MODEL_CONFIGS))
def test_train_iteration_and_prediction(path, coco_root):
    from mmengine.optim import build_optim_wrapper
    cfg = cpu_config(path)
    fewer_proposals(cfg)
    model = build_detector(cfg)
    assert cfg.model.neck.in_channels == [model.backbone.embed_dims] * 4
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    model.train()
    data = model.data_preprocessor(batch(cfg, coco_root, 'train2017'), True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    # parameters outside the autograd graph (a zero gradient is fine for DDP)
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if cfg.get('find_unused_parameters'):
        # only the stride-4 adapter may idle (RetinaNet starts at stride 8)
        assert no_grad and all(n.startswith('backbone.fpn1.') for n in no_grad), no_grad
    else:
        # DDP would stop on a parameter without gradient
        assert no_grad == []
    assert model.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    optim_wrapper.step()
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)

    model.eval()
    val = batch(cfg, coco_root, 'val2017')
    with torch.no_grad():
        results = model.test_step(val)
    assert len(results) == 2
    for result in results:
        pred = result.pred_instances
        assert pred.bboxes.shape[1:] == (4,)
        assert len(pred.scores) == len(pred.labels) == len(pred.bboxes)
        assert pred.labels.numel() == 0 or pred.labels.max() < num_classes(cfg)
        if has_masks(cfg):
            assert pred.masks.shape[1:] == result.ori_shape


def test_no_weight_decay_on_norms_layer_scales_and_position_encoding():
    from mmengine.optim import build_optim_wrapper
    cfg = cpu_config(REPO / 'configs/ufo_vit/mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py')
    cfg.model.backbone.arch = dict(embed_dims=64, num_heads=4, depth=4)  # only names matter
    cfg.model.neck.in_channels = [64] * 4
    model = build_detector(cfg)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[id(p)] = group['weight_decay']
    wd = {n: decay[id(p)] for n, p in model.named_parameters()}
    no_decay = {'backbone.blocks.0.gamma1', 'backbone.blocks.0.gamma2', 'backbone.blocks.0.gamma3',
                'backbone.blocks.0.attn.gamma_q', 'backbone.blocks.0.attn.gamma_kv',
                'backbone.blocks.0.norm1.weight', 'backbone.blocks.0.norm1.bias',
                'backbone.blocks.0.local_mp.bn.weight',
                'backbone.pos_embed.token_projection.weight',
                'backbone.pos_embed.token_projection.bias'}
    for name in no_decay:
        assert wd[name] == 0., name
    for name in ('backbone.blocks.0.attn.qkv.weight', 'backbone.blocks.1.mlp.fc1.weight',
                 'backbone.patch_embed.proj.0.0.weight', 'neck.fpn_convs.0.conv.weight',
                 'roi_head.bbox_head.shared_fcs.0.weight'):
        assert wd[name] == 0.05, name
