"""The one evaluation loop and the one device/autocast helper, against counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from vitdistill.data import collate_skip
from vitdistill.distill.evaluate import ShardSampler, evaluate_loader
from vitdistill.errors import UserError
from vitdistill.utils.device import amp_dtype, autocast, resolve_device


class FixedLogits(nn.Module):
    """Returns a preset row of logits for each image (the image's first pixel is its index)."""

    def __init__(self, logits: torch.Tensor, two_heads: bool = False):
        super().__init__()
        self.register_buffer("table", logits)
        self.two_heads = two_heads

    def forward(self, x):
        out = self.table[x[:, 0, 0, 0].long()]
        return (out, out) if self.two_heads else out


def _items(labels):
    return [(torch.full((3, 2, 2), float(i)), int(y), i) for i, y in enumerate(labels)]


@pytest.mark.parametrize("two_heads", [False, True])
def test_topk_and_loss_match_a_numpy_count(two_heads):
    rng = np.random.default_rng(0)
    n, classes = 37, 7
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    loader = DataLoader(_items(labels), batch_size=8, collate_fn=collate_skip)
    got = evaluate_loader(FixedLogits(torch.from_numpy(logits), two_heads), loader, torch.device("cpu"))
    order = np.argsort(-logits, axis=1)
    top1 = 100 * np.mean(order[:, 0] == labels)
    top5 = 100 * np.mean([labels[i] in order[i, :5] for i in range(n)])
    z = logits - logits.max(1, keepdims=True)
    ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(n), labels])
    assert got["n"] == n and got["skipped"] == 0
    assert got["top1"] == pytest.approx(top1, abs=1e-9)
    assert got["top5"] == pytest.approx(top5, abs=1e-9)
    assert got["loss"] == pytest.approx(ce, rel=1e-5)


def test_fewer_than_five_classes_counts_every_image_in_top5():
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    loader = DataLoader(_items([0, 0]), batch_size=2, collate_fn=collate_skip)
    got = evaluate_loader(FixedLogits(logits), loader, torch.device("cpu"))
    assert got["top1"] == 50.0 and got["top5"] == 100.0


def test_shards_cover_every_index_once():
    shards = [list(ShardSampler(10, 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_devices_and_amp():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16") is torch.float16
    assert amp_dtype("none") is None and amp_dtype(None) is None and amp_dtype(True) is torch.bfloat16
    with pytest.raises(UserError, match="unknown amp mode"):
        amp_dtype("fp8")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32
