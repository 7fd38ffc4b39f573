# Semantic FPN + UFO-ViT S12/16 on ADE20K, XCiT's Semantic FPN recipe: 80k iterations,
# 512x512 crops, batch 16 (8 GPUs x 2), AdamW lr 6e-5, wd 0.01, linear warm-up 1500
# iterations then poly decay, SyncBN, single-scale evaluation at 2048x512.
# mmseg's Semantic FPN base (FPN neck + FPNHead, no auxiliary head); the backbone and
# optimizer settings are those of configs/ufo_vit/upernet/.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='UFOViT',
        arch='small_12_p16',
        drop_path_rate=0.05,
        norm_cfg=norm_cfg,
        # From an ImageNet UFO-ViT/XCiT checkpoint instead of scratch:
        #   init_cfg=dict(type='Pretrained', checkpoint='pretrain/xcit_small_12_p16_224.pth')
        init_cfg=None),
    # UFO-ViT gives 4 maps of C=384 channels at strides 4, 8, 16, 32.
    neck=dict(in_channels=[384, 384, 384, 384], out_channels=256),
    decode_head=dict(feature_strides=[4, 8, 16, 32], num_classes=150),
    test_cfg=dict(mode='whole'))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={
            'norm': dict(decay_mult=0.),
            'gamma': dict(decay_mult=0.),
            'pos_embed': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
