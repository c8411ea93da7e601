"""Per-image SVD of token matrices: energy ranks d_t and numerical rank, streamed in batches.

Only singular values are needed, so each image's spectrum comes from the eigenvalues of the
smaller Gram matrix (X X^T when N <= C, else X^T X) in float64, batched with ``eigvalsh``:
an (B, k, k) symmetric eigenproblem with k = min(N, C) instead of B full SVDs.

On the CPU this solve is the largest cost of ``analyze``. LAPACK's own multi-threading is slow
for such small problems, and on some spectra pathological (measured: 400 ms instead of 40 ms for
32 CaiT-sized matrices on two threads). So each matrix is solved on one thread and the batch is
spread over ``torch.get_num_threads()`` threads instead (LAPACK releases the GIL).

On CUDA, torch solves a batch of symmetric matrices larger than 32 x 32 one matrix at a time
(a loop over cuSOLVER's ``syevd``; only up to 32 x 32 does it use the batched Jacobi solver).
For 24 blocks of 196 x 196 Gram matrices that is thousands of small solver calls per batch, so
such batches are copied to the host and solved there on the thread pool. This choice follows
torch's dispatch rules; it has not been timed on a GPU yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from vitdistill.analysis.stats import RowStore, by_stat, describe, energy_ranks, tkey


def gram_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Squared singular values (B, min(N, C)) of each (N, C) matrix in ``x``, descending, float64."""
    x = x.to(torch.float64)
    g = x @ x.transpose(-1, -2) if x.shape[-2] <= x.shape[-1] else x.transpose(-1, -2) @ x
    return batched_eigvalsh(g).flip(-1).clamp_min(0.0)


_pool: tuple[int, ThreadPoolExecutor] | None = None  # (size, pool), made on first use
CUDA_BATCHED_MAX = 32  # the largest matrix that torch's CUDA eigvalsh solves as one batch


def _solve_one_thread(g: torch.Tensor) -> torch.Tensor:
    if torch.get_num_threads() != 1:  # once per solver thread: LAPACK single-threaded here
        torch.set_num_threads(1)
    return torch.linalg.eigvalsh(g)


def batched_eigvalsh(g: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a (B, k, k) batch: on CPU, one thread per matrix, the batch over threads.

    A CUDA batch of matrices larger than ``CUDA_BATCHED_MAX`` is solved on the host (see the
    module docstring) and the eigenvalues are returned on the batch's device.

    Each solver thread sets its own thread count to 1 (OpenMP's and MKL's settings are per
    thread); the caller's count, and the default that new threads start from, are restored
    after the solve.
    """
    global _pool
    if g.device.type == "cuda" and g.ndim == 3 and g.shape[0] > 1 and g.shape[-1] > CUDA_BATCHED_MAX:
        return batched_eigvalsh(g.cpu()).to(g.device)
    threads = torch.get_num_threads()
    if g.device.type != "cpu" or g.ndim != 3 or threads < 2:
        return torch.linalg.eigvalsh(g)
    workers = min(threads, g.shape[0])
    if _pool is None or _pool[0] < workers:
        _pool = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vitdistill-eig"))
    try:
        return torch.cat(list(_pool[1].map(_solve_one_thread, g.chunk(workers))))
    finally:
        torch.set_num_threads(threads)


def default_rank_rtol(n: int, c: int) -> float:
    """max(N, C) * eps(float32): features come out of the model in float32, so smaller
    singular values (relative to the largest) are below the data's own precision."""
    return max(n, c) * float(np.finfo(np.float32).eps)


class PerImageSVD:
    """Streaming per-image spectra of one layer: per-image d_t and rank, mean energy spectrum."""

    def __init__(self, thresholds: Sequence[float] = (0.8, 0.9, 0.95, 0.99), rank_rtol: float | None = None):
        self.thresholds = [float(t) for t in thresholds]
        self.rank_rtol = rank_rtol
        self.rows = RowStore(len(self.thresholds) + 1, torch.int64)
        self.sum_spectrum: torch.Tensor | None = None  # sum over images of normalised s^2
        self.shape: tuple[int, int] | None = None

    def update(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Add a batch (B, N, C); returns the (B, k) squared singular values for reuse."""
        ev = gram_eigenvalues(x)
        n, c = x.shape[-2:]
        self.shape = (int(n), int(c))
        rtol = self.rank_rtol if self.rank_rtol is not None else default_rank_rtol(n, c)
        d = energy_ranks(ev, self.thresholds)
        s = ev.sqrt()
        rank = (s > rtol * s[:, :1]).sum(-1, keepdim=True)
        self.rows.add(ids, torch.cat([d, rank], dim=-1))
        tot = ev.sum(-1, keepdim=True)
        norm = torch.where(tot > 0, ev / tot.clamp_min(1e-300), torch.zeros_like(ev)).sum(0).cpu()
        if self.sum_spectrum is None:
            self.sum_spectrum = torch.zeros_like(norm)
        self.sum_spectrum += norm
        return ev

    def state_dict(self) -> dict:
        ids, rows = self.rows.get()
        return {
            "ids": ids,
            "rows": rows,
            "sum_spectrum": self.sum_spectrum.clone() if self.sum_spectrum is not None else None,
            "shape": self.shape,
            "thresholds": self.thresholds,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.rows.set(sd["ids"], sd["rows"])
        self.sum_spectrum = sd["sum_spectrum"].clone() if sd["sum_spectrum"] is not None else None
        self.shape = sd["shape"]

    def per_image(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) with rows = [d_t for each threshold..., numerical rank]."""
        ids, rows = self.rows.get()
        return ids.numpy(), rows.numpy()

    def compute(self) -> dict:
        ids, rows = self.per_image()
        n, c = self.shape or (0, 0)
        out = by_stat({tkey(t): rows[:, i] for i, t in enumerate(self.thresholds)})
        out["numerical_rank"] = describe(rows[:, -1])
        out["rank_rtol"] = self.rank_rtol if self.rank_rtol is not None else default_rank_rtol(n, c)
        out["rank_rtol_kind"] = "relative to the largest singular value of each image"
        out["images"] = int(len(ids))
        out["zero_energy_images"] = int((rows[:, 0] == 0).sum()) if len(rows) else 0
        return out

    def mean_spectrum(self) -> np.ndarray:
        """Mean over images of the normalised energy spectrum s_i^2 / sum s^2 (for plots)."""
        n = len(self.rows)
        if self.sum_spectrum is None or n == 0:
            return np.zeros(0)
        return (self.sum_spectrum / n).numpy()
