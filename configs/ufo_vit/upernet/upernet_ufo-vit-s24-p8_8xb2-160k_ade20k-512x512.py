# UperNet + UFO-ViT S24/8 (C=384, 24 blocks, patch 8), ADE20K 160k.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(arch='small_24_p8', drop_path_rate=0.1))
