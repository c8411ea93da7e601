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
allocation pattern of one batch is that of the next and the peak stays flat.

:func:`large_buffers_on_heap` applies them for a ``with`` block and then restores glibc's
settings, which is what ``analyze`` does. glibc cannot report its current thresholds, and once
any of them has been set through ``mallopt`` it stops adjusting the mmap threshold dynamically
for the rest of the process. So "restore" means: the values the process started with when they
were given in the environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...``), else
glibc's documented defaults (128 KiB for both). Large buffers are then mmapped and returned to
the kernel again, as under the defaults; only the dynamic growth of the mmap threshold is lost.
Thresholds set earlier through :func:`keep_large_buffers` itself are known, and restored exactly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 128 * 1024  # glibc's documented default for both (mallopt(3))
_set_here: tuple[int, int] | None = None  # the thresholds last set through this module


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def keep_large_buffers(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's mmap and trim thresholds (bytes) for the rest of the process; True when both
    were accepted. Prefer :func:`large_buffers_on_heap`, which restores them."""
    global _set_here
    libc = _libc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))
    ok = bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold))) and ok
    if ok:
        _set_here = (int(mmap_threshold), int(trim_threshold))
    return ok


def startup_thresholds(environ: dict | None = None) -> tuple[int, int]:
    """(mmap, trim) thresholds the process started with: from its environment, else glibc's defaults."""
    env = os.environ if environ is None else environ
    vals: dict[str, int] = {}
    for item in env.get("GLIBC_TUNABLES", "").split(":"):  # the tunable wins over the old variable
        name, _, value = item.partition("=")
        for k in ("mmap", "trim"):
            if name.strip() == f"glibc.malloc.{k}_threshold" and value.strip().isdigit():
                vals[k] = int(value)
    for k, var in (("mmap", "MALLOC_MMAP_THRESHOLD_"), ("trim", "MALLOC_TRIM_THRESHOLD_")):
        if k not in vals and env.get(var, "").strip().isdigit():
            vals[k] = int(env[var])
    return vals.get("mmap", DEFAULT_THRESHOLD), vals.get("trim", DEFAULT_THRESHOLD)


@contextlib.contextmanager
def large_buffers_on_heap(mmap_threshold: int = 1 << 30, trim_threshold: int = 1 << 30) -> Iterator[bool]:
    """:func:`keep_large_buffers` inside the block (yields whether it took effect), then the
    thresholds from before it: those last set through this module, else the startup thresholds
    (see the module docstring for what glibc lets us restore)."""
    global _set_here
    before = _set_here
    applied = keep_large_buffers(mmap_threshold, trim_threshold)
    try:
        yield applied
    finally:
        if applied:
            keep_large_buffers(*(before or startup_thresholds()))
            _set_here = before
            libc = _libc()
            if libc is not None and hasattr(libc, "malloc_trim"):
                libc.malloc_trim(0)  # hand the free memory the block kept back to the kernel
