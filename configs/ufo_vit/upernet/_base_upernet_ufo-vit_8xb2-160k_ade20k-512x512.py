# UperNet + UFO-ViT on ADE20K: the recipe UFO-ViT takes from XCiT (docs/model.md section 7).
#   160k iterations, 512x512 crops, batch 16 (8 GPUs x 2 images), AdamW lr 6e-5, wd 0.01,
#   linear warm-up 1500 iterations then poly (power 1) decay to 0, SyncBN,
#   single-scale evaluation at 2048x512 (the ade20k base's test pipeline).
# Shared base of the per-arch files next to it (defaults: S12/16); they change only the
# backbone arch, its stochastic depth, and the heads' input channels.
# Everything not set here comes from mmseg's own bases: UperNet head + auxiliary FCNHead
# (in_index=2, loss weight 0.4), the ADE20K pipelines, runtime and 160k schedule.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

crop_size = (512, 512)
# SyncBN for multi-GPU training; mmengine's Runner turns it into BN on one device or CPU.
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
        # No ImageNet checkpoint can be downloaded here, so training starts from scratch.
        # To start from a UFO-ViT or XCiT classification checkpoint (keys are converted,
        # class token / class attention / head dropped, counts logged):
        #   init_cfg=dict(type='Pretrained', checkpoint='pretrain/xcit_small_12_p16_224.pth')
        # or --cfg-options model.backbone.init_cfg.type=Pretrained \
        #                  model.backbone.init_cfg.checkpoint=PATH
        init_cfg=None),
    # All four UFO-ViT outputs have C channels (C = 384 for S12/S24).
    decode_head=dict(in_channels=[384, 384, 384, 384], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    # 'whole' image inference (the ade20k test pipeline resizes to 2048x512 first).
    # Sliding windows instead: the *-slide.py variant, or
    #   --cfg-options model.test_cfg.mode=slide model.test_cfg.crop_size="(512,512)" \
    #                 model.test_cfg.stride="(341,341)"
    test_cfg=dict(mode='whole'))

# AdamW without weight decay on every norm layer (LayerNorm and BN, by module type), the
# layer-scale and XNorm gammas (gamma1/2/3, attn.gamma_q/gamma_kv) and the position encoding.
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
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]

# 8 GPUs x 2 images. On another number of GPUs pass --auto-scale-lr (tools/train.py) to
# scale lr by (GPUs x batch_size) / 16.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
