"""glibc allocator settings that analyze applies: large freed buffers are reused, not re-faulted.

Each check runs in a fresh interpreter, so the heap's state does not depend on the tests that
ran before it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys, torch
import timm, vitdistill.models  # loaded first, as in every analyze run
from vitdistill.utils.malloc import keep_large_buffers
accepted = None
if sys.argv[1] == "keep":
    accepted = keep_large_buffers()
elif sys.argv[1] == "after-analyze":  # analyze restores what it changed before it returns
    import timm
    from vitdistill.analysis import analyze
    torch.set_num_threads(3)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
    s = analyze(model, "synthetic:shapes?n=6&size=32", sys.argv[2], split="train", batch_size=3,
                permutations=2, bootstrap=10, rotation_images=3, progress=False, plots=False)
    accepted = s["provenance"]["allocator"]["glibc_large_buffers_on_heap"]
    assert s["provenance"]["allocator"]["torch_threads"] == 3, s["provenance"]["allocator"]
    assert torch.get_num_threads() == 3, torch.get_num_threads()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MiB of float32: above glibc's largest default mmap threshold
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"accepted": accepted, "faults": faults}))
"""


def _faults(mode: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, *args], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc allocator settings"
)


@glibc_only
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


@glibc_only
def test_analyze_restores_the_allocator_and_thread_count_it_changed(tmp_path):
    # analyze keeps large buffers on the heap while it runs; afterwards a 64 MiB buffer is mapped
    # (and faulted in) afresh every time again, as under glibc's defaults, and the caller's
    # thread count (3) is back (checked inside the child)
    after = _faults("after-analyze", str(tmp_path / "an"))
    assert after["accepted"] is True
    assert min(after["faults"]) > 10_000, after["faults"]


def test_startup_thresholds_come_from_the_environment_or_glibc_defaults():
    from vitdistill.utils.malloc import DEFAULT_THRESHOLD, startup_thresholds

    assert DEFAULT_THRESHOLD == 128 * 1024
    assert startup_thresholds({}) == (DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)
    assert startup_thresholds({"MALLOC_MMAP_THRESHOLD_": "4096"}) == (4096, DEFAULT_THRESHOLD)
    env = {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=7:glibc.malloc.mmap_threshold=9"}
    assert startup_thresholds({**env, "MALLOC_MMAP_THRESHOLD_": "4096"}) == (9, 7)
