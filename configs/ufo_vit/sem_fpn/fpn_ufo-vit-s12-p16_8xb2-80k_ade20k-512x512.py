# Semantic FPN + UFO-ViT S12/16 on ADE20K, XCiT's Semantic FPN recipe: 80k iterations,
# 512x512 crops, batch 16 (8 GPUs x 2), AdamW lr 6e-5, wd 0.01, linear warm-up 1500
# iterations then poly decay, SyncBN, single-scale evaluation at 2048x512.
# mmseg's Semantic FPN base (FPN neck + FPNHead, no auxiliary head); the backbone and
# optimizer are those of configs/ufo_vit/upernet/.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/ade20k_adamw-poly_80k.py',
    '../_base_/models/ufo-vit-s12-p16.py',
]

crop_size = (512, 512)
# StreamingEncoderDecoder: mmseg's EncoderDecoder (same weights, same 'whole' and 'slide'
# modes) with test_cfg mode 'stream' too: exact whole-image inference at any size in bands
# (docs/large_images.md):  --cfg-options model.test_cfg.mode=stream
model = dict(
    type='StreamingEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(_base_.ufo_vit_s12_p16, _delete_=True),
    # UFO-ViT gives 4 maps of C=384 channels at strides 4, 8, 16, 32.
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=256),
    decode_head=dict(feature_strides=[4, 8, 16, 32], num_classes=150),
    test_cfg=dict(mode='whole'))

train_dataloader = dict(batch_size=2)  # 8 GPUs x 2 images
