"""Process seeds: one per (seed, rank) at start, then one per (seed, rank, epoch)."""

from __future__ import annotations

import random

import numpy as np
import torch

from vitdistill.utils.options import SEED_LIMIT


def process_seed(cfg: dict, rank: int, epoch: int | None = None) -> int:
    """The seed of process ``rank``: ``seed + rank`` at start, then one per (seed, rank, epoch).

    ``seed_per_rank: false`` gives every rank rank 0's seeds, as the published code did.
    """
    rank = rank if cfg["seed_per_rank"] else 0
    if epoch is None:
        return cfg["seed"] + rank
    return cfg["seed"] * 1_000_003 + rank * 10_007 + epoch


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % SEED_LIMIT)
    torch.manual_seed(seed)
