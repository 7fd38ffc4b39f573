# Mask R-CNN + FPN, UFO-ViT-S12/8 backbone, multi-scale + crop training, 1x (12 epochs).
_base_ = ['./_base_/mask-rcnn_ufo-vit_fpn_ms-crop_coco.py',
          '../_base_/schedules/coco_adamw_1x.py']

model = dict(backbone=dict(arch='small_12_p8', drop_path_rate=0.05))
