"""ufo-mm: UFO-ViT backbones for MMDetection and MMSegmentation.

``custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)`` in a
config registers ``UFOViT`` in both mmdet's and mmseg's MODELS registries, and
``UFOViTClsBackbone`` in mmpretrain's where it is installed.
"""
from . import engine  # noqa: F401  registers BF16AutocastOptimWrapper
from .models import UFOViT  # noqa: F401
from .registry import register_all
from .safe_load import install_mmengine_safe_loader
from .version import __version__  # noqa: F401

REGISTERED_IN = register_all()
# mmengine (so mmdet/mmseg's own tools too) loads local checkpoints with weights_only=True
# and exactly the globals its training checkpoints need; see safe_load.py.
install_mmengine_safe_loader()
