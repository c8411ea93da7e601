"""The one training step: plain arithmetic without options, accumulation, clipping; its only home."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import timm
import torch

from _helpers import TINY_KW
from vitdistill.distill.step import MicroBatch, StepOptions, Update, train_step
from vitdistill.distill.task import DistillTask

LOSS = {
    "alpha": 0.0,
    "feat_weight": 0.0,
    "smoothing": 0.0,
    "kd": "soft",
    "temperature": 1.0,
    "feat_loss": "mse",
    "feat_norm": "none",
}


def _task(seed: int = 0) -> DistillTask:
    torch.manual_seed(seed)
    student = timm.create_model("vit_tiny_patch16_224", num_classes=5, **TINY_KW)
    return DistillTask(student, None, LOSS, (3, 16, 16), 5)


def _batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)


def _flat(task) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in task.trainable.parameters()])


def test_step_without_options_is_the_plain_update():
    images, labels = _batch(8)
    task = _task()
    ref = copy.deepcopy(task)
    opt = torch.optim.AdamW(task.trainable.parameters(), lr=1e-3)
    ref_opt = torch.optim.AdamW(ref.trainable.parameters(), lr=1e-3)
    for _ in range(3):
        result = train_step(task, [MicroBatch(images, labels)], Update(opt))
        ref_opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(ref.trainable(images)[0], labels)
        loss.backward()
        ref_opt.step()
        assert result.updated and result.images == [8]
    assert torch.equal(_flat(task), _flat(ref))  # bitwise: nothing added to the arithmetic
    assert float(result.terms[0]["loss"]) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_accumulated_micro_batches_equal_one_batch():
    images, labels = _batch(8)
    one, two = _task(), _task()
    opt1 = torch.optim.SGD(one.trainable.parameters(), lr=0.5)
    opt2 = torch.optim.SGD(two.trainable.parameters(), lr=0.5)
    train_step(one, [MicroBatch(images, labels)], Update(opt1))
    halves = [MicroBatch(images[:4], labels[:4]), MicroBatch(images[4:], labels[4:])]
    update = Update(opt2)
    result = train_step(two, halves, update)
    assert update.num_updates == 1 and result.images == [4, 4]
    torch.testing.assert_close(_flat(one), _flat(two), rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_update_norm():
    images, labels = _batch(8)
    task = _task()
    before = _flat(task).clone()
    opt = torch.optim.SGD(task.trainable.parameters(), lr=1.0)  # the update is minus the gradient
    train_step(task, [MicroBatch(images, labels)], Update(opt, clip_grad=1e-3))
    assert float((_flat(task) - before).norm()) == pytest.approx(1e-3, rel=1e-3)


def test_empty_micro_batches_make_no_update_and_mixup_drops_an_odd_image():
    task = _task()
    opt = torch.optim.SGD(task.trainable.parameters(), lr=0.1)
    update = Update(opt)
    empty = MicroBatch(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long))
    assert not train_step(task, [empty, empty], update).updated and update.num_updates == 0
    from timm.data import Mixup

    mixup = Mixup(mixup_alpha=0.8, num_classes=5)
    images, labels = _batch(5)
    result = train_step(task, [MicroBatch(images, labels)], update, StepOptions(mixup=mixup))
    assert result.images == [4] and update.num_updates == 1


def test_backward_lives_only_in_the_step():
    src = Path(__file__).resolve().parents[1] / "src" / "vitdistill"
    homes = sorted(
        str(f.relative_to(src)) for f in src.rglob("*.py") if re.search(r"\.backward\(", f.read_text())
    )
    assert homes == ["distill/step.py"]
