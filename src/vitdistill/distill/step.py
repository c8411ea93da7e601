"""One training step: each micro-batch's forward and backward, then one optimizer update.

:func:`train_step` is a plain function of the task, the step's micro-batches and the parts an
update touches (:class:`Update`), so every training loop takes the same step: the trainer (AMP,
gradient accumulation, DDP, mixup, clipping, EMA) and the demo (in-memory tensors, cached teacher
outputs, none of those). A part left out (``scaler``, ``ema``, ``clip_grad``, ``mixup``, ...) is
skipped, and the step's arithmetic is then exactly that of the plain
``zero_grad / loss.backward() / optimizer.step()``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitdistill.utils.device import autocast


@dataclass
class Update:
    """What an optimizer update touches, and the count of updates done so far.

    ``scheduler`` is timm's (``step_update`` after each update), ``scaler`` a
    :class:`torch.amp.GradScaler` under fp16, ``ema`` a timm ``ModelEmaV3`` of the student,
    ``clip_grad`` the gradient-norm limit (None or 0: off). ``lr_used`` is the learning rate
    the last update ran at (the schedule has moved on by then).
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    scaler: torch.amp.GradScaler | None = None
    ema: Any = None
    clip_grad: float | None = None
    num_updates: int = 0
    lr_used: float | None = None


@dataclass
class MicroBatch:
    """Images and targets for one forward pass; ``teacher_out`` holds cached teacher outputs
    (``(logits, tokens)`` as :meth:`DistillTask.run_teacher` gives them), None: run the teacher."""

    images: torch.Tensor
    target: torch.Tensor
    teacher_out: tuple | None = None


@dataclass
class StepOptions:
    """How micro-batches are prepared and run: all off by default."""

    device: torch.device | None = None  # move each micro-batch here first
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision
    channels_last: bool = False
    mixup: Any = None  # timm Mixup (pairs images: an odd batch loses its last image)
    model: nn.Module | None = None  # what to call instead of task.trainable (DDP / compiled)
    no_sync: bool = False  # skip DDP's gradient all-reduce on all but the last micro-batch


@dataclass
class StepResult:
    """Per micro-batch that had images: its loss terms (detached) and its number of images."""

    terms: list[dict[str, torch.Tensor]] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    updated: bool = False


def train_step(task, micro_batches: list[MicroBatch], update: Update, options: StepOptions | None = None):
    """Accumulate the gradients of ``micro_batches`` (each loss / their number), then update once.

    Empty micro-batches (every image unreadable) add nothing; a step whose micro-batches are all
    empty makes no update. Returns a :class:`StepResult`.
    """
    options = options or StepOptions()
    accum = len(micro_batches)
    result = StepResult()
    update.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(micro_batches):
        out = forward_backward(task, batch, accum, update.scaler, options, last=i == accum - 1)
        if out is not None:
            result.terms.append(out[0])
            result.images.append(out[1])
    if result.terms:
        apply_update(task, update)
        result.updated = True
    return result


def forward_backward(task, batch: MicroBatch, accum: int, scaler, options: StepOptions, last: bool = True):
    """One micro-batch's loss terms and backward pass: (terms, images) or None when it is empty."""
    images, target = batch.images, batch.target
    if images.shape[0] == 0:
        return None
    if options.device is not None:
        images = images.to(options.device, non_blocking=True)
        target = target.to(options.device, non_blocking=True)
    if options.mixup is not None:
        if images.shape[0] % 2:  # a skipped unreadable image left an odd batch; mixup pairs images
            images, target = images[:-1], target[:-1]
        if images.shape[0] == 0:
            return None
        images, target = options.mixup(images, target)
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    model = options.model or task.trainable
    sync = model.no_sync() if options.no_sync and not last else contextlib.nullcontext()
    with sync:
        with autocast(images.device, options.amp_dtype):
            if batch.teacher_out is None:
                terms = task(images, target, trainable=model)
            else:
                terms = task.losses(model(images), batch.teacher_out, target)
        loss = terms["loss"] / accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
    return {k: v.detach() for k, v in terms.items()}, images.shape[0]


def apply_update(task, update: Update) -> None:
    """Clip, step (through the grad scaler under fp16), update the EMA and the lr schedule."""
    optimizer, scaler, clip = update.optimizer, update.scaler, update.clip_grad
    if scaler is not None and clip:
        scaler.unscale_(optimizer)
    if clip:
        nn.utils.clip_grad_norm_(task.trainable.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    update.num_updates += 1
    if update.ema is not None:
        update.ema.update(task.student, step=update.num_updates)
    update.lr_used = optimizer.param_groups[0]["lr"]
    if update.scheduler is not None:
        update.scheduler.step_update(num_updates=update.num_updates)


def in_steps(loader, accum: int):
    """The loader's micro-batches, ``accum`` at a time: one list per optimizer step (a last,
    incomplete group is dropped, as its step would not be a full batch)."""
    step: list = []
    for micro_batch in loader:
        step.append(micro_batch)
        if len(step) == accum:
            yield step
            step = []
