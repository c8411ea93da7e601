"""glibc allocator settings that analyze applies: large freed buffers are reused, not re-faulted.

Each check runs in a fresh interpreter, so the heap's state does not depend on the tests that
ran before it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys, torch
import timm  # as in analyze, which loads its model before the first batch
from vitdistill.utils.malloc import keep_large_buffers
accepted = keep_large_buffers() if sys.argv[1] == "keep" else None
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MiB of float32: above glibc's largest default mmap threshold
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"accepted": accepted, "faults": faults}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc allocator settings"
)
def test_a_freed_large_buffer_is_reused_without_page_faults():
    default = _faults("default")["faults"]
    assert min(default) > 10_000, default  # every buffer a fresh mapping: 16384 pages, every time
    kept = _faults("keep")
    assert kept["accepted"] is True
    # the heap grows at first (and now and then a small block takes the head of a freed region);
    # after that most buffers land on pages the heap already has
    later = kept["faults"][2:]
    assert sum(f < 1000 for f in later) >= len(later) // 2, kept["faults"]
    assert sum(kept["faults"]) < sum(default) / 3, (kept["faults"], default)
