"""The optimizer and learning-rate schedule of a training config (timm's factories)."""

from __future__ import annotations

from torch import nn

from vitdistill.errors import UserError


def build_optimizer(cfg: dict, trainable: nn.Module):
    """(timm optimizer, lr) for a config; ``optim.decay_embeddings`` also decays no_weight_decay()
    (``published``: for the students whose published wrappers hid it)."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    from vitdistill.models.conventions import published_decays_embeddings

    o = cfg["optim"]
    lr = o["lr"] if o["lr"] is not None else o["lr_base"] * cfg["data"]["batch_size"] / o["lr_base_size"]
    group_fn = None
    decay = o["decay_embeddings"]
    if decay == "published":
        decay = published_decays_embeddings(getattr(trainable, "student", trainable))
    if decay is True:  # only 1-D tensors and biases are not decayed

        def group_fn(model):
            return param_groups_weight_decay(model, o["weight_decay"], no_weight_decay_list=())

    try:
        optimizer = create_optimizer_v2(
            trainable,
            opt=o["opt"],
            lr=lr,
            weight_decay=o["weight_decay"],
            momentum=o["momentum"],
            param_group_fn=group_fn,
        )
    except (ValueError, AssertionError) as e:
        raise UserError(f"optim.opt={o['opt']!r}: {e}") from None
    return optimizer, lr


def build_scheduler(cfg: dict, optimizer, steps_per_epoch: int):
    """timm's scheduler: stepped per optimizer update, or per epoch for ``sched.published_lag``."""
    from timm.scheduler import create_scheduler_v2

    s = cfg["sched"]
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=s["name"],
        num_epochs=cfg["epochs"],
        decay_epochs=s["decay_epochs"],
        decay_rate=s["decay_rate"],
        min_lr=s["min_lr"],
        warmup_lr=s["warmup_lr"],
        warmup_epochs=s["warmup_epochs"],
        cooldown_epochs=s["cooldown_epochs"],
        step_on_epochs=s["published_lag"],
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler
