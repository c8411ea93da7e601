"""float32 per-image spectra with a float64 re-check: the integers equal an all-float64 computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from vitdistill.analysis import PerImageSVD
from vitdistill.analysis.rotation import pair_cosines
from vitdistill.analysis.spectra import EPS32, default_rank_rtol, needs_float64

TS = (0.8, 0.9, 0.95, 0.99)


def np_ranks(x: np.ndarray, rtol: float) -> list[int]:
    """float64 reference: d_t for TS and the numerical rank, from numpy's SVD."""
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    e = np.cumsum(s**2) / np.sum(s**2)
    return [int(np.argmax(e >= t - 1e-12) + 1) for t in TS] + [int((s > rtol * s[0]).sum())]


def with_spectrum(s: np.ndarray, n: int, c: int, seed: int) -> np.ndarray:
    """An (n, c) float32 matrix whose singular values are s (random orthonormal factors)."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(n, len(s))))[0]
    v = np.linalg.qr(rng.normal(size=(c, len(s))))[0]
    return ((u * s) @ v.T).astype(np.float32)


def run(x: np.ndarray, precision: str) -> tuple[np.ndarray, int]:
    m = PerImageSVD(TS, precision=precision)
    m.update(torch.from_numpy(x), torch.arange(len(x)))
    return m.per_image()[1], m.compute()["float64_rechecked_images"]


@pytest.mark.parametrize("n,c", [(49, 96), (96, 40)])  # both Gram branches
def test_flat_random_init_spectra_match_float64_reference(n, c):
    # random-init ViT tokens: a nearly flat spectrum plus a strong shared mean direction
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, n, c, generator=g) + 4.0 * torch.randn(1, 1, c, generator=g)
    x[12:] *= torch.logspace(0, -3, c)  # and some decaying ones
    rows, _ = run(x.numpy(), "mixed")
    rtol = default_rank_rtol(n, c)
    want = np.array([np_ranks(xi, rtol) for xi in x.numpy()])
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(run(x.numpy(), "float64")[0], want)


def test_spectra_far_from_every_boundary_stay_float32():
    s = np.linspace(1.0, 0.7, 20)  # full rank, s_min / s_1 = 0.7
    frac = np.cumsum(s**2) / np.sum(s**2)
    assert min(np.abs(frac - t).min() for t in TS) > 1e-3  # nothing near a threshold
    x = np.stack([with_spectrum(s, 20, 32, seed) for seed in range(4)])
    rows, rechecked = run(x, "mixed")
    assert rechecked == 0  # all answered by float32
    np.testing.assert_array_equal(rows, [np_ranks(xi, default_rank_rtol(20, 32)) for xi in x])


@pytest.mark.parametrize("offset", [-3e-7, -2e-8, 2e-8, 3e-7])
def test_near_ties_with_an_energy_threshold_are_solved_in_float64(offset):
    # full rank, energies chosen so that the cumulative fraction at k = 6 is 0.9 + offset:
    # float32 cannot tell the side (its error is ~1e-7), the float64 re-check must
    e = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05 + offset] + [0.01] * 9 + [0.01 - offset])
    x = np.stack([with_spectrum(np.sqrt(e), 16, 24, seed) for seed in range(3)])
    rows, rechecked = run(x, "mixed")
    assert rechecked == 3
    want = [np_ranks(xi, default_rank_rtol(16, 24)) for xi in x]
    np.testing.assert_array_equal(rows, want)
    assert all(r[1] == (6 if offset >= 0 else 7) for r in want)  # the reference sees the tie's side


@pytest.mark.parametrize("factor", [0.999, 1.001])
def test_a_singular_value_at_the_rank_tolerance(factor):
    n, c = 16, 24
    rtol = default_rank_rtol(n, c)
    s = np.array([1.0, 0.9, 0.8, 0.5, 0.3] + [0.2] * 10 + [rtol * factor])
    # the certificate itself, on an exact float64 Gram matrix: full rank is proven only above rtol
    g = torch.diag(torch.from_numpy(s**2))[None]
    redo, full = needs_float64(torch.from_numpy(s**2)[None], g, TS, rtol)
    assert bool(redo[0]) == (factor < 1) and bool(full[0]) == (factor > 1)
    # end to end: the float32 matrix's rank is that of a float64 SVD of the same matrix
    x = with_spectrum(s, n, c, 7)[None]
    rows, _ = run(x, "mixed")
    assert rows[0, -1] == np_ranks(x[0], rtol)[-1]


def test_float32_error_is_far_inside_the_band():
    # the band of a cumulative fraction is k * eps32 * lambda_1 / total; the error of float32
    # eigenvalues of a float64 Gram matrix, on ill-conditioned tokens, is well inside it
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(32, 64, 128, generator=g) + 5.0 * torch.randn(1, 1, 128, generator=g)).double()
    gm = x @ x.mT
    f32 = torch.linalg.eigvalsh(gm.float()).flip(-1).double()
    f64 = torch.linalg.eigvalsh(gm).flip(-1)
    err = (f32.cumsum(-1) / f32.sum(-1, keepdim=True) - f64.cumsum(-1) / f64.sum(-1, keepdim=True)).abs()
    band = 64 * EPS32 * f64[:, 0] / f64.sum(-1)
    assert bool((err.amax(-1) * 10 < band).all()), (err.amax(-1) / band).max()


def test_batched_principal_angles_match_scipy():
    rng = np.random.default_rng(0)
    vs = [np.linalg.qr(rng.normal(size=(30, k)))[0] for k in (3, 7, 1, 12, 7)]
    pairs = [(i, j) for i in range(len(vs)) for j in range(i + 1, len(vs))]
    cos = pair_cosines([torch.from_numpy(v) for v in vs], pairs)
    for (i, j), cz in zip(pairs, cos, strict=True):
        want = np.sort(scipy.linalg.subspace_angles(vs[i], vs[j]))
        assert len(cz) == min(vs[i].shape[1], vs[j].shape[1])
        np.testing.assert_allclose(np.arccos(cz.numpy()), want, atol=1e-6)
