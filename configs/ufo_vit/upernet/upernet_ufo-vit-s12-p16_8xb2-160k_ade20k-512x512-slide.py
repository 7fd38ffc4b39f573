# S12/16 evaluated with 512x512 sliding windows (stride 341) over the 2048x512-resized
# image instead of whole-image inference; training is identical.
_base_ = './upernet_ufo-vit-s12-p16_8xb2-160k_ade20k-512x512.py'
model = dict(test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
