# Cascade Mask R-CNN + FPN with a UFO-ViT-S12/16 backbone on COCO, 1x (12 epochs), with
# the recipe of the Mask R-CNN configs (multi-scale + crop training, AdamW 1e-4, wd 0.05,
# batch 16 = 8 x 2, SyncBN).
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/coco_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/models/ufo-vit-s12-p16.py',
]

model = dict(
    backbone=dict(_base_.ufo_vit_s12_p16, _delete_=True),
    neck=dict(in_channels=[384, 384, 384, 384]))
