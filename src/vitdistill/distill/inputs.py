"""What a training run reads: its data sets, their transforms, the loaders and mixup.

Plain functions of the resolved config; the trainer calls them in order and keeps what they
return. ``data.batch_size`` is the global batch: :func:`build_loaders` splits it over ranks and
accumulation steps (see :class:`~vitdistill.distill.sampler.EpochSampler`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from vitdistill.distill.evaluate import ShardSampler
from vitdistill.distill.sampler import EpochSampler, SeededSamples
from vitdistill.errors import UserError


def build_datasets(data_cfg: dict, seed: int) -> tuple:
    """(training set, validation set, number of classes), transforms not yet set.

    The validation set never shares an image with the training set (:mod:`vitdistill.data.holdout`).
    """
    from vitdistill.data.holdout import train_val_sets
    from vitdistill.data.timm_sources import refuse_stream

    if not data_cfg["train"]:
        raise UserError(
            "no training data: set data.train in the config or give 'data' (a folder or synthetic:NAME)",
            settings=("data",),
        )
    train_ds, val_ds = train_val_sets(data_cfg, seed)
    refuse_stream(val_ds, "training validates by position (each image once, sharded over ranks)")
    if len(train_ds) == 0:
        raise UserError(f"training data {data_cfg['train']} holds no images")
    num_classes = train_ds.num_classes
    if val_ds.num_classes != num_classes:
        raise UserError(
            f"training data has {num_classes} classes but validation data has {val_ds.num_classes}"
        )
    return train_ds, val_ds, num_classes


def set_transforms(cfg: dict, student: nn.Module, train_ds, val_ds) -> dict:
    """Set training augmentation and the evaluation transform; returns how evaluation crops.

    The crop is ``data.eval_crop_pct``, else the whole image for synthetic data, else the
    student's timm default; the returned record says which, for the run's summary.
    """
    from vitdistill.data import eval_transform, resolve_data_config, train_transform

    aug = cfg["aug"]
    crop = cfg["data"]["eval_crop_pct"]
    source = "data.eval_crop_pct"
    if crop is None and str(cfg["data"]["train"]).startswith("synthetic:"):
        crop, source = 1.0, "synthetic data: the whole image"
    elif crop is None:
        source = "the student's timm default"
    if aug["enabled"]:
        train_ds.transform = train_transform(
            student,
            auto_augment=aug["auto_augment"],
            re_prob=aug["reprob"],
            re_mode=aug["remode"],
            hflip=aug["hflip"],
            color_jitter=aug["color_jitter"],
            scale=tuple(aug["scale"]),
        )
    else:
        train_ds.transform = eval_transform(student, crop_pct=crop)
    val_ds.transform = eval_transform(student, crop_pct=crop)
    return {
        "crop_pct": float(resolve_data_config(student, crop_pct=crop)["crop_pct"]),
        "source": source,
        "transform": str(val_ds.transform),
    }


@dataclass
class Loaders:
    """The training loader (its sampler and generator, reseeded each epoch) and the validation one."""

    train: DataLoader
    val: DataLoader
    sampler: EpochSampler
    generator: torch.Generator
    micro_batch: int  # images per rank per micro-step

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps


def build_loaders(cfg: dict, train_ds, val_ds, world_size: int, rank: int, device: torch.device) -> Loaders:
    """Global batches split over ``world_size`` ranks and ``optim.grad_accum`` micro-steps."""
    from vitdistill.data import collate_skip

    data_cfg, aug = cfg["data"], cfg["aug"]
    global_batch, accum = data_cfg["batch_size"], cfg["optim"]["grad_accum"]
    if global_batch % (world_size * accum):
        raise UserError(
            f"data.batch_size={global_batch} must be divisible by world size x grad_accum = {world_size}x{accum}"
        )
    micro = global_batch // (world_size * accum)
    if getattr(train_ds, "streaming", False):
        return _stream_loaders(cfg, train_ds, val_ds, world_size, rank, device, micro)
    if len(train_ds) < global_batch:
        raise UserError(
            f"data.batch_size={global_batch} is larger than the training set ({len(train_ds)} images)"
        )
    if (aug["mixup"] > 0 or aug["cutmix"] > 0) and micro % 2:
        raise UserError(f"mixup/cutmix need an even micro-batch, got {micro} (change data.batch_size)")
    sampler = EpochSampler(
        len(train_ds),
        global_batch,
        world_size,
        rank,
        accum,
        aug["repeated_aug"],
        True,
        cfg["seed"],
        data_cfg["steps_per_epoch"],
        seeded=True,
    )
    generator = torch.Generator()
    workers, pin = data_cfg["num_workers"], device.type == "cuda"
    train_loader = DataLoader(
        SeededSamples(train_ds),
        batch_size=micro,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip,
        generator=generator,
        drop_last=False,
        pin_memory=pin,
    )
    val_loader = _val_loader(val_ds, data_cfg, micro, world_size, rank, pin)
    return Loaders(train_loader, val_loader, sampler, generator, micro)


class StreamEpochs:
    """The epoch hook of a streamed training set: timm's reader reshuffles its shards each epoch.

    A stream cannot start at a step inside an epoch, so a run on one resumes at epoch ends only.
    """

    def __init__(self, dataset, steps: int):
        self.dataset, self.steps = dataset, steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if start_step:
            raise UserError("a run on a streamed training source resumes at an epoch end only")
        self.dataset.set_epoch(epoch)


class _Capped:
    """The first ``n`` micro-batches of a loader: timm's reader rounds each worker's share up."""

    def __init__(self, loader: DataLoader, n: int):
        self.loader, self.n = loader, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(self.loader, self.n)


def _stream_loaders(cfg, train_ds, val_ds, world_size, rank, device, micro) -> Loaders:
    """Loaders for a streamed (``hfids/``, ``wds/``) training set: shuffled and sharded by timm's reader."""
    from vitdistill.data import collate_skip

    data_cfg, accum = cfg["data"], cfg["optim"]["grad_accum"]
    if cfg["aug"]["repeated_aug"] > 1:
        raise UserError(
            f"{data_cfg['train']} is streamed, so set aug.repeated_aug: 1 (repeats need random access)"
        )
    if cfg["log"]["checkpoint_steps"]:
        raise UserError(
            f"{data_cfg['train']} is streamed, so set log.checkpoint_steps: 0 (no mid-epoch resume)"
        )
    steps = len(train_ds) // data_cfg["batch_size"]
    if data_cfg["steps_per_epoch"]:
        steps = min(steps, data_cfg["steps_per_epoch"])
    if steps < 1:
        raise UserError(
            f"data.batch_size={data_cfg['batch_size']} is larger than the training set ({len(train_ds)} images)"
        )
    stream = train_ds.for_training(cfg["seed"], micro)
    workers, generator = data_cfg["num_workers"], torch.Generator()
    stream.set_loader_cfg(workers)
    loader = DataLoader(
        stream,
        batch_size=micro,
        num_workers=workers,
        collate_fn=collate_skip,
        generator=generator,
        pin_memory=device.type == "cuda",
    )
    val_loader = _val_loader(val_ds, data_cfg, micro, world_size, rank, device.type == "cuda")
    return Loaders(_Capped(loader, steps * accum), val_loader, StreamEpochs(stream, steps), generator, micro)


def build_mixup(cfg: dict, num_classes: int):
    """timm's Mixup/CutMix for ``aug.mixup`` / ``aug.cutmix`` (None when both are off)."""
    aug = cfg["aug"]
    if not (aug["mixup"] > 0 or aug["cutmix"] > 0):
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=aug["mixup"],
        cutmix_alpha=aug["cutmix"],
        prob=aug["mixup_prob"],
        switch_prob=aug["mixup_switch_prob"],
        mode=aug["mixup_mode"],
        label_smoothing=cfg["loss"]["smoothing"],
        num_classes=num_classes,
    )


def teacher_renorm(student: nn.Module, teacher: nn.Module | None) -> tuple | None:
    """((student mean, std), (teacher mean, std)) when the teacher's input must be re-normalised."""
    from vitdistill.data import resolve_data_config

    if teacher is None:
        return None
    s_cfg, t_cfg = resolve_data_config(student), resolve_data_config(teacher)
    s_mean, s_std = tuple(map(float, s_cfg["mean"])), tuple(map(float, s_cfg["std"]))
    t_mean, t_std = tuple(map(float, t_cfg["mean"])), tuple(map(float, t_cfg["std"]))
    return ((s_mean, s_std), (t_mean, t_std)) if (s_mean, s_std) != (t_mean, t_std) else None


def _val_loader(val_ds, data_cfg: dict, micro: int, world_size: int, rank: int, pin: bool) -> DataLoader:
    """Validation: this rank's shard in order, ``data.val_batch_size`` (default twice the micro-batch)."""
    from vitdistill.data import collate_skip

    return DataLoader(
        val_ds,
        batch_size=data_cfg["val_batch_size"] or max(1, micro * 2),
        sampler=ShardSampler(len(val_ds), world_size, rank),
        num_workers=data_cfg["num_workers"],
        collate_fn=collate_skip,
        pin_memory=pin,
    )
