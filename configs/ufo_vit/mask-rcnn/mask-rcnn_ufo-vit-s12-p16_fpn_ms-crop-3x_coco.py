# Mask R-CNN + FPN, UFO-ViT-S12/16 backbone, multi-scale + crop training, 3x (36 epochs).
# XCiT-S12/16 anchor (box/mask AP): 45.3 / 40.8 (3x)
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_3x.py']
