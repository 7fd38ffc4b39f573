"""What this CPU computes natively, so that no precision is assumed.

Two different questions, two helpers:

- :func:`bf16_native`: does the CPU have bf16 arithmetic instructions
  (x86 AVX512-BF16 or AMX-BF16, the ISAs oneDNN dispatches native bf16 GEMMs
  to; Arm's BF16 extension)? Only then is bf16 autocast faster than fp32.
  Elsewhere every bf16 op is emulated: on an AMD EPYC with AVX2 only the
  segmentation demo trained at 7.0 s/iter in bf16 against 0.42 s/iter in
  fp32. This decides the *default* precision (demo configs, ``--amp`` on CPU,
  the benchmark's rows).
- :func:`onednn_bf16_kernels`: can oneDNN's fused bf16 primitives run at all
  (``torch.ops.mkldnn._is_mkldnn_bf16_supported``: AVX-512 BW/VL/DQ or
  AVX-NE-CONVERT on x86)? Without them ``_linear_pointwise`` and
  ``_convolution_pointwise`` raise in bf16, so the model's CPU fast route
  falls back to the plain modules (which run anywhere, emulated if need be).

Both are answered once per process and can be faked in tests by
monkeypatching these functions.
"""
import functools
import platform
from typing import Optional, Tuple

import torch


def _cpuinfo_flags() -> set:
    """CPU feature flags from /proc/cpuinfo (Linux), empty elsewhere."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key = line.split(':', 1)[0].strip().lower()
                if key in ('flags', 'features'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo or the platform module gives it."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def _torch_cpu_check(name: str) -> Optional[bool]:
    """``torch.cpu._is_<name>_supported()`` (torch >= 2.3), or None if absent."""
    fn = getattr(torch.cpu, f'_is_{name}_supported', None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except RuntimeError:
        return None


@functools.lru_cache(maxsize=None)
def native_bf16_isa() -> Optional[str]:
    """The name of the native bf16 instruction set of this CPU, or None."""
    flags = _cpuinfo_flags()
    if platform.machine().lower() in ('aarch64', 'arm64'):
        return 'Arm BF16' if 'bf16' in flags else None
    avx512_bf16 = _torch_cpu_check('avx512_bf16')
    if avx512_bf16 is None:
        avx512_bf16 = 'avx512_bf16' in flags
    amx = _torch_cpu_check('amx_tile')  # every AMX CPU so far has AMX-BF16
    if amx or (amx is None and 'amx_bf16' in flags):
        return 'AMX-BF16'
    if avx512_bf16:
        return 'AVX512-BF16'
    return None


def bf16_native() -> bool:
    """True when this CPU has bf16 arithmetic instructions (bf16 is faster than fp32)."""
    return native_bf16_isa() is not None


@functools.lru_cache(maxsize=None)
def onednn_bf16_kernels() -> bool:
    """True when oneDNN's bf16 primitives (the fused CPU kernels) run on this CPU."""
    check = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def bf16_status() -> str:
    """One line saying whether bf16 is native here, naming the CPU."""
    isa = native_bf16_isa()
    if isa:
        return f'bf16 is native on this CPU ({cpu_name()}: {isa})'
    return (f'bf16 is not native on this CPU ({cpu_name()}: no AVX512-BF16 or AMX-BF16); '
            'bf16 ops would be emulated, far slower than fp32')


def default_cpu_dtype() -> Tuple[torch.dtype, str]:
    """The precision to pick on this CPU when the user did not choose one:
    (torch.bfloat16 or torch.float32, the reason as one line)."""
    if bf16_native():
        return torch.bfloat16, bf16_status() + ': using bf16 autocast'
    return torch.float32, bf16_status() + ': using fp32'
