"""The fast CPU inference route of UFOViT, apart from the model's reference math.

``UFOViT.kernels_for(x)`` asks :func:`route_dtype` once per forward; when it
allows, :class:`CPUKernels` computes the model's steps with oneDNN's fused
kernels (:mod:`.kernels`). Everything else (training, autograd, export, other
devices) runs the modules' own ``forward``.
"""
from .cpu_inference import TILE_TOKENS, CPUKernels, route_dtype
from .kernels import ONEDNN_AVAILABLE

__all__ = ['CPUKernels', 'route_dtype', 'TILE_TOKENS', 'ONEDNN_AVAILABLE']
