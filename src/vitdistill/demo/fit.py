"""The demo's training loop: many tiny runs over data held in memory, teacher outputs cached.

The library's :func:`vitdistill.distill.train` runs the teacher on every augmented batch and
reads images through a DataLoader; for a study of ~60 tiny runs on a CPU that overhead is most
of the cost. Here the data set is decoded once into tensors (no augmentation, so every epoch
sees the same pixels), the teacher's outputs on it are computed once per kind of target
(:func:`teacher_targets`, through :meth:`DistillTask.run_teacher`) and cached on disk, and each
run only trains its student. Losses, projectors and models are the library's own
(:class:`vitdistill.distill.task.DistillTask`, :func:`vitdistill.models.create_model`).

Pairing: run (arm, seed) draws its batch order from ``seed`` alone, and the parts its student
shares with the plain narrow student (same name and shape) start from the narrow student's
initialisation for that seed (:func:`build_student`), so differences between arms at one seed
are differences of method, not of luck.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitdistill.utils.io import atomic_write_json


@dataclass
class Split:
    """A data split decoded into memory: images (N, 3, H, W) float32 and labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(spec: str, split: str, model, max_images: int | None, crop_pct) -> Split:
    """Decode a data split with ``model``'s eval transform (no augmentation) into tensors."""
    from vitdistill.data import build_dataset, eval_transform

    ds = build_dataset(spec, split, max_images=max_images)
    ds.transform = eval_transform(model, crop_pct=crop_pct)
    images, labels = [], []
    for i in range(len(ds)):
        image, label = ds[i][:2]
        if image is None:  # unreadable: skipped, as every loader of the library does, and said on stderr
            continue
        images.append(image)
        labels.append(int(label))
    if not images:
        from vitdistill.errors import UserError

        raise UserError(f"{spec}: no readable image in the {split} split ({len(ds)} listed)")
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.long))


def save_splits(path: Path, splits: dict[str, Split]) -> None:
    from vitdistill.utils.io import atomic_torch_save

    atomic_torch_save(path, {k: {"images": v.images, "labels": v.labels} for k, v in splits.items()})


def load_splits(path) -> dict[str, Split]:
    """The splits :func:`save_splits` wrote (tensors only: read without unpickling objects)."""
    from vitdistill.checkpoints import torch_load

    return {k: Split(**v) for k, v in torch_load(path, opt_in=None).items()}


def resolve_config(recipe: dict, overrides: list[str]) -> dict:
    """A recipe resolved by the library's config code (defaults filled, values checked)."""
    from vitdistill.distill import config as config_mod

    return config_mod.resolve(recipe, overrides)


def build_student(cfg: dict, narrow_cfg: dict, seed: int, num_classes: int) -> tuple[torch.nn.Module, dict]:
    """The arm's student for ``seed``; parts it shares with the narrow student start identical."""
    from vitdistill.models import as_spec, create_model

    spec = as_spec(cfg["model"], num_classes)
    torch.manual_seed(seed)
    model = create_model(spec)[0].train()
    torch.manual_seed(seed)
    narrow = create_model(narrow_cfg["model"], num_classes=num_classes)[0]
    own = model.state_dict()
    shared = {k: v for k, v in narrow.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return model, spec


def make_task(model, teacher, cfg: dict, input_size, num_classes: int):
    from vitdistill.distill.config import needs_teacher
    from vitdistill.distill.task import DistillTask

    lc = cfg["loss"]
    return DistillTask(model, teacher if needs_teacher(lc) else None, lc, input_size, num_classes)


def target_kind(task) -> str | None:
    """Which cached teacher outputs a task needs (None: no teacher): logits, tokens, pooled width."""
    if task.teacher is None:
        return None
    pool = "-".join("raw" if c is None else str(c) for c in task.t_pool) if task.use_feat else "none"
    return f"kd{int(task.use_kd)}-feat{int(task.use_feat)}-{pool}"


@torch.no_grad()
def teacher_targets(task, images: torch.Tensor, batch: int = 256) -> dict[str, Any]:
    """The teacher's logits and tapped tokens on every image, as the task's training step sees them."""
    logits, feats = [], []
    for s in range(0, images.shape[0], batch):
        lo, fe = task.run_teacher(images[s : s + batch])
        if lo is not None:
            logits.append(lo)
        feats.append(fe)
    return {
        "logits": torch.cat(logits) if logits else None,
        "feats": [torch.cat([f[i] for f in feats]) for i in range(len(feats[0]))] if feats else [],
    }


def top1(model, split: Split, batch: int = 500) -> float:
    """Top-1 on an in-memory split, through the library's one evaluation loop."""
    from vitdistill.distill.evaluate import evaluate_loader

    batches = (
        (split.images[s : s + batch], split.labels[s : s + batch], None, 0)
        for s in range(0, len(split), batch)
    )
    return evaluate_loader(model, batches, split.images.device)["top1"]


def _optimizer(task, cfg: dict, steps_per_epoch: int):
    """The trainer's own optimizer and scheduler builders, so a demo run follows its recipe exactly."""
    from vitdistill.distill.optim import build_optimizer, build_scheduler

    opt, _ = build_optimizer(cfg, task.trainable)
    return opt, build_scheduler(cfg, opt, steps_per_epoch)


def fit(
    task, train: Split, val: Split, targets: dict | None, cfg: dict, seed: int, on_epoch=None
) -> dict[str, Any]:
    """Train ``task.trainable`` for ``cfg['epochs']``; batch order drawn from ``seed`` only."""
    from vitdistill.distill.step import MicroBatch, Update, train_step

    batch = cfg["data"]["batch_size"]
    steps = len(train) // batch
    opt, sched = _optimizer(task, cfg, steps)
    # the library's step with the recipe's clipping and EMA (no AMP or mixup)
    update = Update(opt, sched, ema=_ema(task, cfg), clip_grad=cfg["optim"]["clip_grad"])
    task.trainable.train()
    losses = []
    for epoch in range(cfg["epochs"]):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        total = 0.0
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            t_out = (None, [])
            if targets is not None:
                lo = targets["logits"]
                t_out = (lo[idx] if lo is not None else None, [f[idx] for f in targets["feats"]])
            step = train_step(task, [MicroBatch(train.images[idx], train.labels[idx], t_out)], update)
            total += float(step.terms[0]["loss"])
        if not torch.isfinite(torch.tensor(total)):
            from vitdistill.errors import UserError

            raise UserError(f"non-finite training loss in epoch {epoch} (seed {seed}); lower optim.lr")
        losses.append(total / steps)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    if update.ema is not None:  # the average is the scored (and saved) model, as the recipe asks
        task.student.load_state_dict(update.ema.module.state_dict())
    return {"top1": top1(task.student, val), "train_loss": losses, "steps": update.num_updates}


def _ema(task, cfg: dict):
    """The student's EMA (timm ModelEmaV3) when the recipe asks for one (``ema.enabled``)."""
    if not cfg["ema"]["enabled"]:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(task.student, decay=cfg["ema"]["decay"], use_warmup=cfg["ema"]["warmup"])


def checkpoint_file(run_dir: Path) -> Path:
    """Where a demo run (the teacher or a student) keeps its final weights."""
    return Path(run_dir) / "checkpoints" / "last.pt"


def save_run(run_dir: Path, model, spec: dict, summary: dict) -> None:
    """Weights in the library's run-checkpoint layout (``student`` + ``model_spec``), then summary.json."""
    from vitdistill.distill import checkpoint as ckpt_mod

    path = checkpoint_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_mod.save(path, {"student": model.state_dict(), "model_spec": spec})
    atomic_write_json(run_dir / "summary.json", {**summary, "model": spec})


def read_json(path: Path) -> dict | None:
    """A JSON file the demo wrote, or None when it is missing or cannot be read (cut short, edited):
    the step that wrote it is then not finished and runs again."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_summary(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / "summary.json")


def cpu_clock() -> tuple[float, float]:
    """(wall, this process's CPU seconds)."""
    return time.time(), time.process_time()
