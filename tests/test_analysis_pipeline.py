"""The statistics worker: order, bounded queue, errors, and analyze --overlap equal to the serial run."""

from __future__ import annotations

import threading
import time

import pytest
import timm
import torch

from vitdistill.analysis import analyze
from vitdistill.analysis.pipeline import StatsWorker


def test_worker_runs_batches_in_order_and_blocks_when_the_queue_is_full():
    seen, gate = [], threading.Event()

    def fn(i):
        gate.wait()
        seen.append(i)

    w = StatsWorker(fn, depth=1)
    w.submit(0)  # taken by the worker, which waits at the gate
    time.sleep(0.2)
    w.submit(1)  # fills the queue
    t = threading.Thread(target=w.submit, args=(2,))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # a third batch waits: at most depth + 1 in flight
    gate.set()
    t.join(5)
    w.drain()
    w.close()
    assert seen == [0, 1, 2]


def test_worker_error_reaches_the_caller():
    def fn(i):
        if i == 1:
            raise ValueError("bad batch")

    w = StatsWorker(fn)
    w.submit(0)
    w.submit(1)
    with pytest.raises(ValueError, match="bad batch"):
        w.drain()
    w.close()


def test_overlapped_analysis_equals_the_serial_one(tmp_path):
    def run(overlap: bool) -> dict:
        torch.manual_seed(0)
        m = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2).eval()
        return analyze(
            m,
            "synthetic:shapes?n=10&size=32",
            tmp_path / str(overlap),
            split="train",
            batch_size=3,
            permutations=3,
            bootstrap=20,
            rotation_images=4,
            progress=False,
            plots=False,
            overlap=overlap,
            checkpoint_every=2,
        )

    a, b = run(False), run(True)
    for key in ("svd", "pca", "sep", "rotation", "layers", "images"):
        assert a[key] == b[key], key
    assert (tmp_path / "True" / "per_image.csv").read_text() == (
        tmp_path / "False" / "per_image.csv"
    ).read_text()
