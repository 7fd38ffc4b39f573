# Mask R-CNN + FPN, UFO-ViT-T12/16 backbone, multi-scale + crop training, 1x (12 epochs).
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_1x.py']

model = dict(
    backbone=dict(arch='tiny_12_p16', drop_path_rate=0.0),
    neck=dict(in_channels=[192, 192, 192, 192]))
