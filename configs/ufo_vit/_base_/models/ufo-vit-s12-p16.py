# The UFO-ViT backbone of every multi-GPU recipe: S12/16 (C=384, 8 heads, 12 blocks,
# patch 16), stochastic depth 0.05, SyncBN, from scratch. A config takes it with
#   model = dict(backbone=dict(_base_.ufo_vit_s12_p16, _delete_=True), ...)
# (`_delete_` drops the ResNet-50 keys of the mmdet/mmseg model base) and changes only
# what differs, e.g. backbone=dict(arch='small_24_p16', drop_path_rate=0.1).
custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)

ufo_vit_s12_p16 = dict(
    type='UFOViT',
    arch='small_12_p16',
    drop_path_rate=0.05,
    # for multi-GPU training; mmengine's Runner turns it into BN on one device or CPU
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    # No ImageNet weights can be downloaded here, so training starts from scratch. To
    # fine-tune from an ImageNet UFO-ViT or XCiT checkpoint of the same size (keys are
    # converted, classification parts dropped, matched/missing counts logged):
    #   init_cfg=dict(type='Pretrained', checkpoint='checkpoints/xcit_small_12_p16_224.pth')
    # or (_delete_: init_cfg is None here, which mmengine does not merge a dict into)
    #   --cfg-options model.backbone.init_cfg._delete_=True \
    #       model.backbone.init_cfg.type=Pretrained model.backbone.init_cfg.checkpoint=PATH
    init_cfg=None)
