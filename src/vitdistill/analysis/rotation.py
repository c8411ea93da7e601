"""Subspace rotation: do images share one low-rank subspace, or does each have its own?

For a bounded sample of images (chosen up front from a seeded permutation of the data set, so
every rank knows which of its images belong to it and a K-process run keeps the same sample),
keep V_i, the top-k_i right singular vectors (k_i = the image's own d_t), and the singular values.
Overlap(i, j) = ||V_i^T V_j||_F^2 / min(k_i, k_j): 1 for the same subspace, about max(k_i, k_j)/C
for random ones. Principal angles come from the singular values of V_i^T V_j. The shared-basis
capture of image i is the share of its top-k_i energy that the top-k_i dataset PCA directions hold.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np
import torch

from vitdistill.analysis.spectra import on_solver_pool, solver_threads
from vitdistill.analysis.stats import Mergeable, describe, energy_ranks

PAIRS_PER_CALL = 64  # principal-angle problems per batched product and solver call


def sample_indices(n_images: int, m: int, seed: int) -> list[int]:
    """The dataset indices whose subspaces are kept: the first m of a seeded permutation."""
    if m <= 0 or n_images <= 0:
        return []
    g = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n_images, generator=g)[:m].tolist())


def top_right_vectors(x: torch.Tensor, threshold: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(V (C, k_i), s^2 (k_i,)) for each (N, C) matrix of a batch x], k_i = its own energy rank.

    With N < C the eigenproblem is the smaller N x N Gram matrix X X^T = U S^2 U^T, and
    V = X^T U S^-1 for the kept directions (their singular values carry at least the threshold's
    share of the energy, so the division is well conditioned).
    """
    x = x.to(torch.float64)
    small = x.shape[-2] < x.shape[-1]
    g = x @ x.mT if small else x.mT @ x
    lam, vec = (
        torch.cat(t) for t in zip(*on_solver_pool(torch.linalg.eigh, g.chunk(solver_threads())), strict=True)
    )
    lam, vec = lam.flip(-1).clamp_min(0.0), vec.flip(-1)
    ks = energy_ranks(lam, [threshold])[:, 0].tolist()
    out = []
    for b, k in enumerate(ks):
        v = vec[b, :, :k]
        if small and k:
            v = (x[b].T @ v) / lam[b, :k].sqrt()
        out.append((v.contiguous(), lam[b, :k].contiguous()))
    return out


def pair_cosines(vs: list[torch.Tensor], pairs: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Cosines of the principal angles (descending) of each pair (a, b) of bases vs[a], vs[b].

    The bases (C, k_i) are padded with zero columns to the largest k: zero columns add zero
    singular values to V_a^T V_b and leave the others alone, so the top min(k_a, k_b) singular
    values of the padded product are the cosines. The products are batched (``PAIRS_PER_CALL``
    pairs per matrix product) and the singular values solved single-threaded per chunk on the
    solver pool, instead of one small call per pair.
    """
    if not pairs:
        return []
    kmax = max(v.shape[1] for v in vs)
    pad = torch.zeros(len(vs), vs[0].shape[0], kmax, dtype=torch.float64)
    for i, v in enumerate(vs):
        pad[i, :, : v.shape[1]] = v
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    prods = [
        pad[a[s : s + PAIRS_PER_CALL]].mT @ pad[b[s : s + PAIRS_PER_CALL]]
        for s in range(0, len(a), PAIRS_PER_CALL)
    ]
    per = max(1, -(-len(pairs) // max(solver_threads(), len(prods))))
    chunks = [c for m in prods for c in m.split(per)]
    sv = torch.cat(on_solver_pool(torch.linalg.svdvals, chunks)).clamp(-1.0, 1.0)
    ks = [min(vs[i].shape[1], vs[j].shape[1]) for i, j in pairs]
    return [sv[p, :k] for p, k in enumerate(ks)]


class SubspaceRotation(Mergeable):
    """Bounded per-image subspaces of one layer and the pairwise statistics computed from them."""

    reductions: ClassVar[dict[str, Any]] = {"samples": "union", "threshold": "first"}

    def __init__(self, sample: list[int], threshold: float = 0.9, max_pairs: int = 5000, seed: int = 0):
        self.sample = set(int(i) for i in sample)
        self.threshold = float(threshold)
        self.max_pairs = int(max_pairs)
        self.seed = int(seed)
        self.samples: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # (basis, sample count, result) of the last compute(); the basis is held, so `is` is safe
        self._computed: tuple[torch.Tensor | None, int, tuple[dict, dict]] | None = None

    def update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        pick = [b for b, i in enumerate(ids.tolist()) if i in self.sample]
        if not pick:
            return
        self._computed = None
        for b, (v, s2) in zip(pick, top_right_vectors(x[pick], self.threshold), strict=True):
            self.samples[int(ids[b])] = (v.to("cpu", torch.float32), s2.cpu())

    def state_dict(self) -> dict:
        return {"samples": dict(self.samples), "threshold": self.threshold}

    def load_state_dict(self, sd: dict) -> None:
        self.samples = dict(sd["samples"])
        self._computed = None

    def pairs(self) -> list[tuple[int, int]]:
        keys = sorted(self.samples)
        all_pairs = list(itertools.combinations(keys, 2))
        if len(all_pairs) <= self.max_pairs:
            return all_pairs
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(all_pairs), size=self.max_pairs, replace=False))
        return [all_pairs[p] for p in pick]

    def compute(self, pca_basis: torch.Tensor | None = None) -> tuple[dict, dict]:
        """Summary dict and raw arrays (overlaps, angles, captures) for plots (kept until an update)."""
        c = self._computed
        if c is None or c[0] is not pca_basis or c[1] != len(self.samples):
            c = self._computed = (pca_basis, len(self.samples), self._compute(pca_basis))
        return c[2]

    def _compute(self, pca_basis: torch.Tensor | None) -> tuple[dict, dict]:
        vs = {i: v.double() for i, (v, _) in self.samples.items()}
        nonempty = {i: v for i, v in vs.items() if v.shape[1] > 0}
        c = next(iter(vs.values())).shape[0] if vs else 0
        keys = sorted(nonempty)
        slot = {i: n for n, i in enumerate(keys)}
        pairs = [(slot[i], slot[j]) for i, j in self.pairs() if i in nonempty and j in nonempty]
        cos = pair_cosines([nonempty[i] for i in keys], pairs)
        # overlap = ||V_i^T V_j||_F^2 / min(k) = sum of squared cosines / min(k)
        ov = [float(cz.pow(2).sum() / len(cz)) for cz in cos]
        base = [max(nonempty[keys[i]].shape[1], nonempty[keys[j]].shape[1]) / c for i, j in pairs]
        ang = [torch.arccos(cz).flip(0).numpy() for cz in cos]
        mean_ang = [float(a.mean()) for a in ang]
        ks = np.array([v.shape[1] for v in vs.values()], dtype=np.float64)
        cap = []
        if pca_basis is not None:
            basis = pca_basis.double().cpu()
            for _i, (v, s2) in sorted(self.samples.items()):
                k = v.shape[1]
                if k == 0:
                    continue
                proj = (basis[:, :k].T @ v.double()).pow(2).sum(0)  # per image direction, in [0, 1]
                cap.append(float((proj * s2).sum() / s2.sum()))
        all_angles = np.degrees(np.concatenate(ang)) if ang else np.zeros(0)
        ov_arr, cap_arr = np.array(ov), np.array(cap)
        summary = {
            "threshold": self.threshold,
            "images": len(vs),
            "pairs": len(ov),
            "channels": c,
            "k": describe(ks),
            "overlap": describe(ov_arr),
            "random_baseline": float(np.mean(base)) if base else float("nan"),
            "principal_angle_deg": {
                "mean": float(all_angles.mean()) if all_angles.size else float("nan"),
                "median": float(np.median(all_angles)) if all_angles.size else float("nan"),
                "pair_mean": describe(np.degrees(np.array(mean_ang))),
            },
            "shared_capture": describe(cap_arr),
            "sample": sorted(vs),
        }
        raw = {
            "overlap": ov_arr,
            "random_baseline": np.array(base),
            "angles_deg": all_angles,
            "capture": cap_arr,
        }
        if not math.isfinite(summary["random_baseline"]):
            summary["random_baseline"] = None
        return summary, raw
