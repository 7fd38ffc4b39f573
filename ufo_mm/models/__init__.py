"""UFO-ViT model code: plain PyTorch + mmengine/mmcv, no mmdet, mmseg or mmpretrain."""
from .baseline_attention import SoftmaxAttention, XCAttention
from .ufo_attention import UFOAttention, xnorm
from .ufo_vit import ARCH_ZOO, UFOViT, UFOViTTrunk, arch_names, resolve_arch
from .ufo_vit_classifier import UFOViTClassifier, UFOViTClsBackbone

__all__ = ['UFOViT', 'UFOViTTrunk', 'UFOViTClassifier', 'UFOViTClsBackbone', 'UFOAttention',
           'SoftmaxAttention', 'XCAttention', 'xnorm', 'ARCH_ZOO', 'arch_names', 'resolve_arch']
