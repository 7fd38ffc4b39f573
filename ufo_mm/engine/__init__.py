"""Training glue on top of mmengine (optimizer wrappers, hooks)."""
from .amp import AutoPrecisionOptimWrapper, BF16AutocastOptimWrapper, enable_amp
from .hooks import TimeEstimateHook
from .resume import RNGStateHook

__all__ = ['AutoPrecisionOptimWrapper', 'BF16AutocastOptimWrapper', 'enable_amp',
           'TimeEstimateHook', 'RNGStateHook']
