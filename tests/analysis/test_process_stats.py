"""The C heap kept from faulting a band's buffers in anew (process_stats.freed_buffers_kept)."""
import ctypes
import resource

import pytest
import torch

from ufo_mm.analysis import process_stats

try:
    ctypes.CDLL('libc.so.6').mallopt
    GLIBC = True
except (OSError, AttributeError):
    GLIBC = False

BUFFER = 96 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): mapped anew each time
PAGES = BUFFER // 4096


def faults_of_a_fresh_buffer() -> int:
    """Minor page faults of allocating, filling and freeing one BUFFER."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(BUFFER // 4, dtype=torch.float32)
    x.fill_(1.)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not GLIBC, reason='needs glibc (mallopt)')
def test_a_buffer_freed_and_allocated_again_is_not_faulted_in_again_and_after_it_is():
    torch.set_num_threads(1)
    assert faults_of_a_fresh_buffer() > PAGES // 2  # glibc's default: mapped, faulted, unmapped
    with process_stats.freed_buffers_kept():
        # the first passes fault its pages in (after other tests the first free block
        # found may lie elsewhere in the heap than where the loop settles)
        faults_of_a_fresh_buffer()
        faults_of_a_fresh_buffer()
        again = [faults_of_a_fresh_buffer() for _ in range(3)]
        assert max(again) < PAGES // 20, again  # then reused from the heap
    # after: glibc's thresholds again, the kept block handed back
    assert faults_of_a_fresh_buffer() > PAGES // 2
