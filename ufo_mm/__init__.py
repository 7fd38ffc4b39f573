"""ufo-mm: UFO-ViT backbones for MMDetection and MMSegmentation.

``custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)`` in a
config registers ``UFOViT`` in both mmdet's and mmseg's MODELS registries.
"""
from . import engine  # noqa: F401  registers BF16AutocastOptimWrapper
from .models import UFOViT  # noqa: F401
from .registry import register_all
from .version import __version__  # noqa: F401

REGISTERED_IN = register_all()
