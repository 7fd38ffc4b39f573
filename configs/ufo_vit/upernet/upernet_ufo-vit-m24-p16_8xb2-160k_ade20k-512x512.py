# UperNet + UFO-ViT M24/16 (C=512, 8 heads, 24 blocks, layer scale 1e-5, patch 16), ADE20K 160k.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='medium_24_p16', drop_path_rate=0.15),
    decode_head=dict(in_channels=[512, 512, 512, 512]),
    auxiliary_head=dict(in_channels=512))
