"""Training glue on top of mmengine (optimizer wrappers, hooks)."""
from .amp import BF16AutocastOptimWrapper, enable_amp
from .hooks import TimeEstimateHook
from .resume import RNGStateHook

__all__ = ['BF16AutocastOptimWrapper', 'enable_amp', 'TimeEstimateHook', 'RNGStateHook']
