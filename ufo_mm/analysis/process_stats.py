"""What a process uses, from Linux's /proc and getrusage: resident memory now
and its high-water mark, and the CPU the rest of the machine took meanwhile
(a shared machine's noise)."""
import contextlib
import os
import resource
import time
from typing import Tuple, Union


def rss_bytes(pid: Union[int, str] = 'self') -> int:
    """Resident set of process ``pid`` (this one by default) now, in bytes; 0
    for another process that has gone."""
    try:
        with open(f'/proc/{pid}/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        if pid == 'self':
            raise
        return 0


def release_free_heap() -> bool:
    """Give memory the C heap holds freed back to the system (glibc's
    ``malloc_trim``), e.g. what loading a checkpoint left (0.1 GiB for
    UperNet S12/16), so that the resident set measures what is held; False
    where there is no glibc."""
    try:
        import ctypes
        return bool(ctypes.CDLL('libc.so.6').malloc_trim(0))
    except (OSError, AttributeError):
        return False


#: glibc's ``mallopt`` parameters, and the values its dynamic thresholds reach
#: once a process has freed large blocks (DEFAULT_MMAP_THRESHOLD_MAX and twice it)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WARM_MMAP_THRESHOLD, _WARM_TRIM_THRESHOLD = 32 << 20, 64 << 20


@contextlib.contextmanager
def freed_buffers_kept(block_bytes: int = 1 << 30):
    """Within: the C heap keeps freed blocks of up to ``block_bytes`` for
    the next allocation instead of handing each back to the system (glibc's
    mmap and trim thresholds raised), so that a loop that allocates the same
    large buffers every pass (a band's maps) does not page-fault them in
    anew each time. Semantic FPN's head at 32768 px wide spent a third of
    its CPU time in those faults (about 1.7 GB of pages a band; 1.31 s per
    megapixel instead of 2.32, docs/large_images.md). After: the thresholds
    glibc's own adjustment reaches (32 and 64 MiB), the heap trimmed. Does
    nothing where there is no glibc."""
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        yield
        return
    int_max = 2**31 - 1  # mallopt takes a C int
    mallopt(_M_MMAP_THRESHOLD, min(block_bytes, int_max))
    mallopt(_M_TRIM_THRESHOLD, min(2 * block_bytes, int_max))
    try:
        yield
    finally:
        mallopt(_M_MMAP_THRESHOLD, _WARM_MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _WARM_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def peak_rss_bytes() -> int:
    """This process's resident-set high-water mark (``ru_maxrss``), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def cpu_jiffies() -> Tuple[int, int]:
    """(busy jiffies of the whole machine, steal included; jiffies of this process)."""
    with open('/proc/stat') as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    with open('/proc/self/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(fields[11]) + int(fields[12])


def other_cpu_cores(jiffies_before, t_start: float) -> float:
    """CPU the rest of the machine used since ``cpu_jiffies()`` gave
    ``jiffies_before`` at ``t_start`` (``time.perf_counter()``; other processes,
    hypervisor steal), in cores."""
    (busy0, own0), (busy1, own1) = jiffies_before, cpu_jiffies()
    other = ((busy1 - busy0) - (own1 - own0)) / os.sysconf('SC_CLK_TCK') / \
        max(time.perf_counter() - t_start, 1e-6)
    return max(0., other)
