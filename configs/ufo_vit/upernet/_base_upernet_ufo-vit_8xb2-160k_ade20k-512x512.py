# UperNet + UFO-ViT on ADE20K: the recipe UFO-ViT takes from XCiT (docs/model.md section 7).
#   160k iterations, 512x512 crops, batch 16 (8 GPUs x 2 images), AdamW lr 6e-5, wd 0.01,
#   linear warm-up 1500 iterations then poly (power 1) decay to 0, SyncBN,
#   single-scale evaluation at 2048x512 (the ade20k base's test pipeline).
# Shared base of the per-arch files next to it (defaults: S12/16); they change only the
# backbone arch, its stochastic depth, and the heads' input channels.
# Everything else comes from mmseg's own bases: UperNet head + auxiliary FCNHead
# (in_index=2, loss weight 0.4), the ADE20K pipelines and runtime.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/ade20k_adamw-poly_160k.py',
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
    # All four UFO-ViT outputs have C channels (C = 384 for S12/S24).
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    # 'whole' image inference (the ade20k test pipeline resizes to 2048x512 first).
    # Sliding windows instead: the *-slide.py variant, or
    #   --cfg-options model.test_cfg.mode=slide model.test_cfg.crop_size="(512,512)" \
    #                 model.test_cfg.stride="(341,341)"
    test_cfg=dict(mode='whole'))

# 8 GPUs x 2 images (lr set for 16 per iteration); validation: mmseg's 1 image per GPU
train_dataloader = dict(batch_size=2)
