"""The shared bases of configs/ufo_vit/_base_: every family (Mask R-CNN, Cascade
Mask R-CNN, RetinaNet, UperNet, Semantic FPN) and both demos resolve to the same
no-decay rules, the real recipes to the same backbone.
"""
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs/ufo_vit'
BASE = CONFIGS / '_base_'
FAMILIES = {
    'mask-rcnn': 'mask-rcnn/mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-3x_coco.py',
    'cascade-mask-rcnn': 'cascade-mask-rcnn/cascade-mask-rcnn_ufo-vit-s12-p16_fpn_ms-crop-1x_coco.py',
    'retinanet': 'retinanet/retinanet_ufo-vit-s12-p16_fpn_1x_coco.py',
    'upernet': 'upernet/upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py',
    'sem_fpn': 'sem_fpn/fpn_ufo-vit-s12-p16_8xb2-80k_ade20k-512x512.py',
}
DEMOS = {
    'det': 'demo/mask-rcnn_ufo-vit-demo_synthetic.py',
    'seg': 'demo/upernet_ufo-vit-demo_synthetic.py',
}
ALL = {**FAMILIES, **{f'demo-{k}': v for k, v in DEMOS.items()}}


def load(rel: str) -> Config:
    return Config.fromfile(str(CONFIGS / rel))


@pytest.fixture(scope='module')
def resolved():
    return {name: load(rel) for name, rel in ALL.items()}


def test_no_decay_rules_are_one_and_the_same(resolved):
    rules = Config.fromfile(str(BASE / 'schedules/ufo-vit_no-decay.py')).no_decay.to_dict()
    assert rules['norm_decay_mult'] == 0.
    assert set(rules['custom_keys']) == {'.gamma', 'backbone.pos_embed'}
    for name, cfg in resolved.items():
        assert cfg.optim_wrapper.paramwise_cfg.to_dict() == rules, name


def test_real_recipes_share_the_backbone(resolved):
    backbone = Config.fromfile(str(BASE / 'models/ufo-vit-s12-p16.py')).ufo_vit_s12_p16.to_dict()
    assert backbone['norm_cfg']['type'] == 'SyncBN'
    for name in FAMILIES:
        # the ResNet-50 keys of the mmdet/mmseg model bases are gone (_delete_)
        assert resolved[name].model.backbone.to_dict() == backbone, name
        assert resolved[name].custom_imports.imports == ['ufo_mm']
    for name in DEMOS:
        assert resolved[f'demo-{name}'].model.backbone.norm_cfg.type == 'BN'
