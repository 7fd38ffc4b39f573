"""The fast CPU inference route of UFOViT, apart from the model's reference math.

``UFOViT.stages(x)`` asks :func:`route_dtype` once per forward; when it allows,
:class:`CPUInference` runs the three stages with oneDNN's fused kernels
(:mod:`.kernels`). Everything else (training, autograd, export, other devices)
runs the modules' own ``forward``.
"""
from .cpu_inference import TILE_TOKENS, CPUInference, route_dtype
from .kernels import ONEDNN_AVAILABLE

__all__ = ['CPUInference', 'route_dtype', 'TILE_TOKENS', 'ONEDNN_AVAILABLE']
