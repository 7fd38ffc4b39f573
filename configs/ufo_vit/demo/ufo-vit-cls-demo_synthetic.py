# The demos' small UFO-ViT classifier trained FROM SCRATCH on the synthetic ImageNet-layout
# shapes, on CPU, in minutes; its checkpoint initialises the Mask R-CNN and UperNet demos'
# backbone (same arch: configs/ufo_vit/_base_/models/ufo-vit-demo.py).
#
# Data (ImageNet folder layout, 5 classes: circle, triangle, square, star, cross; 64 px):
#   python tools/make_demo_data.py imagenet --num-train 2000 --num-val 500
# Train and evaluate (top-1 on the validation split, whose seed training never sees) with
# mmpretrain's own tools (this config needs nothing but its custom_imports):
#   python .venv/lib/python3.11/site-packages/mmpretrain/.mim/tools/train.py \
#       configs/ufo_vit/demo/ufo-vit-cls-demo_synthetic.py --work-dir work_dirs/cls-demo
#   python .venv/lib/python3.11/site-packages/mmpretrain/.mim/tools/test.py \
#       configs/ufo_vit/demo/ufo-vit-cls-demo_synthetic.py work_dirs/cls-demo/iter_1000.pth
# Then fine-tune a dense demo from it (trunk loaded, class token / class attention / norm /
# head reported as dropped):
#   --cfg-options model.backbone.init_cfg._delete_=True model.backbone.init_cfg.type=Pretrained \
#                 model.backbone.init_cfg.checkpoint=work_dirs/cls-demo/iter_1000.pth
# Schedule length: the ONLY knob is train_cfg.max_iters, as in the dense demos.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/schedules/ufo-vit_no-decay.py',
    '../_base_/models/ufo-vit-demo.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

data_root = 'data/synthetic_imagenet'
classes = ('circle', 'triangle', 'square', 'star', 'cross')
img_size = 64
embed_dims = _base_.ufo_vit_demo_arch['embed_dims']

data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='UFOViTClsBackbone',
        arch=_base_.ufo_vit_demo_arch,
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN', requires_grad=True),  # one device: plain BN
        init_cfg=None),  # from scratch
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=len(classes),
        in_channels=embed_dims,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, ),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)))

# Crops keep at least half of the image, so the one shape stays in view.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
dataset_common = dict(type='ImageNet', data_root=data_root, metainfo=dict(classes=classes))
# num_workers=0: decoding 64-px JPEGs is cheap, and worker processes would compete with
# training for the 2 cores.
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(**dataset_common, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(**dataset_common, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# Iteration-based schedule; evaluation and the last checkpoint at max_iters.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=1000000)
val_cfg = dict()
test_cfg = dict()
# AdamW with the ImageNet recipe's no-decay rules; linear warm-up over 100 iterations, then
# cosine decay to lr / 100, ended by the Runner at train_cfg.max_iters.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=_base_.cls_no_decay)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.01, by_epoch=False, begin=0),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000,
                    save_last=True, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
