"""Per-image SVD of token matrices: energy ranks d_t and numerical rank, streamed in batches.

Only singular values are needed, so each image's spectrum comes from the eigenvalues of the
smaller Gram matrix (X X^T when N <= C, else X^T X), batched with ``eigvalsh``: an (B, k, k)
symmetric eigenproblem with k = min(N, C) instead of B full SVDs.

**Precision.** The Gram matrices are formed in float64 (exact for float32 features) and, by
default, solved in float64. With ``precision='mixed'`` their eigenvalues are computed in float32
instead (with this machine's MKL only 1.4x faster than float64 for 196 x 196 matrices, which the
Cholesky certificate below eats up; hence not the default). The outputs are integers (d_t, numerical rank), and float32
eigenvalues can only change them where a cumulative energy fraction lies within float32 error of
a threshold, or where the rank is not full. :func:`needs_float64` names those images (the band is
about 40 times the largest float32 error measured; a float64 Cholesky factor proves full rank)
and they are solved again in float64, so the integers are those of an all-float64 computation.

**CPU solves.** LAPACK's own multi-threading is slow for such small problems, and collapses when
another process holds a core (measured: a batch of 32 solves went from 0.09 s to 9.7 s). Every
small dense solve of the analysis (these, the rotation sample's ``eigh``, the PCA ``eigh`` and
the principal angles) therefore runs single-threaded per matrix on a pool of
``torch.get_num_threads()`` threads (at most the cores this process may use): :func:`on_solver_pool`.

On CUDA, torch solves a batch of symmetric matrices larger than 32 x 32 one matrix at a time
(a loop over cuSOLVER's ``syevd``; only up to 32 x 32 does it use the batched Jacobi solver).
For 24 blocks of 196 x 196 Gram matrices that is thousands of small solver calls per batch, so
such batches are copied to the host and solved there on the thread pool. This choice follows
torch's dispatch rules; it has not been timed on a GPU yet.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, ClassVar

import numpy as np
import torch

from vitdistill.analysis.options import PRECISIONS
from vitdistill.analysis.stats import Mergeable, RowStore, by_stat, describe, energy_ranks, tkey

EPS32 = float(np.finfo(np.float32).eps)
CUDA_BATCHED_MAX = 32  # the largest matrix that torch's CUDA eigvalsh solves as one batch

_pool: tuple[int, ThreadPoolExecutor] | None = None  # (size, pool), made on first use
_pool_lock = threading.Lock()  # two caller threads must not replace the pool under each other
_in_solver = threading.local()  # .active is set on the pool's threads


def solver_threads() -> int:
    """Threads for the small solves: torch's thread count, at most the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores))


def _one_thread(fn: Callable, item, modes: tuple[bool, bool]):
    if torch.get_num_threads() != 1:  # once per solver thread: LAPACK single-threaded here
        torch.set_num_threads(1)
    _in_solver.active = True
    inference, grad = modes  # the caller's modes: torch keeps them per thread
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        return fn(item)


def _solver_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] < workers:
            old = _pool
            _pool = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vitdistill-solve"))
            if old is not None:
                old[1].shutdown(wait=False)  # its threads end once their work is done
        return _pool[1]


def on_solver_pool(fn: Callable, items: Sequence) -> list:
    """``[fn(item) for item in items]``, each call single-threaded, spread over :func:`solver_threads`.

    Each solver thread sets its own thread count to 1 (OpenMP's and MKL's settings are per
    thread); the caller's count, and the default that new threads start from, are restored
    afterwards. LAPACK releases the GIL, so the calls run in parallel. Called from a solver
    thread (a job that itself solves), it runs the calls in that thread, one after the other.
    If a call raises, the others are waited for before the error is raised.
    """
    if getattr(_in_solver, "active", False):
        return [fn(item) for item in items]
    threads = torch.get_num_threads()
    workers = min(solver_threads(), len(items))
    if workers < 2:
        if threads == 1:
            return [fn(item) for item in items]
        torch.set_num_threads(1)
        try:
            return [fn(item) for item in items]
        finally:
            torch.set_num_threads(threads)
    modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())
    try:
        pool = _solver_pool(workers)
        futures = [pool.submit(_one_thread, fn, item, modes) for item in items]
        wait(futures)
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def batched_eigvalsh(g: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.eigvalsh`` of a (B, k, k) batch, on the solver pool (see the module docstring).

    A CUDA batch of matrices larger than ``CUDA_BATCHED_MAX`` is solved on the host and the
    eigenvalues are returned on the batch's device.
    """
    if g.device.type == "cuda" and g.ndim == 3 and g.shape[0] > 1 and g.shape[-1] > CUDA_BATCHED_MAX:
        return batched_eigvalsh(g.cpu()).to(g.device)
    if g.device.type != "cpu" or g.ndim != 3:
        return torch.linalg.eigvalsh(g)
    parts = g.chunk(min(solver_threads(), g.shape[0]))
    return torch.cat(on_solver_pool(torch.linalg.eigvalsh, parts))


def gram(x: torch.Tensor) -> torch.Tensor:
    """The smaller Gram matrix of each (N, C) matrix: X X^T if N <= C, else X^T X."""
    return x @ x.mT if x.shape[-2] <= x.shape[-1] else x.mT @ x


def _eigvalsh_desc(g: torch.Tensor) -> torch.Tensor:
    return batched_eigvalsh(g).to(torch.float64).flip(-1).clamp_min(0.0)


def gram_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Squared singular values (B, min(N, C)) of each (N, C) matrix in ``x``, descending, float64."""
    return _eigvalsh_desc(gram(x.to(torch.float64)))


def _cholesky_ok(g: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky_ex(g).info == 0


def needs_float64(
    ev: torch.Tensor, g: torch.Tensor, thresholds: Sequence[float], rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (redo, full_rank) (B,) for float32 eigenvalues ``ev`` (B, k, descending) of the
    float64 Gram matrices ``g``: which images float32 cannot settle, and which are of full rank.

    A float32 eigenvalue is off by a few float32 units of the largest, so no partial sum is off by
    more than ``k * eps32 * lambda_1`` (measured on CaiT-S24, random init, 1536 image-layers: at
    most 2.6 % of that). d_t is settled when no cumulative fraction lies within that band of a
    threshold. The numerical rank is settled when it is full, which a float64 Cholesky factor of
    G - rtol^2 * lambda_1 * I proves (lambda_1 taken at its upper bound); the float32 eigenvalues
    below that are too noisy to count. Anything else, and an all-zero image, is re-solved in float64.
    """
    k = ev.shape[-1]
    tot = ev.sum(-1, keepdim=True)
    err = k * EPS32 * ev[:, :1]
    band = err / tot.clamp_min(1e-300)
    frac = ev.cumsum(-1) / tot.clamp_min(1e-300)
    redo = tot[:, 0] <= 0
    for t in thresholds:
        redo |= ((frac - t).abs() <= band).any(-1)
    tau = (rtol * rtol) * (ev[:, 0] + err[:, 0])
    shifted = g - tau[:, None, None].to(g.device) * torch.eye(k, dtype=g.dtype, device=g.device)
    if shifted.device.type == "cpu":
        full = torch.cat(on_solver_pool(_cholesky_ok, shifted.chunk(min(solver_threads(), len(g)))))
    else:
        full = _cholesky_ok(shifted)
    full = full.to(redo.device) & ~redo
    return redo | ~full, full


def spectra(
    x: torch.Tensor,
    thresholds: Sequence[float],
    rtol: float,
    precision: str,
    x64: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Squared singular values (B, k) float64 descending, numerical ranks (B,), and the number of
    images solved in float64 after float32.

    ``precision='mixed'``: the float64 Gram matrices are solved in float32, and the images that
    :func:`needs_float64` names are solved again in float64 (module docstring). ``x64`` is ``x``
    in float64 when the caller has it already.
    """
    g = gram(x64 if x64 is not None else x.to(torch.float64))
    if precision == "float64" or x.dtype == torch.float64:
        ev = _eigvalsh_desc(g)
        return ev, _rank(ev, rtol), 0
    ev = _eigvalsh_desc(g.to(torch.float32))
    redo, full = needs_float64(ev, g, thresholds, rtol)
    rank = torch.full((len(ev),), ev.shape[-1], dtype=torch.int64, device=ev.device)
    redo = redo.nonzero()[:, 0]
    if len(redo):
        ev[redo] = _eigvalsh_desc(g[redo.to(g.device)]).to(ev.device)
        rank[redo] = _rank(ev[redo], rtol)
    return ev, rank, len(redo)


def _rank(ev: torch.Tensor, rtol: float) -> torch.Tensor:
    s = ev.sqrt()
    return (s > rtol * s[:, :1]).sum(-1)


def default_rank_rtol(n: int, c: int) -> float:
    """max(N, C) * eps(float32): features come out of the model in float32, so smaller
    singular values (relative to the largest) are below the data's own precision."""
    return max(n, c) * float(np.finfo(np.float32).eps)


class PerImageSVD(Mergeable):
    """Streaming per-image spectra of one layer: per-image d_t and rank, mean energy spectrum."""

    reductions: ClassVar[dict[str, Any]] = {
        "ids": "rows",
        "rows": "rows",
        "sum_spectrum": "sum",
        "shape": "first",
        "thresholds": "first",
        "sum_rechecked": "sum",
    }

    def __init__(
        self,
        thresholds: Sequence[float] = (0.8, 0.9, 0.95, 0.99),
        rank_rtol: float | None = None,
        precision: str = "float64",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} (got {precision!r})")
        self.thresholds = [float(t) for t in thresholds]
        self.rank_rtol = rank_rtol
        self.precision = precision
        self.sum_rechecked = torch.zeros((), dtype=torch.int64)  # images re-solved in float64
        self.rows = RowStore(len(self.thresholds) + 1, torch.int64)
        self.sum_spectrum: torch.Tensor | None = None  # sum over images of normalised s^2
        self.shape: tuple[int, int] | None = None

    def update(self, x: torch.Tensor, ids: torch.Tensor, x64: torch.Tensor | None = None) -> torch.Tensor:
        """Add a batch (B, N, C) (``x64``: the same in float64, if the caller has it); returns the
        (B, k) squared singular values for reuse."""
        n, c = x.shape[-2:]
        self.shape = (int(n), int(c))
        rtol = self.rank_rtol if self.rank_rtol is not None else default_rank_rtol(n, c)
        ev, rank, rechecked = spectra(x, self.thresholds, rtol, self.precision, x64)
        self.sum_rechecked += rechecked
        d = energy_ranks(ev, self.thresholds)
        rank = rank[:, None].to(d.device)
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
            "sum_rechecked": self.sum_rechecked.clone(),
        }

    def load_state_dict(self, sd: dict) -> None:
        self.rows.set(sd["ids"], sd["rows"])
        self.sum_spectrum = sd["sum_spectrum"].clone() if sd["sum_spectrum"] is not None else None
        self.shape = sd["shape"]
        self.sum_rechecked = sd.get("sum_rechecked", torch.zeros((), dtype=torch.int64)).clone()

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
        out["precision"] = self.precision
        out["float64_rechecked_images"] = int(self.sum_rechecked)
        return out

    def mean_spectrum(self) -> np.ndarray:
        """Mean over images of the normalised energy spectrum s_i^2 / sum s^2 (for plots)."""
        n = len(self.rows)
        if self.sum_spectrum is None or n == 0:
            return np.zeros(0)
        return (self.sum_spectrum / n).numpy()
