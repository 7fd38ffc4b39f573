# XCiT's ADE20K optimizer (docs/model.md section 7) on mmseg's 160k schedule: AdamW lr 6e-5,
# weight decay 0.01 with the UFO-ViT no-decay rules, linear warm-up over 1500 iterations,
# then poly (power 1) decay to 0. lr set for 16 images per iteration (8 GPUs x 2); on
# another number of GPUs pass --auto-scale-lr (tools/train.py) to scale it.
_base_ = ['mmseg::_base_/schedules/schedule_160k.py', './ufo-vit_no-decay.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=_base_.no_decay)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
