# RetinaNet + FPN with a UFO-ViT-S12/16 backbone on COCO, 1x (12 epochs),
# single-scale training (1333x800) as mmdet's RetinaNet baselines; the
# optimizer is the UFO-ViT/XCiT one (AdamW 1e-4, wd 0.05, batch 16 = 8 x 2).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='UFOViT',
        arch='small_12_p16',
        drop_path_rate=0.05,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # from scratch; for ImageNet UFO-ViT/XCiT weights set
        # init_cfg=dict(type='Pretrained', checkpoint=PATH) (see docs/detection.md)
        init_cfg=None),
    # RetinaNet uses strides 8-128: the stride-4 output (and its up-sampling
    # adapter fpn1) is skipped by start_level=1, plus two extra levels.
    neck=dict(in_channels=[384, 384, 384, 384], start_level=1,
              add_extra_convs='on_input', num_outs=5))
# fpn1 gets no gradient (its output is not used): DDP must be told, or it
# stops with "Expected to have finished reduction in the prior iteration".
find_unused_parameters = True

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'.gamma': dict(decay_mult=0.), 'backbone.pos_embed': dict(decay_mult=0.)}))
