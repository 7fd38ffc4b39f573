# UperNet + UFO-ViT S24/16 (C=384, 8 heads, 24 blocks, layer scale 1e-5, patch 16),
# outputs of blocks 7, 11, 15, 23; ADE20K 160k.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(arch='small_24_p16', drop_path_rate=0.1))
