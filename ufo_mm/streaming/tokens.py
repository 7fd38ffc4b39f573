"""Where a streamed forward keeps its whole token tensors, and how bands of
them reach the device that computes.

The streamed backbone (:mod:`.backbone`) holds a few (B, N, C) token tensors
whole (the block being computed and the four kept pyramid outputs) and
reads and writes them a band of tokens at a time. :class:`TokenStore` is the
one place that knows where they live:

- ``'compute'``: on the device that computes (the CPU, or the GPU when they
  fit in its free memory): a band is a view, nothing is copied.
- ``'host'`` with a CUDA computation: in pinned host memory. Each band is
  copied in on one side stream and each result copied back on another, so
  the copies overlap the kernels of the neighbouring bands; the compute
  stream waits only for the band it needs. A pass that reads what an
  earlier pass wrote waits for those writes first (:meth:`TokenStore.barrier`).

:func:`choose_place` makes the automatic choice (``token_device='auto'``).
"""
from typing import Optional, Union

import torch

#: names ``token_device`` accepts besides a device string
PLACES = ('auto', 'compute', 'host')
#: device memory kept free for the bands of the heads when choosing 'auto' (bytes)
DEVICE_HEADROOM = 8 << 30


def resolve_place(token_device: Optional[Union[str, torch.device]],
                  compute: torch.device) -> str:
    """'auto' / None, 'compute' / 'host', or a device ('cuda', 'cuda:0', 'cpu')
    -> 'auto', 'compute' or 'host' for a computation on ``compute``.

    Raises:
        ValueError: a device that is neither the computing device nor the host.
    """
    if token_device is None or token_device in PLACES:
        return token_device or 'auto'
    dev = torch.device(token_device)
    if dev.type == 'cpu':
        return 'compute' if compute.type == 'cpu' else 'host'
    if dev.type == compute.type and (dev.index is None or compute.index is None or
                                     dev.index == compute.index):
        return 'compute'
    raise ValueError(f'token_device {str(token_device)!r}: the tokens can stay on the computing '
                     f'device ({compute}) or on the host (cpu), not elsewhere')


def choose_place(token_bytes: int, compute: torch.device, place: str = 'auto',
                 headroom: int = DEVICE_HEADROOM) -> str:
    """'compute' or 'host' for token tensors of ``token_bytes`` in all: on
    the CPU always 'compute'; on a GPU 'compute' when they fit in its free
    memory with ``headroom`` to spare, else 'host' (pinned)."""
    if compute.type != 'cuda':
        return 'compute'
    if place == 'auto':
        free, _ = torch.cuda.mem_get_info(compute)
        place = 'compute' if token_bytes + headroom <= free else 'host'
    if place == 'host':
        check_host_memory(token_bytes)
    return place


def check_host_memory(token_bytes: int):
    """Refuse, naming the sizes, token tensors larger than the host's available
    memory (pinned memory cannot be paged out)."""
    try:
        import psutil
    except ImportError:  # nothing to check with
        return
    available = psutil.virtual_memory().available
    if token_bytes > available:
        raise MemoryError(f'the streamed token tensors need {token_bytes / 2**30:.1f} GiB, more '
                          f'than the GPU has free and than the host has available '
                          f'({available / 2**30:.1f} GiB); store them in half the memory with '
                          "token_dtype bf16 (--token-dtype bf16)")


class TokenStore:
    """Allocates the whole token tensors in one place and moves bands of
    tokens between it and the computing device.

    Args:
        compute: the device the bands are computed on.
        place: 'compute' (the tensors live there) or 'host' (pinned host
            memory; only with a CUDA ``compute``).
        dtype: storage dtype of the tensors (None: float32).
    """

    def __init__(self, compute: torch.device, place: str = 'compute',
                 dtype: Optional[torch.dtype] = None):
        if place not in ('compute', 'host'):
            raise ValueError(f"place must be 'compute' or 'host', got {place!r}")
        self.compute = torch.device(compute)
        self.dtype = dtype or torch.float32
        self.host = place == 'host' and self.compute.type != 'cpu'
        self.place = 'host' if self.host else 'compute'
        if self.host:
            if self.compute.type != 'cuda':
                raise ValueError(f'host token storage needs a CUDA device, got {self.compute}')
            self.h2d = torch.cuda.Stream(self.compute)
            self.d2h = torch.cuda.Stream(self.compute)

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return torch.device('cpu') if self.host else self.compute

    def empty(self, batch: int, tokens: int, channels: int) -> torch.Tensor:
        """A new (batch, tokens, channels) tensor in the store."""
        if self.host:
            return torch.empty((batch, tokens, channels), dtype=self.dtype, pin_memory=True)
        return torch.empty((batch, tokens, channels), dtype=self.dtype, device=self.compute)

    def read(self, t: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """Tokens ``[a, b)`` of ``t`` on the computing device, float32 (a view
        when nothing needs converting)."""
        if not self.host:
            return t[:, a:b].float()
        compute = torch.cuda.current_stream(self.compute)
        with torch.cuda.stream(self.h2d):
            band = t[:, a:b].to(self.compute, non_blocking=True)
        compute.wait_stream(self.h2d)
        band.record_stream(compute)
        return band.float()

    def write(self, t: torch.Tensor, a: int, b: int, tokens: torch.Tensor):
        """Store ``tokens`` (computed on the device) as tokens ``[a, b)`` of ``t``."""
        if not self.host:
            t[:, a:b] = tokens
            return
        src = tokens.to(self.dtype).contiguous()  # on the compute stream
        self.d2h.wait_stream(torch.cuda.current_stream(self.compute))
        with torch.cuda.stream(self.d2h):
            t[:, a:b].copy_(src, non_blocking=True)
        src.record_stream(self.d2h)

    def barrier(self):
        """Make the next reads see every write made so far (between passes)."""
        if self.host:
            self.h2d.wait_stream(self.d2h)

    def finish(self):
        """Wait for every copy (before the host reads a stored tensor)."""
        if self.host:
            self.d2h.synchronize()
            self.h2d.synchronize()
