"""Small shared helpers: threshold keys, percentile summaries, bootstrap, state merging.

Every streaming metric declares how each key of its state merges (ranks, resume): see
:class:`Mergeable` and :func:`merge_states`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

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

#: How a state key merges across ranks (or a checkpoint plus new work). A declaration maps each
#: key to one of these names, or to a nested declaration (the key holds a dict of its own state).
REDUCTIONS = ("sum", "rows", "union", "first")


def check_declaration(reductions: Mapping[str, Any], owner: str) -> None:
    """Refuse a declaration with an unknown reduction, or "rows" keys without the "ids" sort key."""
    for key, kind in reductions.items():
        if isinstance(kind, Mapping):
            check_declaration(kind, f"{owner}.{key}")
        elif kind not in REDUCTIONS:
            raise ValueError(
                f"{owner}: state key {key!r} declares reduction {kind!r}; use one of {REDUCTIONS}"
            )
    if any(k == "rows" for k in reductions.values()) and reductions.get("ids") != "rows":
        raise ValueError(
            f"{owner}: 'rows' keys are sorted by the 'ids' key, which must be declared 'rows' too"
        )


class Mergeable:
    """Base of every streaming metric whose state merges: it declares each state key's reduction.

    ``reductions`` maps every key of ``state_dict()`` to "sum" (tensors added), "rows" (per-image
    rows concatenated and re-sorted by the "ids" key), "union" (dicts keyed by image united and
    sorted), "first" (configuration or shape: the first rank that knows it) or a nested
    declaration (the key holds a dict merged by that declaration). Keeping to these kinds is what
    makes a K-process run equal to a 1-process run.
    """

    reductions: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_declaration(cls.reductions, cls.__name__)


def merge_states(states: Iterable[dict | None], reductions: Mapping[str, Any] | type) -> dict:
    """Merge metric states from ranks (or from a checkpoint plus new work) by their declaration.

    ``reductions`` is the metric class (its :attr:`Mergeable.reductions`) or a declaration: the
    caller always says how its states merge. A key the declaration does not name is refused.
    ``None`` marks a rank (or a key) that saw no image.
    """
    if isinstance(reductions, type):
        reductions = reductions.reductions
    if not isinstance(reductions, Mapping):
        raise TypeError(f"merge_states needs the metric class or its reductions, got {reductions!r}")
    states = [s for s in states if s is not None]
    if not states:
        return {}
    keys = list(dict.fromkeys(k for s in states for k in s))
    undeclared = [k for k in keys if k not in reductions]
    if undeclared:
        raise ValueError(f"merge_states: no reduction declared for state key(s) {undeclared}")
    out: dict = {}
    for key in keys:
        kind = reductions[key]
        present = [v for v in (s.get(key) for s in states) if v is not None]
        if kind == "rows":
            continue
        if not present:
            out[key] = None
        elif kind == "sum":
            acc = present[0].clone()
            for v in present[1:]:
                acc += v
            out[key] = acc
        elif kind == "union":
            merged: dict = {}
            for v in present:
                merged.update(v)
            out[key] = dict(sorted(merged.items()))
        elif kind == "first":
            out[key] = present[0]
        else:
            out[key] = merge_states(present, kind)
    holders = [s for s in states if "ids" in s]
    if holders:
        order = torch.argsort(torch.cat([s["ids"] for s in holders]), stable=True)
        for key in (k for k in keys if reductions[k] == "rows"):
            out[key] = torch.cat([s[key] for s in holders])[order]
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
