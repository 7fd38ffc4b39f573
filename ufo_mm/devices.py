"""The device a command line asks for, checked once, and what it used.

``--device`` arguments of the tools go through :func:`resolve_device`, which
refuses a device this machine does not have with one line that names the
problem (instead of a traceback from deep inside torch);
:func:`peak_device_gb` is the peak device memory the JSON lines report.
"""
from typing import Optional, Union

import torch


class DeviceError(ValueError):
    """A device this machine cannot run on; the message is one line."""


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'`` -> a torch.device that exists here.

    Raises:
        DeviceError: an unknown name, no CUDA (a CPU-only torch, or no GPU
            found), or a GPU index past the GPUs present.
    """
    try:
        dev = torch.device(device or 'cpu')
    except RuntimeError as e:
        raise DeviceError(f'--device {device!r}: not a device ({e})') from None
    if dev.type == 'cpu':
        return dev
    if dev.type != 'cuda':
        raise DeviceError(f'--device {device}: only cpu and cuda[:N] are supported')
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = (f'torch {torch.__version__} is built for CUDA {built} but finds no GPU'
               if built else f'torch {torch.__version__} is built without CUDA')
        raise DeviceError(f'--device {device}: CUDA is not available here ({why}); '
                          'use --device cpu')
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f'--device {device}: this machine has {count} GPU(s), '
                          f'cuda:0..cuda:{count - 1}')
    return torch.device('cuda', dev.index or 0)


def reset_peak(device: torch.device):
    """Start counting the peak device memory anew (CUDA only)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_device_gb(device: torch.device) -> Optional[float]:
    """Peak memory allocated on a CUDA device since the last reset (GiB,
    ``torch.cuda.max_memory_allocated``); None on the CPU."""
    if torch.device(device).type != 'cuda':
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
