"""Synthetic COCO, ADE20K and ImageNet-layout datasets for tests and demos (numpy and
OpenCV, no mmdet/mmseg/mmpretrain)."""
from .synthetic_ade import ADE_CLASSES, ADE_PALETTE, make_ade20k
from .synthetic_coco import COCO_CLASSES, make_coco
from .synthetic_imagenet import IMAGENET_CLASSES, make_imagenet

__all__ = ['ADE_CLASSES', 'ADE_PALETTE', 'COCO_CLASSES', 'IMAGENET_CLASSES', 'make_ade20k',
           'make_coco', 'make_imagenet']
