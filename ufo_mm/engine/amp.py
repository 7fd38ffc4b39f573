"""Mixed precision that also works on CPU.

mmengine's ``AmpOptimWrapper`` asserts a GPU (CUDA/NPU/MLU). On CPU the
useful mixed precision is bf16 autocast (no loss scaling needed: bf16 has
fp32's exponent range); ``BF16AutocastOptimWrapper`` provides it. UFO
attention keeps its k^T v product and norms in float32 inside autocast.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under ``torch.autocast(device, bfloat16)``.

    Args:
        device_type: 'cpu' (default) or 'cuda'.
        **kwargs: as :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, *args, device_type: str = 'cpu', **kwargs):
        super().__init__(*args, **kwargs)
        self.device_type = device_type

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), \
                torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            yield


def enable_amp(cfg) -> str:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine:
    fp16 ``AmpOptimWrapper`` with dynamic loss scale on GPU, bf16 autocast on
    CPU. Returns the wrapper type chosen."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                                   'BF16AutocastOptimWrapper'):
        raise ValueError(f'--amp cannot convert optim_wrapper type {wrapper.type!r}')
    if torch.cuda.is_available():
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
    else:
        wrapper.type = 'BF16AutocastOptimWrapper'
        wrapper.pop('loss_scale', None)
    return wrapper.type
