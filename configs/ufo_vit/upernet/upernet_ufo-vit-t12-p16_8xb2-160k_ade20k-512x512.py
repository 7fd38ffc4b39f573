# UperNet + UFO-ViT T12/16 (C=192, 4 heads, 12 blocks, patch 16), ADE20K 160k.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='tiny_12_p16', drop_path_rate=0.0),
    decode_head=dict(in_channels=[192, 192, 192, 192]),
    auxiliary_head=dict(in_channels=192))
