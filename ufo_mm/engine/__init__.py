"""Training glue on top of mmengine (optimizer wrappers)."""
from .amp import BF16AutocastOptimWrapper, enable_amp
from .resume import RNGStateHook

__all__ = ['BF16AutocastOptimWrapper', 'enable_amp', 'RNGStateHook']
