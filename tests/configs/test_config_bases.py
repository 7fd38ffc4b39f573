"""The shared bases of configs/ufo_vit/_base_: every family (Mask R-CNN, Cascade
Mask R-CNN, RetinaNet, UperNet, Semantic FPN) and both demos resolve to the same
no-decay rules, the real recipes to the same backbone; each demo's schedule
follows its one knob, ``train_cfg.max_iters``.
"""
from pathlib import Path

import pytest
import torch
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


class ToyModel(torch.nn.Module):
    """The smallest model a Runner trains: one weight, a squared loss."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def train_step(self, data, optim_wrapper):
        loss = (self.w * data).pow(2).mean()
        optim_wrapper.update_params(loss)
        return dict(loss=loss)


def train_demo_schedule(rel: str, work_dir: Path, options: dict):
    """The demo's train loop, schedulers and checkpoint hook, after ``--cfg-options``
    ``options``, run by a Runner on a one-weight model (plain AdamW: only the
    schedule matters here)."""
    from mmengine.runner import Runner
    cfg = load(rel)
    cfg.merge_from_dict(options)
    runner = Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=torch.ones(4, 1), batch_size=1,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=cfg.train_cfg.to_dict(),
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='AdamW', lr=cfg.optim_wrapper.optimizer.lr)),
        param_scheduler=cfg.param_scheduler.copy(),
        default_hooks=dict(checkpoint=cfg.default_hooks.checkpoint.to_dict()),
        default_scope='mmengine', log_level='WARNING')
    runner.train()
    return cfg, runner


@pytest.mark.parametrize('demo', sorted(DEMOS))
@pytest.mark.parametrize('iters', [37, 3])  # 3: shorter than the warm-up
def test_demo_schedule_follows_train_cfg_max_iters(demo, iters, tmp_path):
    rel = DEMOS[demo]
    default = load(rel)
    assert default.train_cfg.max_iters > 37
    assert 'max_iters' not in default and 'warmup_iters' not in default  # no stale copies
    cfg, runner = train_demo_schedule(rel, tmp_path, {'train_cfg.max_iters': iters})
    assert cfg.train_cfg.max_iters == iters == runner.iter
    warmup, decay = runner.param_schedulers
    assert (type(warmup).__name__, warmup.end) == ('LinearLR', 100)
    # the decay has no `end` of its own: the Runner ends it at the overridden length
    assert 'end' not in cfg.param_scheduler[1]
    assert (decay.begin, decay.end) == (0, iters)
    # validation happens at the end of training whatever the length; the last checkpoint
    # is written at max_iters (and only that one is kept)
    assert cfg.train_cfg.val_interval >= 1000000 and cfg.default_hooks.checkpoint.save_last
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == [f'iter_{iters}.pth']


def test_demos_have_no_environment_knob():
    for rel in DEMOS.values():
        assert '$' not in (CONFIGS / rel).read_text()
