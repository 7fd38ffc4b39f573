"""ufo-mm: UFO-ViT backbones for MMDetection and MMSegmentation.

``custom_imports = dict(imports=['ufo_mm'], allow_failed_imports=False)`` in a
config registers ``UFOViT`` in both mmdet's and mmseg's MODELS registries, and
``UFOViTClsBackbone`` in mmpretrain's where it is installed.

Layers, low to high: a module imports from its own layer and the layers below
it, never from one above (function-body imports included), and no two
packages import each other (tests/test_layers.py checks both):

1. version, cpu_features, devices, safe_load, builder
2. models
3. engine, io, datasets, analysis
4. streaming
5. registry, visualization, deploy
6. apis
7. evaluation
8. benchmark

``builder`` (a model from a config) imports nothing of the package: every
layer may build a model. ``registry`` registers the models and the streamed
segmentor and detector, so it sits above them. ``evaluation`` runs models
through ``apis``' runner and draws their predictions. This ``__init__`` is
above them all.
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
