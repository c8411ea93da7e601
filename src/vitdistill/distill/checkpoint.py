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
        raise UserError(
            f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact"
        ) from None


def load(path: str | os.PathLike) -> dict[str, Any]:
    """The training state of ``path`` (see :func:`vitdistill.checkpoints.read_run_checkpoint`)."""
    return read_run_checkpoint(path)
