"""Top-1 / top-5 of a model on a data set: the trainer's validation and ``vitdistill eval``.

:func:`evaluate_loader` is the one evaluation loop (sharded over ranks by :class:`ShardSampler`,
summed with ``all_reduce``; accuracy by ``timm.utils.accuracy``); :func:`evaluate` loads a run, an
export folder, a local weights file or a timm model and runs it on a data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from vitdistill.errors import UserError
from vitdistill.models import create_model
from vitdistill.utils import dist as dist_mod
from vitdistill.utils.device import amp_dtype, autocast, resolve_device
from vitdistill.utils.eval_options import EvalOptions
from vitdistill.utils.options import from_keywords


class ShardSampler(Sampler[int]):
    """Rank k reads indices k, k+W, ... (no padding, so no image is counted twice)."""

    def __init__(self, n: int, world: int, rank: int):
        self.idx = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.idx)

    def __iter__(self):
        return iter(self.idx)


@torch.no_grad()
def evaluate_loader(
    model: nn.Module, loader, device: torch.device, amp_dtype=None, channels_last=False
) -> dict:
    """top-1 / top-5 / CE of ``model`` over ``loader``, summed over ranks.

    A model that returns two heads (DeiT's class and distillation tokens) is scored on their mean.
    """
    from timm.utils import accuracy

    was = model.training
    model.eval()
    stats = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss_sum, n
    skipped = 0
    for images, labels, _idx, n_skip in loader:
        skipped += int(n_skip)
        if images.shape[0] == 0:
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(images)
        if isinstance(logits, tuple):
            logits = (logits[0] + logits[1]) / 2
        logits = logits.float()
        n = labels.shape[0]
        top1, top5 = accuracy(logits, labels, topk=(1, 5))  # percentages of this batch
        stats[0] += torch.round(top1.double() * n / 100)
        stats[1] += torch.round(top5.double() * n / 100)
        stats[2] += torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        stats[3] += n
    model.train(was)
    dist_mod.all_reduce_sum(stats)
    skipped_t = dist_mod.all_reduce_sum(torch.tensor([skipped], device=device))
    n = max(stats[3].item(), 1.0)
    return {
        "top1": 100.0 * stats[0].item() / n,
        "top5": 100.0 * stats[1].item() / n,
        "loss": stats[2].item() / n,
        "n": int(stats[3].item()),
        "skipped": int(skipped_t.item()),
    }


def _load(source, checkpoint, ema: bool, num_classes: int, trust: bool) -> nn.Module:
    """A run folder or export (its own weights, or ``checkpoint``), or a model name with a weights
    file (``num_classes`` from the data) or else its timm pretrained weights."""
    if isinstance(source, nn.Module):
        return source.eval()
    named = not Path(source).is_dir()
    model, _ = create_model(
        source,
        checkpoint,
        pretrained=named and checkpoint is None,
        num_classes=num_classes if named and checkpoint is not None else None,
        trust_checkpoint=trust,
        ema=ema,
    )
    return model


def evaluate(run_or_model, data: str, **options: Any) -> dict[str, Any]:
    """``{'top1', 'top5', 'loss', 'n', 'skipped', 'crop_pct', ...}`` of a model on ``data`` (its ``split``).

    ``options`` are the fields of :class:`~vitdistill.utils.eval_options.EvalOptions`, where each
    is declared and documented. The evaluation crop is ``crop_pct`` when given, else a run folder's
    ``data.eval_crop_pct`` (so a run is scored as it was during training), else the whole image on
    synthetic data, else the model's timm default.
    """
    from vitdistill.data import build_dataset, collate_skip, eval_transform

    o = from_keywords(EvalOptions, options)
    info = dist_mod.init_distributed(o.device)
    dev = resolve_device(o.device, info.local_rank)
    ds = build_dataset(data, o.split, transform=None, strict=o.strict, max_images=o.max_images)
    model = _load(run_or_model, o.checkpoint, o.ema, ds.num_classes, o.trust_checkpoint)
    n_out = getattr(model, "num_classes", None)
    if n_out is not None and n_out != ds.num_classes:
        raise UserError(f"the model predicts {n_out} classes but {data} has {ds.num_classes}")
    crop = o.crop_pct if o.crop_pct is not None else _run_crop_pct(run_or_model)
    if crop is None and str(data).startswith("synthetic:"):
        crop = 1.0
    ds.transform = eval_transform(model, crop_pct=crop)
    if len(ds) == 0:
        raise UserError(f"{data} ({o.split}) holds no images")
    if getattr(ds, "streaming", False):
        ds.set_loader_cfg(o.num_workers)  # timm's reader splits the shards over ranks and workers
        loader = DataLoader(ds, batch_size=o.batch_size, num_workers=o.num_workers, collate_fn=collate_skip)
    else:
        loader = DataLoader(
            ds,
            batch_size=o.batch_size,
            sampler=ShardSampler(len(ds), info.world_size, info.rank),
            num_workers=o.num_workers,
            collate_fn=collate_skip,
        )
    model = model.to(dev)
    out = evaluate_loader(model, loader, dev, amp_dtype=amp_dtype(o.amp))
    out.update(
        {
            "data": str(data),
            "split": o.split,
            "model": str(run_or_model)
            if not isinstance(run_or_model, nn.Module)
            else type(run_or_model).__name__,
            "ema": o.ema,
            "crop_pct": crop,  # None: the model's timm default
            "training_data": _trained_on(run_or_model, ds),
            "amp": str(o.amp or "none"),
        }
    )
    return out


def _trained_on(source, ds) -> bool:
    """Whether ``ds`` holds the images a run folder was trained on (its summary.json's train_data)."""
    from vitdistill.data.holdout import same_source

    if isinstance(source, nn.Module) or not (Path(source) / "summary.json").is_file():
        return False
    import json

    try:
        trained = json.loads((Path(source) / "summary.json").read_text()).get("train_data")
    except (ValueError, OSError, AttributeError):
        return False
    return same_source(trained, ds.describe() if hasattr(ds, "describe") else None)


def _run_crop_pct(source) -> float | None:
    """``data.eval_crop_pct`` from a run folder's ``config.yaml`` (None for anything else)."""
    if isinstance(source, nn.Module):
        return None
    cfg_file = Path(source) / "config.yaml"
    if not cfg_file.is_file():
        return None
    import yaml

    from vitdistill.utils import yamlsafe

    try:
        cfg = yamlsafe.load(cfg_file.read_text(), str(cfg_file)) or {}
    except (yaml.YAMLError, OSError):
        return None
    crop = (cfg.get("data") or {}).get("eval_crop_pct") if isinstance(cfg, dict) else None
    return float(crop) if isinstance(crop, int | float) else None
