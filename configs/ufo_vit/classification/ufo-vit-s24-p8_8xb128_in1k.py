# UFO-ViT-S24/8 classifier (C=384, 8 heads, 24 blocks, layer scale 1e-5, patch 8) on
# ImageNet-1k: stochastic depth 0.1 (XCiT's for this size), 8 GPUs x 128 images.
_base_ = './_base_ufo-vit_8xb128_in1k.py'
model = dict(backbone=dict(arch='small_24_p8', drop_path_rate=0.1), head=dict(in_channels=384))
