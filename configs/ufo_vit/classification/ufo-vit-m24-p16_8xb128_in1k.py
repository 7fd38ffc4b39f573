# UFO-ViT-M24/16 classifier (C=512, 8 heads, 24 blocks, layer scale 1e-5, patch 16) on
# ImageNet-1k: stochastic depth 0.15 (XCiT's for this size), 8 GPUs x 128 images.
_base_ = './_base_ufo-vit_8xb128_in1k.py'
model = dict(backbone=dict(arch='medium_24_p16', drop_path_rate=0.15), head=dict(in_channels=512))
