# UperNet + a small UFO-ViT trained FROM SCRATCH on the synthetic ADE20K data,
# on CPU, in minutes. Same files and layout as the real ADE20K
# (ADEChallengeData2016/{images,annotations}/{training,validation}); write them with
#   python tools/make_demo_data.py ade20k --num-train 1000 --num-val 100 --img-size 128
# Train and evaluate (mIoU on the validation split, drawn from an unseen seed):
#   python tools/train.py configs/ufo_vit/demo/upernet_ufo-vit-demo_synthetic.py
# Schedule length: the ONLY knob is train_cfg.max_iters, as in the detection demo; the poly
# decay (ended by the Runner at max_iters), the validation and the last checkpoint all
# follow it:
#   python tools/train.py CONFIG --cfg-options train_cfg.max_iters=300
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/ufo-vit_no-decay.py', '../_base_/models/ufo-vit-demo.py',
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

crop_size = (128, 128)
data_root = 'data/synthetic_ade20k/ADEChallengeData2016'
embed_dims = _base_.ufo_vit_demo_arch['embed_dims']
num_classes = 9
norm_cfg = dict(type='BN', requires_grad=True)

# StreamingEncoderDecoder: mmseg's EncoderDecoder (same weights, same 'whole' and 'slide'
# modes) with test_cfg mode 'stream' too: exact whole-image inference at any size in bands
# (docs/large_images.md):  --cfg-options model.test_cfg.mode=stream
model = dict(
    type='StreamingEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='UFOViT',
        # the demos' small arch (6 blocks of width 128, patch 8), its pyramid from blocks 1, 3-5
        arch=dict(_base_.ufo_vit_demo_arch, out_indices=(1, 3, 4, 5)),
        drop_path_rate=0.0,
        norm_cfg=norm_cfg,
        init_cfg=None),
    # a light head (64 channels): on CPU the stride-4 fusion costs more than the backbone
    decode_head=dict(in_channels=[embed_dims] * 4, channels=64, num_classes=num_classes,
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dims, channels=64, num_classes=num_classes,
                        norm_cfg=norm_cfg))

# Synthetic classes are not ADE20K's 150, so the generic dataset with their metainfo.
metainfo = dict(
    classes=('stripes', 'checker', 'dots', 'noise', 'circle', 'triangle', 'square', 'star',
             'cross'),
    palette=[[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
             [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]])
dataset_type = 'BaseSegDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
# Whole images at their own resolution: no resize.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
dataset_common = dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                      img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# bf16 autocast where this CPU has native bf16 (AVX512-BF16 / AMX: about 1.5x faster than
# fp32), fp32 elsewhere with a log line saying why (AVX2 only: emulated bf16 trained at
# 7.0 s/iter against 0.42 in fp32). UFO attention accumulates k^T v and its norms in fp32.
# Force a precision: --cfg-options optim_wrapper.type=OptimWrapper (fp32) or
# optim_wrapper.type=BF16AutocastOptimWrapper (bf16). On a GPU: tools/train.py --amp (fp16).
optim_wrapper = dict(
    type='AutoPrecisionOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=_base_.no_decay)

# Iteration-based schedule; validation and the last checkpoint at max_iters.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2000, val_interval=1000000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Linear warm-up over the first 100 iterations, poly decay to 0 over the whole run. The
# poly decay has no `end`: the Runner ends it at train_cfg.max_iters, so the schedule
# follows the length; any length works (runs under 100 iterations end inside the warm-up).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=0),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000000,
                    save_last=True, max_keep_ckpts=1),
    # draws nothing unless asked (test.py --show-dir); then every image, not every 50th
    visualization=dict(type='SegVisualizationHook', interval=1))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
