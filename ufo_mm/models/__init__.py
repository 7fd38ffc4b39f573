"""UFO-ViT model code: plain PyTorch + mmengine/mmcv, no mmdet or mmseg."""
from .baseline_attention import SoftmaxAttention, XCAttention
from .ufo_attention import UFOAttention, xnorm
from .ufo_vit import ARCH_ZOO, UFOViT, arch_names, resolve_arch

__all__ = ['UFOViT', 'UFOAttention', 'SoftmaxAttention', 'XCAttention', 'xnorm', 'ARCH_ZOO',
           'arch_names', 'resolve_arch']
