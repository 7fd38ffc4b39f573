"""A tiny UperNet + UFO-ViT training setup for the reliability tests
(distributed, resume, mixed precision): synthetic ADE20K data and an mmseg
config file, both written under a test's temporary folder, trained by
``run_tool('train.py', CONFIG, '--work-dir', DIR)`` (tests/tool_runner.py).

Kept deterministic on purpose: no dropout anywhere (mmengine re-seeds on
resume instead of restoring RNG state, see docs/reliability.md), data loaded
in the main process, ``randomness=dict(seed=0, deterministic=True)``.
"""
import json
import os.path as osp
from pathlib import Path

import torch

from ufo_mm.datasets import make_ade20k

CONFIG_TEMPLATE = '''
_base_ = ['mmseg::_base_/models/upernet_r50.py']
custom_imports = dict(imports=['ufo_mm'{extra_imports}], allow_failed_imports=False)
default_scope = 'mmseg'
data_root = {data_root!r}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=({img_size}, {img_size})),
    pretrained=None,
    backbone=dict(
        _delete_=True, type='UFOViT',
        arch=dict(embed_dims=32, num_heads=2, depth=4, patch_size=8, out_indices=(0, 1, 2, 3)),
        norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(in_channels=[32] * 4, channels=32, pool_scales=(1, 2, 3, 6),
                     num_classes=9, dropout_ratio={dropout}, norm_cfg=norm_cfg),
    auxiliary_head=None)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),  # uses the global RNG: resume must replay it
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='BaseSegDataset', data_root=data_root, img_suffix='.jpg', seg_map_suffix='.png',
        reduce_zero_label=True,
        metainfo=dict(classes=('stripes', 'checker', 'dots', 'noise', 'circle', 'triangle',
                               'square', 'star', 'cross')),
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr={lr}, betas=(0.9, 0.999), weight_decay=0.01),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=0,
                        end={max_iters})]
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters}, val_interval=1000000)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={ckpt_interval},
                    max_keep_ckpts=-1),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = {custom_hooks}
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=True)
'''


def make_data(root, num_train=8, img_size=64) -> str:
    """Synthetic ADE20K training split; returns mmseg's data_root."""
    return str(make_ade20k(root, num_train=num_train, num_val=1, img_size=img_size, seed=0))


def write_config(path, data_root, max_iters=6, ckpt_interval=2, batch_size=2, img_size=64,
                 lr=1e-3, custom_hooks='[]', extra_imports=(), dropout=0.) -> str:
    """Write the tiny config to ``path``; returns its path as a string."""
    text = CONFIG_TEMPLATE.format(
        data_root=data_root, max_iters=max_iters, ckpt_interval=ckpt_interval,
        batch_size=batch_size, img_size=img_size, lr=lr, custom_hooks=custom_hooks, dropout=dropout,
        extra_imports=''.join(f', {m!r}' for m in extra_imports))
    Path(path).write_text(text)
    return str(path)


def load_state_dict(ckpt_path) -> dict:
    """The model weights and buffers of an mmengine checkpoint (safe loader)."""
    from ufo_mm.safe_load import safe_torch_load
    return safe_torch_load(ckpt_path)['state_dict']


def assert_state_dicts_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:5]}'


def logged_scalars(work_dir) -> list:
    """Every record of the run's vis_data/scalars.json (one per logged iteration)."""
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


def checkpoints(work_dir) -> list:
    return sorted(osp.basename(p) for p in Path(work_dir).glob('iter_*.pth'))
