"""glibc allocator settings for large-batch CPU work (no-op elsewhere).

By default glibc serves every allocation above a dynamic threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on free. A ViT forward pass at batch 32 allocates several buffers of that
size per block (CaiT-S24: attention maps of 40 MB, MLP activations of 39 MB), so every block of
every batch faults in new zeroed pages: measured on a 2-core VM, 2.6 million page faults and
5.3 s of kernel time per CaiT-S24 forward of 32 images. The dynamic threshold also drifts as
buffers of new sizes are freed, which fragments the heap so that resident memory creeps up with
the number of batches.

:func:`keep_large_buffers` fixes both: buffers up to ``mmap_threshold`` come from the heap, and
up to ``trim_threshold`` of free memory at its top is kept instead of being returned to the
kernel, so each batch reuses the pages of the last. The settings are fixed (not dynamic), so the
allocation pattern of one batch is that of the next and the peak stays flat. They hold for the
rest of the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_large_buffers(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); True when both were accepted."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))
    return bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold))) and ok
