"""Small shared helpers: threshold keys, percentile summaries, bootstrap, state merging.

Every streaming metric keeps three kinds of state, and merging (ranks, resume) treats each kind
the same way: ``sum_*`` tensors are added, per-image rows (``ids`` + ``rows``) are concatenated
and re-sorted by image index, and ``samples`` dicts are united. Keeping to these three kinds is
what makes a K-process run equal to a 1-process run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

SUMMARY_QUANTILES = {"p25": 25.0, "median": 50.0, "p75": 75.0, "p99": 99.0}


def tkey(t: float) -> str:
    """'80' for 0.8, '99.9' for 0.999: the key used in summary.json for a threshold."""
    return f"{round(float(t) * 100, 6):g}"


def akey(a: float) -> str:
    """'50' for alpha = 50 (SEP thresholds are given in percent)."""
    return f"{round(float(a), 6):g}"


def describe(values: np.ndarray) -> dict[str, float]:
    """mean, std, min, p25, median, p75, p99, max (percentiles with linear interpolation)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {k: float("nan") for k in ("mean", "std", "min", "p25", "median", "p75", "p99", "max")}
    out = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min())}
    for name, q in SUMMARY_QUANTILES.items():
        out[name] = float(np.percentile(v, q, method="linear"))
    out["max"] = float(v.max())
    return out


def by_stat(columns: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{'80': values, ...} -> {'mean': {'80': ..}, 'p99': {'80': ..}, ...} (the summary layout)."""
    per_key = {k: describe(v) for k, v in columns.items()}
    stats = next(iter(per_key.values())).keys() if per_key else []
    return {s: {k: per_key[k][s] for k in per_key} for s in stats}


def bootstrap_ci(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over images (resampling images with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(1, v.size)))
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        means[s:e] = v[rng.integers(0, v.size, size=(e - s, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2], method="linear")
    return float(lo), float(hi)


def energy_ranks(energy: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Smallest k with cumulative energy fraction >= t, for energies sorted in descending order.

    ``energy`` is (B, K) of non-negative values (squared singular values, PCA captured energy
    per direction, ...). Returns (B, len(thresholds)) int64; rows with zero total energy give 0.
    A 1e-12 slack absorbs float64 round-off when a cumulative sum lands exactly on t.
    """
    total = energy.sum(-1, keepdim=True)
    frac = energy.cumsum(-1) / total.clamp_min(torch.finfo(energy.dtype).tiny)
    k = energy.shape[-1]
    out = torch.stack([((frac < t - 1e-12).sum(-1) + 1).clamp_max(k) for t in thresholds], dim=-1)
    return torch.where(total > 0, out, torch.zeros_like(out))


def first_at_least(curves: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
    """For curves (..., D) rising to 100: first index with curve >= alpha, plus one (a count of bins)."""
    out = []
    for a in alphas:
        hit = curves >= a
        idx = torch.argmax(hit.to(torch.int8), dim=-1) + 1
        out.append(torch.where(hit.any(-1), idx, torch.full_like(idx, curves.shape[-1])))
    return torch.stack(out, dim=-1)


# --- state merging ---------------------------------------------------------------------------


def merge_states(states: Iterable[dict]) -> dict:
    """Merge metric states from ranks (or from a checkpoint plus new work); see module docstring.

    Nested dicts (other than ``samples``) are merged recursively; ``None`` marks a rank that saw
    no image for that part of the state.
    """
    states = [s for s in states if s is not None]
    if not states:
        return {}
    out: dict = {}
    for key in dict.fromkeys(k for s in states for k in s):
        vals = [s.get(key) for s in states]
        present = [v for v in vals if v is not None]
        if key in ("ids", "rows"):
            continue
        if not present:
            out[key] = None
        elif key.startswith("sum"):
            acc = present[0].clone()
            for v in present[1:]:
                acc += v
            out[key] = acc
        elif key == "samples":
            merged: dict = {}
            for v in present:
                merged.update(v)
            out[key] = dict(sorted(merged.items()))
        elif isinstance(present[0], dict):
            out[key] = merge_states(present)
        else:  # configuration or shape: the first rank that knows it
            out[key] = present[0]
    if any("ids" in s for s in states):
        ids = torch.cat([s["ids"] for s in states if "ids" in s])
        rows = torch.cat([s["rows"] for s in states if "ids" in s])
        order = torch.argsort(ids, stable=True)
        out["ids"], out["rows"] = ids[order], rows[order]
    return out


class RowStore:
    """Per-image scalar rows in one buffer that doubles when full, sorted by image index on demand.

    A run adds a few rows per batch for a long time. Keeping each batch's rows as its own small
    tensor would leave hundreds of small long-lived blocks between the large per-batch buffers
    on the heap, which then cannot be reused whole: resident memory grows with the image count.
    A doubling buffer makes a handful of allocations over the whole run.
    """

    def __init__(self, width: int, dtype: torch.dtype = torch.float64, shape: tuple[int, ...] = ()):
        self.width, self.dtype, self.shape = width, dtype, shape or (width,)
        self._n = 0
        self._ids = torch.zeros(0, dtype=torch.int64)
        self._rows = torch.zeros((0, *self.shape), dtype=dtype)

    def _reserve(self, n: int) -> None:
        if n <= len(self._ids):
            return
        cap = max(n, 2 * len(self._ids), 64)
        ids = torch.empty(cap, dtype=torch.int64)
        rows = torch.empty((cap, *self.shape), dtype=self.dtype)
        ids[: self._n], rows[: self._n] = self._ids[: self._n], self._rows[: self._n]
        self._ids, self._rows = ids, rows

    def add(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        k = len(ids)
        self._reserve(self._n + k)
        self._ids[self._n : self._n + k] = ids.detach().to("cpu", torch.int64)
        self._rows[self._n : self._n + k] = rows.detach().to("cpu", self.dtype)
        self._n += k

    def get(self) -> tuple[torch.Tensor, torch.Tensor]:
        ids, rows = self._ids[: self._n], self._rows[: self._n]
        order = torch.argsort(ids, stable=True)
        return ids[order], rows[order]

    def set(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        self._ids, self._rows = ids.to(torch.int64).clone(), rows.to(self.dtype).clone()
        self._n = len(self._ids)

    def __len__(self) -> int:
        return self._n
