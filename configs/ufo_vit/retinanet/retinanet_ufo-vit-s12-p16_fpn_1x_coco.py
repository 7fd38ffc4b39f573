# RetinaNet + FPN with a UFO-ViT-S12/16 backbone on COCO, 1x (12 epochs), single-scale
# training (1333x800) as mmdet's RetinaNet baselines; the optimizer is the UFO-ViT/XCiT
# one (AdamW 1e-4, wd 0.05, batch 16 = 8 x 2).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/coco_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/models/ufo-vit-s12-p16.py',
]

model = dict(
    backbone=dict(_base_.ufo_vit_s12_p16, _delete_=True),
    # RetinaNet uses strides 8-128: the stride-4 output (and its up-sampling
    # adapter fpn1) is skipped by start_level=1, plus two extra levels.
    neck=dict(in_channels=[384, 384, 384, 384], start_level=1,
              add_extra_convs='on_input', num_outs=5))
# fpn1 gets no gradient (its output is not used): DDP must be told, or it
# stops with "Expected to have finished reduction in the prior iteration".
find_unused_parameters = True
