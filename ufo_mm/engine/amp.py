"""Mixed precision that also works on CPU.

mmengine's ``AmpOptimWrapper`` asserts a GPU (CUDA/NPU/MLU). On CPU the
useful mixed precision is bf16 autocast (no loss scaling needed: bf16 has
fp32's exponent range); ``BF16AutocastOptimWrapper`` provides it. UFO
attention accumulates its k^T v product and norms in float32 inside autocast.

bf16 only pays where the CPU computes it natively (AVX512-BF16, AMX); on
others (AVX2-only AMD EPYC, Intel before Cooper Lake) every bf16 op is
emulated and training runs many times slower than in fp32. So nothing here
assumes it: ``AutoPrecisionOptimWrapper`` (the demo's) and ``--amp`` use bf16
where it is native and fp32 elsewhere, with one log line saying why
(``ufo_mm.cpu_features``).
"""
from contextlib import contextmanager, nullcontext

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from .. import cpu_features


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under ``torch.autocast(device, bfloat16)``.

    Args:
        device_type: 'cpu' (default) or 'cuda'.
        only_if_native: on CPU, autocast only where bf16 is native
            (:func:`ufo_mm.cpu_features.bf16_native`); elsewhere train in fp32
            and log why. False (default) forces bf16 on any CPU (an explicit
            choice; a warning is logged where it is emulated).
        **kwargs: as :class:`mmengine.optim.OptimWrapper`.

    Attributes:
        autocast: whether ``optim_context`` enters bf16 autocast.
    """

    def __init__(self, *args, device_type: str = 'cpu', only_if_native: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.device_type = device_type
        self.autocast = True
        if device_type == 'cpu' and not cpu_features.bf16_native():
            if only_if_native:
                self.autocast = False
                print_log(f'{cpu_features.bf16_status()}: training in fp32 (--cfg-options '
                          'optim_wrapper.type=BF16AutocastOptimWrapper forces bf16)',
                          logger='current')
            else:
                print_log(f'{cpu_features.bf16_status()}: bf16 forced by the config',
                          logger='current', level=30)

    @contextmanager
    def optim_context(self, model):
        amp = torch.autocast(device_type=self.device_type, dtype=torch.bfloat16) \
            if self.autocast else nullcontext()
        with super().optim_context(model), amp:
            yield


@OPTIM_WRAPPERS.register_module()
class AutoPrecisionOptimWrapper(BF16AutocastOptimWrapper):
    """bf16 autocast on a CPU that computes bf16 natively, fp32 elsewhere (one
    log line says which and why): ``BF16AutocastOptimWrapper`` with
    ``only_if_native=True``. A config that uses it still lets the user force
    a precision with ``--cfg-options optim_wrapper.type=OptimWrapper`` (fp32)
    or ``optim_wrapper.type=BF16AutocastOptimWrapper`` (bf16 anywhere).

    Args: as :class:`mmengine.optim.OptimWrapper` (``device_type`` 'cpu').
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, only_if_native=True, **kwargs)


#: ``--amp-dtype`` names -> what AmpOptimWrapper's ``dtype`` takes
AMP_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16'}


def cuda_amp_dtype(requested: str = 'auto') -> tuple:
    """(AmpOptimWrapper dtype, why) on this machine's GPU: 'auto' takes bf16
    where ``torch.cuda.is_bf16_supported()`` (Ampere and later) and fp16 with
    dynamic loss scaling elsewhere; 'fp16' / 'bf16' force one (bf16 on a GPU
    without it raises)."""
    if requested not in ('auto',) + tuple(AMP_DTYPES):
        raise ValueError(f"amp dtype must be 'auto', 'fp16' or 'bf16', got {requested!r}")
    name = torch.cuda.get_device_name()
    bf16 = torch.cuda.is_bf16_supported()
    if requested == 'bf16' and not bf16:
        raise ValueError(f'--amp-dtype bf16: {name} does not support bf16 '
                         '(torch.cuda.is_bf16_supported() is False); use fp16')
    if requested == 'auto':
        requested = 'bf16' if bf16 else 'fp16'
        why = f'{name} {"supports" if bf16 else "lacks"} bf16'
    else:
        why = 'asked for'
    return AMP_DTYPES[requested], why


def enable_amp(cfg, dtype: str = 'auto') -> str:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine, with
    one log line saying which:

    - on a GPU, mmengine's ``AmpOptimWrapper``: bf16 autocast where the GPU
      has it, else fp16; with ``dtype`` 'fp16' or 'bf16' that one. Loss
      scaling is dynamic unless the config sets ``loss_scale``;
    - on the CPU, bf16 autocast where bf16 is native, else plain fp32
      ``OptimWrapper`` (``dtype`` 'bf16' forces bf16 autocast; 'fp16' is
      refused: CPU autocast in fp16 is neither fast nor safe).

    Returns the wrapper type chosen."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') not in ('OptimWrapper', 'AmpOptimWrapper',
                                                   'BF16AutocastOptimWrapper',
                                                   'AutoPrecisionOptimWrapper'):
        raise ValueError(f'--amp cannot convert optim_wrapper type {wrapper.type!r}')
    if torch.cuda.is_available():
        amp_dtype, why = cuda_amp_dtype(dtype)
        wrapper.type = 'AmpOptimWrapper'
        wrapper.dtype = amp_dtype
        wrapper.setdefault('loss_scale', 'dynamic')
        print_log(f'--amp on CUDA: AmpOptimWrapper in {amp_dtype} ({why}), loss scale '
                  f'{wrapper.loss_scale}', logger='current')
    else:
        wrapper.pop('loss_scale', None)
        wrapper.pop('dtype', None)
        if dtype == 'fp16':
            raise ValueError('--amp-dtype fp16 needs a GPU; on the CPU --amp uses bf16 '
                             'where it is native')
        if dtype == 'bf16':
            cpu, why = torch.bfloat16, f'bf16 asked for ({cpu_features.bf16_status()})'
        else:
            cpu, why = cpu_features.default_cpu_dtype()
        print_log(f'--amp: {why}', logger='current')
        wrapper.type = 'BF16AutocastOptimWrapper' if cpu == torch.bfloat16 else 'OptimWrapper'
    if wrapper.type != 'BF16AutocastOptimWrapper':  # its own arguments
        wrapper.pop('only_if_native', None)
        wrapper.pop('device_type', None)
    return wrapper.type
