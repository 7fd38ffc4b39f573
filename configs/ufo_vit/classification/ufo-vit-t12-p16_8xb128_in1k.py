# UFO-ViT-T12/16 classifier (C=192, 4 heads, 12 blocks, layer scale 1.0, patch 16) on
# ImageNet-1k: stochastic depth 0.0 (XCiT's for this size), 8 GPUs x 128 images.
_base_ = './_base_ufo-vit_8xb128_in1k.py'
model = dict(backbone=dict(arch='tiny_12_p16', drop_path_rate=0.0), head=dict(in_channels=192))
