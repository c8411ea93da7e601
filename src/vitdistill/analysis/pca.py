"""Dataset-level PCA: a streamed float64 second moment and per-image captured-energy curves.

S = (1/T) sum_images X^T X over all T tokens (uncentered unless the features were centred
before). Its eigenvectors V form the shared basis. The per-image curve
curve_i(d) = ||X_i V_d||_F^2 / ||X_i||_F^2 needs V, which exists only after every image has been
seen, so the curves are a second, cheap pass over the same features (see ``runner``), computed
by :class:`CapturedEnergy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from vitdistill.analysis.spectra import on_solver_pool
from vitdistill.analysis.stats import Mergeable, RowStore, by_stat, energy_ranks, tkey


def add_xtx_(acc: torch.Tensor, x: torch.Tensor) -> None:
    """``acc += x^T x`` for x (T, C), both float64, with a quarter fewer products than one matrix
    product: the lower block rows [x_2^T x_1, x_2^T x_2] and the block x_1^T x_1 are formed, and
    the upper right block is copied from the lower left."""
    h = x.shape[1] // 2
    acc[h:].addmm_(x[:, h:].T, x)
    acc[:h, :h].addmm_(x[:, :h].T, x[:, :h])
    acc[:h, h:] = acc[h:, :h].T


class SecondMoment(Mergeable):
    """Streaming sum of X^T X (float64) and token count for one layer."""

    reductions: ClassVar[dict[str, Any]] = {"sum_xtx": "sum", "sum_tokens": "sum", "thresholds": "first"}

    def __init__(self, thresholds: Sequence[float] = (0.8, 0.9, 0.95, 0.99)):
        self.thresholds = [float(t) for t in thresholds]
        self.sum_xtx: torch.Tensor | None = None
        self.sum_tokens = torch.zeros((), dtype=torch.int64)
        self._eig: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a batch of token features (..., C); float64 input is used as it is (no copy)."""
        flat = x.reshape(-1, x.shape[-1]).to(torch.float64)
        if self.sum_xtx is None:
            self.sum_xtx = flat.new_zeros(flat.shape[1], flat.shape[1])
        add_xtx_(self.sum_xtx, flat)
        self.sum_tokens += flat.shape[0]
        self._eig = None

    def state_dict(self) -> dict:
        return {
            "sum_xtx": self.sum_xtx.cpu() if self.sum_xtx is not None else None,
            "sum_tokens": self.sum_tokens.clone(),
            "thresholds": self.thresholds,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.sum_xtx = sd["sum_xtx"]
        self.sum_tokens = sd["sum_tokens"].clone()
        self._eig = None

    def to(self, device) -> SecondMoment:
        if self.sum_xtx is not None:
            self.sum_xtx = self.sum_xtx.to(device)
        return self

    def eig(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (descending, clamped at 0) and eigenvectors (columns) of S = sum / T."""
        if self._eig is None:
            s = self.sum_xtx.double() / max(int(self.sum_tokens), 1)
            s = 0.5 * (s + s.T)
            lam, vec = torch.linalg.eigh(s)
            self._eig = (lam.flip(0).clamp_min(0.0), vec.flip(1))
        return self._eig

    def compute(self) -> dict:
        lam, _ = self.eig()
        d = energy_ranks(lam[None], self.thresholds)[0]
        return {
            "global": {tkey(t): int(d[i]) for i, t in enumerate(self.thresholds)},
            "tokens": int(self.sum_tokens),
            "eigenvalue_max": float(lam[0]),
            "trace": float(lam.sum()),
        }


def solve_all(moments: Sequence[SecondMoment]) -> None:
    """Eigen-solve every layer's second moment now, single-threaded per matrix on the solver pool
    (instead of one multi-threaded LAPACK call per layer when the summary asks for it)."""
    todo = [m for m in moments if m._eig is None and m.sum_xtx is not None]
    on_solver_pool(SecondMoment.eig, todo)


class CapturedEnergy(Mergeable):
    """Per-image energy captured by the leading d shared-basis directions, and its d_t."""

    reductions: ClassVar[dict[str, Any]] = {
        "ids": "rows",
        "rows": "rows",
        "sum_curve": "sum",
        "sum_sq_curve": "sum",
    }

    def __init__(self, basis: torch.Tensor, thresholds: Sequence[float] = (0.8, 0.9, 0.95, 0.99)):
        self.basis = basis.to(torch.float64)
        self.thresholds = [float(t) for t in thresholds]
        self.rows = RowStore(len(self.thresholds), torch.int64)
        self.sum_curve = torch.zeros(basis.shape[1], dtype=torch.float64)
        self.sum_sq_curve = torch.zeros(basis.shape[1], dtype=torch.float64)

    def update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        x = x.to(self.basis.device, torch.float64)
        energy = (x @ self.basis).pow(2).sum(-2)  # (B, C): energy along each shared direction
        self.rows.add(ids, energy_ranks(energy, self.thresholds))
        tot = x.pow(2).sum((-2, -1))[:, None]
        curve = torch.where(tot > 0, energy.cumsum(-1) / tot.clamp_min(1e-300), torch.zeros_like(energy))
        self.sum_curve += curve.sum(0).cpu()
        self.sum_sq_curve += curve.pow(2).sum(0).cpu()

    def state_dict(self) -> dict:
        ids, rows = self.rows.get()
        return {"ids": ids, "rows": rows, "sum_curve": self.sum_curve, "sum_sq_curve": self.sum_sq_curve}

    def load_state_dict(self, sd: dict) -> None:
        self.rows.set(sd["ids"], sd["rows"])
        self.sum_curve, self.sum_sq_curve = sd["sum_curve"].clone(), sd["sum_sq_curve"].clone()

    def per_image(self) -> tuple[np.ndarray, np.ndarray]:
        ids, rows = self.rows.get()
        return ids.numpy(), rows.numpy()

    def compute(self) -> dict:
        _, rows = self.per_image()
        return by_stat({tkey(t): rows[:, i] for i, t in enumerate(self.thresholds)})

    def mean_curve(self) -> tuple[np.ndarray, np.ndarray]:
        n = max(len(self.rows), 1)
        mean = self.sum_curve / n
        std = (self.sum_sq_curve / n - mean.pow(2)).clamp_min(0).sqrt()
        return mean.numpy(), std.numpy()
