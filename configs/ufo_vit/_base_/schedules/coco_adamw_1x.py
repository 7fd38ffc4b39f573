# XCiT's COCO optimizer (docs/model.md section 7) on mmdet's 1x schedule (12 epochs, lr x0.1
# at epochs 8 and 11): AdamW lr 1e-4, weight decay 0.05 with the UFO-ViT no-decay rules,
# 1000 iterations of linear warm-up; lr set for 16 images per iteration (8 GPUs x 2),
# --auto-scale-lr scales it (mmdet's auto_scale_lr, base_batch_size=16).
_base_ = ['mmdet::_base_/schedules/schedule_1x.py', './ufo-vit_no-decay.py']

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=_base_.no_decay)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
