"""Which items a capped data set keeps (shared by the file-backed and the synthetic sets)."""

from __future__ import annotations

import numpy as np

from vitdistill.errors import UserError


def subset_positions(n: int, max_images: int | None) -> np.ndarray:
    """Evenly spaced positions, so a subset of a class-sorted list still covers every class."""
    if max_images is None or max_images >= n:
        return np.arange(n)
    if max_images <= 0:
        raise UserError(f"max_images must be a positive number (got {max_images})")
    return np.unique(np.floor(np.arange(max_images) * (n / max_images)).astype(np.int64))
