# Mask R-CNN + FPN with a UFO-ViT backbone on COCO: XCiT's detection recipe (docs/model.md
# section 7), which UFO-ViT follows, less its schedule: the S12/16 backbone with SyncBN,
# DETR-style multi-scale + crop training, 16 images per iteration (8 GPUs x 2).
# Each file next to it adds a schedule (AdamW with no decay on norms, layer scales and the
# position encoding; 1x or 3x) and changes the arch, its drop path and the FPN width.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../../_base_/datasets/coco_instance_ms-crop.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/models/ufo-vit-s12-p16.py',
]

# StreamingMaskRCNN: mmdet's MaskRCNN (same weights, same training and test) with test_cfg
# mode 'stream' too: whole-image detection with the backbone, FPN and RPN head in bands
# (docs/large_images.md):  --cfg-options model.test_cfg.mode=stream
# (add model.test_cfg.mask_format=rle for large images: masks as COCO RLE, not (N, H, W))
model = dict(
    type='StreamingMaskRCNN',
    backbone=dict(_base_.ufo_vit_s12_p16, _delete_=True),
    # every UFO-ViT output has the embedding width C (384 for S12/S24)
    neck=dict(in_channels=[384, 384, 384, 384]))
