"""glibc allocator settings that analyze applies: accepted, and large buffers reuse their pages."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from vitdistill.utils.malloc import keep_large_buffers

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc allocator settings"
)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@glibc_only
def test_a_freed_large_buffer_is_reused_without_page_faults():
    assert keep_large_buffers() is True
    n = 16 * 2**20  # 64 MiB of float32: above glibc's largest default mmap threshold (32 MiB)
    faults = []
    for _ in range(6):  # the heap grows at first; then a buffer lands on pages it already has
        before = _minor_faults()
        torch.ones(n)
        faults.append(_minor_faults() - before)
    # under glibc's defaults every such buffer is a fresh mapping: 16384 faults, every time
    assert min(faults[2:]) < 1000, faults
