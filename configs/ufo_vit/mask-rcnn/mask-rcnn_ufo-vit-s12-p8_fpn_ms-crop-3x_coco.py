# Mask R-CNN + FPN, UFO-ViT-S12/8 backbone, multi-scale + crop training, 3x (36 epochs).
# XCiT-S12/8 anchor (box/mask AP): 47.0 / 42.3 (3x)
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_3x.py']

model = dict(backbone=dict(arch='small_12_p8', drop_path_rate=0.05))
