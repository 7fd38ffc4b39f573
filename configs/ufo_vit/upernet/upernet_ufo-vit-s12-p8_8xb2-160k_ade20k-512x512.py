# UperNet + UFO-ViT S12/8 (C=384, patch 8: 4x the tokens of /16), ADE20K 160k.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
model = dict(backbone=dict(arch='small_12_p8', drop_path_rate=0.05))
