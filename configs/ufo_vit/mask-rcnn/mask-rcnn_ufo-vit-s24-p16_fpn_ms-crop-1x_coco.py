# Mask R-CNN + FPN, UFO-ViT-S24/16 backbone, multi-scale + crop training, 1x (12 epochs).
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_1x.py']

model = dict(backbone=dict(arch='small_24_p16', drop_path_rate=0.1))
