"""Top-1 / top-5 of a run, an export folder, a local weights file or a timm model on a data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vitdistill.distill import build as build_mod
from vitdistill.errors import UserError


def load_model(
    source: str | os.PathLike | nn.Module,
    checkpoint=None,
    ema: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """A model from a run folder, an export folder, or a timm name (+ optional weights file)."""
    import timm

    from vitdistill.distill.export import load_exported, load_run_model

    if isinstance(source, nn.Module):
        return source.eval()
    p = Path(source)
    if p.is_dir():
        if (p / "checkpoints").is_dir() or checkpoint is not None:
            return load_run_model(p, checkpoint, ema)[0]
        if (p / "model.safetensors").is_file():
            return load_exported(p)
        raise UserError(f"{p} is neither a run folder (checkpoints/) nor an export (model.safetensors)")
    name = str(source)
    build_mod._check_name(name, "evaluated")
    kwargs = {} if num_classes is None or checkpoint is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(name, pretrained=checkpoint is None, **kwargs)
    except (RuntimeError, OSError) as e:
        raise UserError(
            f"cannot load pretrained weights for {name!r} ({str(e).splitlines()[0][:200]}); "
            "pass --checkpoint FILE"
        ) from None
    if checkpoint is not None:
        build_mod.load_weights(model, checkpoint, role="model", ema=ema, trust=trust_checkpoint)
    return model.eval()


def evaluate(
    run_or_model,
    data: str,
    checkpoint=None,
    batch_size: int = 64,
    ema: bool = False,
    device: str = "auto",
    split: str = "val",
    max_images: int | None = None,
    num_workers: int = 0,
    strict: bool = False,
    trust_checkpoint: bool = False,
) -> dict[str, Any]:
    """``{'top1', 'top5', 'loss', 'n', 'skipped'}`` of a model on ``data`` (its ``split``)."""
    from vitdistill.data import build_dataset, collate_skip, eval_transform
    from vitdistill.distill.trainer import ShardSampler, evaluate_loader, resolve_device
    from vitdistill.utils import dist as dist_mod

    info = dist_mod.init_distributed(
        device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    dev = resolve_device(device, info.local_rank)
    ds = build_dataset(data, split, transform=None, strict=strict, max_images=max_images)
    model = load_model(run_or_model, checkpoint, ema, ds.num_classes, trust_checkpoint)
    n_out = getattr(model, "num_classes", None)
    if n_out is not None and n_out != ds.num_classes:
        raise UserError(f"the model predicts {n_out} classes but {data} has {ds.num_classes}")
    crop = 1.0 if str(data).startswith("synthetic:") else None
    ds.transform = eval_transform(model, crop_pct=crop)
    if len(ds) == 0:
        raise UserError(f"{data} ({split}) holds no images")
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=ShardSampler(len(ds), info.world_size, info.rank),
        num_workers=num_workers,
        collate_fn=collate_skip,
    )
    model = model.to(dev)
    out = evaluate_loader(model, loader, dev)
    out.update(
        {
            "data": str(data),
            "split": split,
            "model": str(run_or_model)
            if not isinstance(run_or_model, nn.Module)
            else type(run_or_model).__name__,
            "ema": ema,
        }
    )
    return out
