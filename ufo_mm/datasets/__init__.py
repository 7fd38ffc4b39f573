"""Synthetic COCO and ADE20K datasets for tests and demos (numpy and OpenCV, no mmdet/mmseg)."""
from .synthetic_ade import ADE_CLASSES, ADE_PALETTE, make_ade20k
from .synthetic_coco import COCO_CLASSES, make_coco

__all__ = ['ADE_CLASSES', 'ADE_PALETTE', 'COCO_CLASSES', 'make_ade20k', 'make_coco']
