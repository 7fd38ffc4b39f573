# Mask R-CNN + FPN, UFO-ViT-S12/16 backbone, multi-scale + crop training, 3x (36 epochs).
# XCiT-S12/16 anchor (box/mask AP): 45.3 / 40.8 (3x)
_base_ = './_base_/mask-rcnn_ufo-vit_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(arch='small_12_p16', drop_path_rate=0.05),
    neck=dict(in_channels=[384, 384, 384, 384]))
