"""Checks that stop a run that went numerically wrong, before anything non-finite is saved.

The loss terms are checked on the device (:class:`~vitdistill.distill.epoch_stats.EpochStats`),
the weights before every checkpoint, the validation numbers after every evaluation. The error
names the optimizer step and the last checkpoint only when that file exists.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from vitdistill.errors import UserError


def stopped(what: str, ckpt_dir: Path) -> UserError:
    """The one-line error that stops the run: what went wrong, where the last good weights are."""
    last = Path(ckpt_dir) / "last.pt"
    kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
    return UserError(f"{what}; training stopped, {kept} (lower optim.lr, set optim.clip_grad, or amp=none)")


def first_nonfinite(first_bad: torch.Tensor | None, names: list[str] | None) -> tuple[int, list[str]] | None:
    """(first optimizer step with a non-finite term, the terms that were) or None: all finite.

    The total ``loss`` is named only when no single term was non-finite at that step.
    """
    if first_bad is None:
        return None
    hits = [(s, n) for s, n in zip(first_bad.tolist(), names, strict=True) if s >= 0]
    if not hits:
        return None
    step = min(s for s, _ in hits)
    return step, [n for s, n in hits if s == step and n != "loss"] or ["loss"]


def across_ranks(first_bad: torch.Tensor | None) -> torch.Tensor | None:
    """``first_bad`` agreed over ranks (per term, the earliest step any rank saw), so that every
    rank stops at the same check instead of one stopping while the others wait in the next
    gradient all-reduce. Every rank must call it at the same point."""
    from vitdistill.utils import dist as dist_mod

    if first_bad is None:
        return None
    never = torch.iinfo(first_bad.dtype).max
    agreed = dist_mod.all_reduce_min(torch.where(first_bad < 0, never, first_bad))
    return torch.where(agreed == never, -1, agreed)


def check_loss(
    first_bad: torch.Tensor | None, names: list[str] | None, ckpt_dir: Path, agree: bool = True
) -> None:
    """Stop at the first non-finite loss term (``first_bad``: per term, the first step or -1).
    ``agree``: take it over all ranks first (:func:`across_ranks`); every rank must then call it."""
    hit = first_nonfinite(across_ranks(first_bad) if agree else first_bad, names)
    if hit is not None:
        step, terms = hit
        raise stopped(f"non-finite loss at optimizer step {step} (term: {', '.join(terms)})", ckpt_dir)


def check_weights(modules: dict[str, nn.Module], step: int, ckpt_dir: Path) -> None:
    """Stop before a checkpoint holds a NaN or infinity (``modules``: name prefix -> module)."""
    bad = nonfinite_tensor(modules)
    if bad is not None:
        raise stopped(f"non-finite weights after optimizer step {step} ({bad})", ckpt_dir)


def check_record(record: dict, step: int, ckpt_dir: Path) -> None:
    """Stop on a non-finite number in an epoch record (validation loss, loss means, ...)."""
    bad = nonfinite_keys(record)
    if bad:
        raise stopped(
            f"non-finite {', '.join(bad)} at optimizer step {step} (epoch {record['epoch']})", ckpt_dir
        )


def nonfinite_tensor(modules: dict[str, nn.Module]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or infinity (prefix + name), or None."""
    tensors = {
        prefix + name: t
        for prefix, module in modules.items()
        for name, t in module.state_dict().items()
        if t.is_floating_point()
    }
    if not tensors:
        return None
    finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()]).tolist()  # one host sync
    return next((name for name, ok in zip(tensors, finite, strict=True) if not ok), None)


def nonfinite_keys(record: dict) -> list[str]:
    """The keys of ``record`` whose float value is NaN or infinite."""
    return [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
