"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the student, the feature-KD projectors, optimizer, scheduler, EMA, grad
scaler, the epoch/step counters, best-so-far metrics, RNG states and the resolved config. A
mid-epoch checkpoint (``log.checkpoint_steps``) adds ``in_epoch``: the optimizer steps done in the
unfinished epoch and, per rank, the RNG states and running loss sums. All of it is plain tensors
/ Python containers, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdistill.checkpoints import read_run_checkpoint
from vitdistill.errors import UserError
from vitdistill.utils.io import atomic_torch_save

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomic save: a failed write (full disk, kill) leaves the previous file intact."""
    state = {"format_version": FORMAT_VERSION, **state}
    try:
        atomic_torch_save(path, state)
    except OSError as e:
        kept = "the previous checkpoint is intact" if Path(path).is_file() else "nothing was written"
        raise UserError(f"could not write checkpoint {path}: {e.strerror or e}; {kept}") from None


def load(path: str | os.PathLike) -> dict[str, Any]:
    """The training state of ``path`` (see :func:`vitdistill.checkpoints.read_run_checkpoint`)."""
    return read_run_checkpoint(path)


def resume_path(last: Path, resume) -> Path | None:
    """The checkpoint to continue from: ``resume`` is None (a new run), ``"auto"`` or a file.

    ``last`` is the run's ``last.pt``; a new run refuses a folder that already holds one.
    """
    run_dir = last.parent.parent
    if resume is None:
        if last.exists():
            raise UserError(
                f"{run_dir} already holds a run (checkpoints/last.pt): use resume='auto' "
                "to continue it, or another 'output'",
                settings=("resume", "output"),
            )
        return None
    if str(resume) == "auto":
        return last if last.exists() else None
    p = Path(resume)
    if not p.is_file():
        raise UserError(
            f"resume={str(resume)!r}: no such checkpoint file (use resume='auto' or a .pt path)",
            settings=("resume",),
        )
    return p


def in_epoch_part(path: Path, in_epoch: dict | None, steps_per_epoch: int, world_size: int, rank: int):
    """Rank ``rank``'s part of a mid-epoch checkpoint's ``in_epoch`` (None for an epoch-end one)."""
    if in_epoch is None:
        return None
    if in_epoch["steps_per_epoch"] != steps_per_epoch or len(in_epoch["ranks"]) != world_size:
        raise UserError(
            f"checkpoint {path} was written mid-epoch by {len(in_epoch['ranks'])} process(es) at "
            f"{in_epoch['steps_per_epoch']} steps per epoch; resume it with the same world size and "
            f"data settings (now {world_size} and {steps_per_epoch})"
        )
    return {"steps_done": int(in_epoch["steps_done"]), **in_epoch["ranks"][rank]}


def load_optimizer(optimizer, saved: dict, path: Path, settings_changed: bool) -> None:
    """Restore the optimizer's state; with ``settings_changed`` its hyperparameters stay the new config's.

    The moments (Adam's, SGD's momentum) always continue; lr, weight decay and the like come
    from the checkpoint unless the resumed run changed settings, so a changed ``optim.lr``
    really applies from the resumed step.
    """
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, RuntimeError) as e:
        raise UserError(
            f"checkpoint {path}: its optimizer state does not fit this config's optimizer "
            f"({' '.join(str(e).split())[:300]}); "
            "resume with the optimizer settings the run started with"
        ) from None
    if settings_changed:
        for group, new in zip(optimizer.param_groups, fresh, strict=True):
            group.update(new)


def resume_line(path: Path, epochs_done: int, epochs: int, in_epoch: dict | None) -> str:
    """What a resumed run says first: the checkpoint, the epochs it holds, how far into the next."""
    within = f", {in_epoch['steps_done']} steps into the next" if in_epoch else ""
    if epochs_done >= epochs:
        within += " (nothing left to train: raise epochs to train further)"
    return f"vitdistill: resuming {path}: {epochs_done} of {epochs} epochs done{within}"
