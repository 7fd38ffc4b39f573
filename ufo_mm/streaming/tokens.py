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
- ``'disk'``: in files (:class:`DiskTensor`) in a scratch folder, for a memory
  budget the tensors do not fit: each band is read from its file with
  ``os.preadv`` and each result written with ``os.pwrite`` (then moved to or
  from the computing device, CPU or GPU). Nothing is memory-mapped, so the
  file's pages stay in the kernel's page cache, never in the process's
  resident set. The bytes stored are the tensor's, in its dtype: the labels
  equal those of the tensors in memory.

:func:`choose_place` makes the automatic choice (``token_device='auto'``),
within a memory budget when one is given.
"""
import errno
import os
import shutil
import tempfile
from typing import Optional, Union

import numpy as np
import torch

#: names ``token_device`` accepts besides a device string
PLACES = ('auto', 'compute', 'host', 'disk')
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


class MemoryBudgetError(MemoryError):
    """A memory budget smaller than what one band of the streamed run needs;
    the message names the minimum."""


class ScratchDiskFull(OSError):
    """The scratch folder's disk cannot hold the spilled token tensors
    (``errno`` ENOSPC); the message names the folder and the sizes."""


def choose_place(token_bytes: int, compute: torch.device, place: str = 'auto',
                 headroom: int = DEVICE_HEADROOM, max_ram: Optional[int] = None,
                 band_bytes: int = 0, held_bytes: Optional[int] = None) -> str:
    """'compute', 'host' or 'disk' for token tensors of ``token_bytes`` in all.

    On the CPU 'compute', unless a memory budget ``max_ram`` (bytes of
    resident memory for the whole process) cannot hold them beside what the
    process holds now (``held_bytes``, default: its resident set) and one
    band's working memory (``band_bytes``): then 'disk'. On a GPU 'compute'
    when they fit in its free memory with ``headroom`` to spare, else 'host'
    (pinned), or 'disk' past the budget. ``place`` other than 'auto' is
    kept (on the CPU 'host' is 'compute').

    Raises:
        MemoryBudgetError: ``max_ram`` below what one band needs, naming the
            minimum.
    """
    fits_ram = True
    if max_ram is not None:
        if held_bytes is None:
            from ufo_mm.analysis.process_stats import rss_bytes
            held_bytes = rss_bytes()
        minimum = held_bytes + band_bytes
        if max_ram < minimum:
            raise MemoryBudgetError(
                f'a memory budget of {max_ram / 2**30:.2f} GiB is too small for one band: '
                f'this run needs at least {minimum / 2**30:.2f} GiB ({held_bytes / 2**30:.2f} '
                f'GiB held now: Python, torch, the model, the image if decoded whole; about '
                f'{band_bytes / 2**30:.2f} GiB for a band); raise the budget (--max-ram-gb) or '
                'give smaller bands (--band-rows, tokens_per_band)')
        fits_ram = minimum + token_bytes <= max_ram
    if place == 'disk':
        return place
    if compute.type != 'cuda':
        return 'compute' if place != 'auto' or fits_ram else 'disk'
    if place == 'auto':
        free, _ = torch.cuda.mem_get_info(compute)
        if token_bytes + headroom <= free:
            return 'compute'
        place = 'host' if fits_ram else 'disk'
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
                          "token_dtype bf16 (--token-dtype bf16), or on disk (--token-device "
                          'disk, or a memory budget: --max-ram-gb)')


class DiskTensor:
    """A (B, N, C) tensor of ``dtype`` kept in a file, read and written a
    range of tokens at a time. The file is unlinked as soon as it is made
    (its space is the open descriptor's: nothing is left behind, even by a
    killed process) and its space reserved at once (``posix_fallocate``), so
    a full disk is found before any work, not hours into it.

    Raises:
        ScratchDiskFull: the folder's disk cannot hold ``B * N * C`` values.
    """

    def __init__(self, shape, dtype: torch.dtype, folder: str):
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.folder = folder
        self.item = torch.finfo(dtype).bits // 8
        self.row_bytes = self.shape[2] * self.item  # one token
        nbytes = self.shape.numel() * self.item
        fd, name = tempfile.mkstemp(prefix='tokens-', suffix='.bin', dir=folder)
        os.unlink(name)
        self.fd = fd
        try:
            if hasattr(os, 'posix_fallocate'):
                try:
                    os.posix_fallocate(fd, 0, nbytes)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    os.ftruncate(fd, nbytes)  # a file system without it (tmpfs before 5.x)
            else:
                os.ftruncate(fd, nbytes)
        except OSError as e:
            self.close()
            if e.errno == errno.ENOSPC:
                raise self.disk_full(nbytes, e) from e
            raise

    def disk_full(self, nbytes: int, e: OSError) -> ScratchDiskFull:
        free = shutil.disk_usage(self.folder).free
        return ScratchDiskFull(
            errno.ENOSPC, f'the scratch disk is full: a token tensor of {nbytes / 2**30:.2f} '
            f'GiB does not fit in {self.folder} ({free / 2**30:.2f} GiB free); give a folder '
            f'on a larger disk (--scratch-dir) or a larger memory budget (--max-ram-gb): {e}',
            self.folder)

    def _offset(self, i: int, a: int) -> int:
        return (i * self.shape[1] + a) * self.row_bytes

    def read(self, a: int, b: int) -> torch.Tensor:
        """Tokens ``[a, b)``: a new (B, b - a, C) CPU tensor of the stored dtype."""
        out = torch.empty((self.shape[0], b - a, self.shape[2]), dtype=self.dtype)
        raw = out.view(torch.uint8).numpy()  # (B, b - a, C * item), the same memory
        for i in range(self.shape[0]):
            view, offset = memoryview(raw[i].reshape(-1)), self._offset(i, a)
            while len(view):
                n = os.preadv(self.fd, [view], offset)
                if n == 0:
                    raise OSError(errno.EIO, f'token file in {self.folder} ends early')
                view, offset = view[n:], offset + n
        return out

    def write(self, a: int, b: int, tokens: torch.Tensor):
        """Store ``tokens`` (B, b - a, C), any device and dtype, as tokens ``[a, b)``."""
        src = tokens.detach().to('cpu', self.dtype).contiguous()
        raw = src.view(torch.uint8).numpy()
        for i in range(self.shape[0]):
            view, offset = memoryview(np.ascontiguousarray(raw[i]).reshape(-1)), \
                self._offset(i, a)
            while len(view):
                try:
                    n = os.pwrite(self.fd, view, offset)
                except OSError as e:
                    if e.errno == errno.ENOSPC:
                        raise self.disk_full(self.shape.numel() * self.item, e) from e
                    raise
                view, offset = view[n:], offset + n

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()

    def __repr__(self):
        return f'DiskTensor({tuple(self.shape)}, {self.dtype}, in {self.folder})'


class TokenStore:
    """Allocates the whole token tensors in one place and moves bands of
    tokens between it and the computing device.

    Args:
        compute: the device the bands are computed on.
        place: 'compute' (the tensors live there), 'host' (pinned host
            memory; only with a CUDA ``compute``) or 'disk' (files, see
            :class:`DiskTensor`).
        dtype: storage dtype of the tensors (None: float32).
        scratch_dir: for 'disk', the folder in which a temporary folder for
            the files is made (None: the system's temporary folder); the
            temporary folder is removed by :meth:`close`.
        disk_bytes: for 'disk', the bytes of all the tensors it will hold,
            checked against the folder's free space at once.

    Raises:
        ScratchDiskFull: ``disk_bytes`` more than the scratch disk has free.
    """

    def __init__(self, compute: torch.device, place: str = 'compute',
                 dtype: Optional[torch.dtype] = None, scratch_dir=None, disk_bytes: int = 0):
        if place not in ('compute', 'host', 'disk'):
            raise ValueError(f"place must be 'compute', 'host' or 'disk', got {place!r}")
        self.compute = torch.device(compute)
        self.dtype = dtype or torch.float32
        self.host = place == 'host' and self.compute.type != 'cpu'
        self.disk = place == 'disk'
        self.place = 'disk' if self.disk else 'host' if self.host else 'compute'
        self.folder = None
        self._files = []
        if self.host:
            if self.compute.type != 'cuda':
                raise ValueError(f'host token storage needs a CUDA device, got {self.compute}')
            self.h2d = torch.cuda.Stream(self.compute)
            self.d2h = torch.cuda.Stream(self.compute)
        if self.disk:
            if scratch_dir is not None:
                os.makedirs(scratch_dir, exist_ok=True)
            self.folder = tempfile.mkdtemp(prefix='ufo-mm-tokens-', dir=scratch_dir)
            free = shutil.disk_usage(self.folder).free
            if disk_bytes > free:
                self.close()
                raise ScratchDiskFull(
                    errno.ENOSPC, f'the scratch disk is too small: the token tensors need '
                    f'{disk_bytes / 2**30:.2f} GiB, {scratch_dir or tempfile.gettempdir()} has '
                    f'{free / 2**30:.2f} GiB free; give a folder on a larger disk '
                    '(--scratch-dir) or a larger memory budget (--max-ram-gb)',
                    str(scratch_dir))

    @property
    def device(self) -> torch.device:
        """Where the tensors live (the host for 'disk': bands arrive there)."""
        return torch.device('cpu') if self.host or self.disk else self.compute

    def empty(self, batch: int, tokens: int, channels: int):
        """A new (batch, tokens, channels) tensor in the store (for 'disk' a
        :class:`DiskTensor`, with the same ``shape`` and ``dtype``)."""
        if self.disk:
            t = DiskTensor((batch, tokens, channels), self.dtype, self.folder)
            self._files.append(t)
            return t
        if self.host:
            return torch.empty((batch, tokens, channels), dtype=self.dtype, pin_memory=True)
        return torch.empty((batch, tokens, channels), dtype=self.dtype, device=self.compute)

    def read(self, t, a: int, b: int) -> torch.Tensor:
        """Tokens ``[a, b)`` of ``t`` on the computing device, float32 (a view
        when nothing needs converting)."""
        if self.disk:
            return t.read(a, b).to(self.compute).float()
        if not self.host:
            return t[:, a:b].float()
        compute = torch.cuda.current_stream(self.compute)
        with torch.cuda.stream(self.h2d):
            band = t[:, a:b].to(self.compute, non_blocking=True)
        compute.wait_stream(self.h2d)
        band.record_stream(compute)
        return band.float()

    def write(self, t, a: int, b: int, tokens: torch.Tensor):
        """Store ``tokens`` (computed on the device) as tokens ``[a, b)`` of ``t``."""
        if self.disk:
            t.write(a, b, tokens)
            return
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

    def close(self):
        """Free the files of 'disk' and remove their temporary folder."""
        for t in self._files:
            t.close()
        self._files = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
