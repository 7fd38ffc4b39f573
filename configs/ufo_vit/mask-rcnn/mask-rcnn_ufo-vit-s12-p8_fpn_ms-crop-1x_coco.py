# Mask R-CNN + FPN, UFO-ViT-S12/8 backbone, multi-scale + crop training, 1x (12 epochs).
_base_ = './mask-rcnn_ufo-vit-s12-p8_fpn_ms-crop-3x_coco.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]
