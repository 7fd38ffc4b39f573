# Mask R-CNN + FPN, UFO-ViT-S24/16 backbone, multi-scale + crop training, 3x (36 epochs).
# XCiT-S24/16 anchor (box/mask AP): 46.5 / 41.8 (3x)
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_3x.py']

model = dict(backbone=dict(arch='small_24_p16', drop_path_rate=0.1))
