# Mask R-CNN + FPN with a UFO-ViT backbone on COCO: XCiT's detection recipe
# (docs/model.md section 7), which UFO-ViT follows.
#   - AdamW, lr 1e-4, weight decay 0.05; no decay on norms, layer scales
#     (gamma1/2/3), UFO's per-head gamma_q/gamma_kv and the position encoding
#   - batch 16 = 8 GPUs x 2 images, SyncBN in the backbone
#   - DETR-style multi-scale training (short side 480-800, random crop), 3x
#     schedule (36 epochs, lr x0.1 at epochs 27 and 33)
# The per-arch files next to this one change only the backbone size, its
# drop-path rate and the FPN input width; the *-1x files change the schedule.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='UFOViT',
        arch='small_12_p16',
        drop_path_rate=0.05,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # No ImageNet weights can be downloaded here, so training starts from
        # scratch by default. To fine-tune from an ImageNet UFO-ViT or XCiT
        # checkpoint of the same size (the keys are converted, classification
        # parts dropped and the matched/missing counts logged), set e.g.
        #   init_cfg=dict(type='Pretrained', checkpoint='checkpoints/xcit_small_12_p16_224.pth')
        # or pass --cfg-options model.backbone.init_cfg.type=Pretrained
        #   model.backbone.init_cfg.checkpoint=PATH
        init_cfg=None),
    # every UFO-ViT output has the embedding width C (384 for S12/S24)
    neck=dict(in_channels=[384, 384, 384, 384]))

# augmentation strategy originates from DETR / Sparse RCNN (as XCiT and Swin)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(type='RandomChoiceResize',
                     scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                             (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                             (736, 1333), (768, 1333), (800, 1333)],
                     keep_ratio=True)
            ],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop',
                     crop_type='absolute_range',
                     crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize',
                     scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333),
                             (608, 1333), (640, 1333), (672, 1333), (704, 1333),
                             (736, 1333), (768, 1333), (800, 1333)],
                     keep_ratio=True)
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.,  # LayerNorm and BatchNorm weights and biases
        custom_keys={
            # layer scales blocks.N.gamma1/2/3 and attn.gamma_q / attn.gamma_kv
            '.gamma': dict(decay_mult=0.),
            # Fourier position encoding projection (pos_embed.token_projection)
            'backbone.pos_embed': dict(decay_mult=0.),
        }))

# lr was set for 16 images per iteration (8 GPUs x 2); --auto-scale-lr scales it
auto_scale_lr = dict(enable=False, base_batch_size=16)
