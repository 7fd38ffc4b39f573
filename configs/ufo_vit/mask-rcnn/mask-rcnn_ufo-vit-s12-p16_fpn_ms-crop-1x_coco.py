# Mask R-CNN + FPN, UFO-ViT-S12/16 backbone, multi-scale + crop training, 1x (12 epochs).
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_1x.py']
