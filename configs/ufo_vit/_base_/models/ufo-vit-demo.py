# The small UFO-ViT of the CPU demos (configs/ufo_vit/demo/): C=128, 4 heads, 6 blocks,
# patch 8 (8x8 tokens at 64 px, 16x16 at 128 px). One arch for the classifier and the dense
# demos, so a checkpoint of the classification demo initialises the Mask R-CNN and UperNet
# demos' backbone:  backbone=dict(type='UFOViT', arch=_base_.ufo_vit_demo_arch, ...)
ufo_vit_demo_arch = dict(embed_dims=128, num_heads=4, depth=6, patch_size=8,
                         layer_scale_init_value=1.0)
