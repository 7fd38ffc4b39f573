# UFO-ViT Mask R-CNN trained FROM SCRATCH on the synthetic COCO shapes, on CPU.
#
# Data (real COCO layout, 5 classes: circle, triangle, square, star, cross):
#   python tools/make_demo_data.py coco --num-train 1000 --num-val 200
# Train + evaluate (bbox and segm mAP on the validation split, whose seed
# training never sees):
#   python tools/train.py configs/ufo_vit/demo/mask-rcnn_ufo-vit-demo_synthetic.py
# Measured on 2 CPU cores (docs/detection.md): 900 iterations in about 13
# minutes, data included; bbox mAP 0.428, segm mAP 0.393.
# Schedule length: the ONLY knob is train_cfg.max_iters; the cosine decay (ended
# by the Runner at max_iters), the final evaluation and the last checkpoint all
# follow it:
#   python tools/train.py CONFIG --cfg-options train_cfg.max_iters=500
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/schedules/ufo-vit_no-decay.py',
    '../_base_/models/ufo-vit-demo.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

data_root = 'data/synthetic_coco/'
classes = ('circle', 'triangle', 'square', 'star', 'cross')
img_size = 128
embed_dims = _base_.ufo_vit_demo_arch['embed_dims']
# 64-channel neck and heads: on CPU, RoIAlign (single-threaded in mmcv, its
# backward above all) and the head convolutions cost more than the backbone;
# 128 channels and 128 sampled RoIs ran 2.8x slower per iteration.
neck_channels = 64

# StreamingMaskRCNN: mmdet's MaskRCNN (same weights, same training and test) with test_cfg
# mode 'stream' too: whole-image detection with the backbone, FPN and RPN head in bands
# (docs/large_images.md):  --cfg-options model.test_cfg.mode=stream
model = dict(
    type='StreamingMaskRCNN',
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='UFOViT',
        # the demos' small arch: 6 blocks of width 128, patch 8 (16x16 tokens at 128 px)
        arch=_base_.ufo_vit_demo_arch,
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN', requires_grad=True),  # one device: plain BN
        init_cfg=None),  # from scratch
    neck=dict(in_channels=[embed_dims] * 4, out_channels=neck_channels),
    rpn_head=dict(
        in_channels=neck_channels,
        feat_channels=neck_channels,
        # objects are 15-51 px: anchors 16..256 px instead of 32..512
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        # sampling_ratio=2 instead of adaptive: mmcv's CPU RoIAlign (backward
        # above all) costs per sampling point, and large proposals take many
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=neck_channels),
        bbox_head=dict(in_channels=neck_channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=neck_channels),
        mask_head=dict(num_convs=2, in_channels=neck_channels,
                       conv_out_channels=neck_channels, num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),  # RoIs per image for the box head; 1-8 objects
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=50)))

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# num_workers=0: loading 128-px JPEGs is cheap, and a second process with
# its own OpenMP threads would compete with training for the 2 cores.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# Iteration-based schedule; evaluation and the last checkpoint at max_iters.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=900,
                 val_interval=1000000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
lr = 1e-3
# Linear warm-up over the first 100 iterations, cosine decay to lr / 100 over the
# whole run. The cosine has no `end`: the Runner ends it at train_cfg.max_iters,
# so the schedule follows the length. (Both schedulers' states are plain data,
# which checkpoints loaded with weights_only need; OneCycleLR's is not.)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.01, by_epoch=False, begin=0),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.no_decay,
    clip_grad=dict(max_norm=10., norm_type=2))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000,
                    save_last=True, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
# Seeded (weights, data order, augmentation): the learning proof in
# docs/detection.md is one run, and a rerun on the same machine and thread
# count gives the same numbers. Unseeded, runs differed by ~4 mAP points.
randomness = dict(seed=0)
