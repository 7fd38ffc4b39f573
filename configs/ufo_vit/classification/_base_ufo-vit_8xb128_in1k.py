# ImageNet-1k pretraining of the UFO-ViT classifier with mmpretrain: the DeiT/XCiT recipe
# (docs/pretraining.md). Shared base of the per-arch files next to it (defaults: S12/16);
# they change only the backbone arch, its stochastic depth and the head's input channels.
#   batch 1024 (8 GPUs x 128), AdamW, lr 5e-4 x 1024 / 512 = 1e-3, weight decay 0.05 (none on
#   norms, biases, layer scales, XNorm scales, position encoding, class token), 300 epochs,
#   5 epochs of linear warm-up then cosine decay to 1e-5, RandAugment (rand-m9-mstd0.5-inc1),
#   random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, SyncBN.
# mmpretrain's own bases give the ImageNet pipelines (RandomResizedCrop 224, flip,
# RandAugment, RandomErasing; resize 256 + centre crop 224 for validation), AdamW and the
# runtime; mmpretrain's tools train and test it with nothing but the custom_imports below.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/schedules/ufo-vit_no-decay.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='UFOViTClsBackbone',
        arch='small_12_p16',
        # XCiT applies its rate to every block (a dense config ramps it up linearly)
        drop_path_rate=0.05,
        drop_path_schedule='constant',
        # for multi-GPU training; mmengine's Runner turns it into BN on one device or CPU
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=None),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    # one of the two per batch, with equal probability (timm's switch_prob 0.5)
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# 8 GPUs x 128 images: the lr of the schedule base is set for 1024 per iteration
# (5e-4 x 1024 / 512); with another batch, add --auto-scale-lr to mmpretrain's train.py.
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05),
    # no decay on norms, biases, layer/XNorm scales, position encoding and class token
    # (_delete_: not the Swin rules of mmpretrain's schedule base)
    paramwise_cfg=dict(_base_.cls_no_decay, _delete_=True))

warmup_epochs = 5
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=warmup_epochs),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
auto_scale_lr = dict(base_batch_size=1024)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3,
                                     save_best='auto'))
