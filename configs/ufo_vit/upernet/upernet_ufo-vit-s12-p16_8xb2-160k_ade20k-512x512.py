# UperNet + UFO-ViT S12/16 (C=384, 8 heads, 12 blocks, patch 16), ADE20K 160k.
# The shared base is this model; the file exists so every arch has its own name.
_base_ = './_base_upernet_ufo-vit_8xb2-160k_ade20k-512x512.py'
