"""Every streaming statistic against an independent numpy/scipy computation on the same features."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.linalg
import torch

from vitdistill.analysis import SEP, CapturedEnergy, PerImageSVD, SecondMoment, SubspaceRotation, merge_states
from vitdistill.analysis.pca import add_xtx_
from vitdistill.analysis.rotation import sample_indices
from vitdistill.analysis.stats import bootstrap_ci, describe

TS = (0.8, 0.9, 0.95, 0.99)


def np_ranks(x: np.ndarray, ts=TS) -> tuple[list[int], int]:
    s = np.linalg.svd(x, compute_uv=False)
    e = np.cumsum(s**2) / np.sum(s**2)
    d = [int(np.argmax(e >= t - 1e-12) + 1) for t in ts]
    tol = max(x.shape) * np.finfo(np.float32).eps * s[0]
    return d, int((s > tol).sum())


def features(b=6, n=12, c=20, seed=0, decay=True) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g)
    if decay:  # a decaying channel scale gives spread-out ranks, like real features
        x = x * torch.logspace(0, -2, c)[None, None] + 0.3 * torch.randn(b, 1, c, generator=g)
    return x


@pytest.mark.parametrize("n,c", [(12, 20), (30, 8)])  # both Gram branches: N <= C and N > C
def test_svd_ranks_match_numpy(n, c):
    x = features(7, n, c)
    m = PerImageSVD(TS)
    m.update(x, torch.arange(7))
    ids, rows = m.per_image()
    for i in range(7):
        d, r = np_ranks(x[i].double().numpy())
        assert rows[i, :4].tolist() == d
        assert rows[i, 4] == r
    res = m.compute()
    ref = np.array([np_ranks(x[i].double().numpy())[0] for i in range(7)])
    for k, t in enumerate(["80", "90", "95", "99"]):
        assert res["p99"][t] == pytest.approx(np.percentile(ref[:, k], 99, method="linear"))
        assert res["mean"][t] == pytest.approx(ref[:, k].mean())
        assert res["median"][t] == pytest.approx(np.median(ref[:, k]))
        assert res["std"][t] == pytest.approx(ref[:, k].std())


def test_known_spectrum_gives_known_ranks():
    # energies 0.5, 0.25, 0.15, 0.06, 0.03, 0.01 -> cumulative .5 .75 .9 .96 .99 1.0
    energy = np.array([0.5, 0.25, 0.15, 0.06, 0.03, 0.01])
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.normal(size=(10, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(16, 6)))
    x = u @ np.diag(np.sqrt(energy)) @ v.T
    m = PerImageSVD((0.7, 0.8, 0.95, 0.985), rank_rtol=1e-6)
    m.update(torch.tensor(x)[None], torch.tensor([0]))
    _, rows = m.per_image()
    assert rows[0].tolist() == [2, 3, 4, 5, 6]


def test_svd_ranks_invariant_to_channel_rotation():
    x = features(5, 16, 24)
    q, _ = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))
    a, b = PerImageSVD(TS), PerImageSVD(TS)
    a.update(x, torch.arange(5))
    b.update((x.double() @ q), torch.arange(5))
    assert (a.per_image()[1] == b.per_image()[1]).all()


def test_zero_image_gives_zero_ranks_not_nan():
    x = features(3, 8, 10)
    x[1] = 0
    m = PerImageSVD(TS)
    m.update(x, torch.arange(3))
    _, rows = m.per_image()
    assert rows[1].tolist() == [0, 0, 0, 0, 0]
    assert m.compute()["zero_energy_images"] == 1


@pytest.mark.parametrize("c", [10, 64, 97])
def test_second_moment_product_matches_numpy(c):
    # the block-split product (lower block rows, the upper right block copied) against numpy's full product
    rng = np.random.default_rng(c)
    acc = torch.zeros(c, c, dtype=torch.float64)
    want = np.zeros((c, c))
    for t in (50, 7):
        x = rng.standard_normal((t, c)) * rng.uniform(0.1, 10, c)
        add_xtx_(acc, torch.from_numpy(x))
        want += x.T @ x
    np.testing.assert_allclose(acc.numpy(), want, rtol=1e-12, atol=1e-12)


def test_pca_global_and_per_image_curves_match_numpy():
    x = features(6, 10, 12, decay=True)
    sm = SecondMoment(TS)
    sm.update(x[:4])
    sm.update(x[4:])
    flat = x.double().reshape(-1, 12).numpy()
    s = flat.T @ flat / flat.shape[0]
    lam, vec = np.linalg.eigh(s)
    lam, vec = lam[::-1], vec[:, ::-1]
    got_lam, got_vec = sm.eig()
    np.testing.assert_allclose(got_lam.numpy(), lam, rtol=1e-10, atol=1e-12)
    e = np.cumsum(lam) / lam.sum()
    assert sm.compute()["global"] == {
        k: int(np.argmax(e >= t) + 1) for k, t in zip(["80", "90", "95", "99"], TS, strict=True)
    }
    ce = CapturedEnergy(got_vec, TS)
    ce.update(x[:2], torch.tensor([0, 1]))
    ce.update(x[2:], torch.arange(2, 6))
    _, rows = ce.per_image()
    for i in range(6):
        xi = x[i].double().numpy()
        curve = np.cumsum(((xi @ vec) ** 2).sum(0)) / (xi**2).sum()
        assert rows[i].tolist() == [int(np.argmax(curve >= t) + 1) for t in TS]
    mean, _ = ce.mean_curve()
    assert mean[-1] == pytest.approx(1.0)


def np_sep(x: np.ndarray, mode: str) -> np.ndarray:
    """Token curves (T, D') in percent, written independently with numpy."""
    d = x.shape[-1]
    if mode == "full":
        p = np.abs(np.fft.fft(x, axis=-1)) ** 2
    else:
        p = np.abs(np.fft.rfft(x, axis=-1)) ** 2
        if d % 2 == 0:
            p[:, 1 : d // 2] *= 2
        else:
            p[:, 1:] *= 2
    return 100 * np.cumsum(p, -1) / p.sum(-1, keepdims=True)


@pytest.mark.parametrize("d", [16, 15, 3, 2])
def test_sep_matches_numpy_fft(d):
    x = features(4, 9, d)
    x[2, 3] = 0  # a zero-energy token: skipped and counted
    m = SEP(permutations=0)
    m.update(x[:1], torch.tensor([0]))
    m.update(x[1:], torch.tensor([1, 2, 3]))
    flat = x.double().reshape(-1, d).numpy()
    keep = (flat**2).sum(-1) > 0
    res = m.compute("full")
    assert res["zero_energy_tokens"] == 1 and res["tokens"] == 35
    for mode in ("full", "folded"):
        ref = np_sep(flat[keep], mode)
        mean, std = m.mean_std(mode)
        np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-5, atol=1e-5)  # float32 FFT
        np.testing.assert_allclose(std, ref.std(0), rtol=1e-4, atol=1e-3)  # std from float32 curves
        assert not np.isnan(mean).any()
        want = {str(a): int(np.argmax(ref.mean(0) >= a) + 1) for a in (50, 60, 70, 80, 90)}
        assert res[mode]["d"] == want
        nb = d if mode == "full" else d // 2 + 1
        assert res[mode]["d_over_D"]["70"] == pytest.approx(want["70"] / nb)
        # per-image thresholds: each image's mean curve, averaged over images
        per = []
        for i in range(4):
            xi = x[i].double().numpy()
            xi = xi[(xi**2).sum(-1) > 0]
            c = np_sep(xi, mode).mean(0)
            per.append(int(np.argmax(c >= 80) + 1) / nb)
        assert res[mode]["per_image_mean_d_over_D"]["80"] == pytest.approx(np.mean(per))


def test_sep_counts_a_subnormal_energy_token_as_empty_not_infinite():
    x = features(2, 6, 16)
    x[1, 2] = 0
    x[1, 2, 5] = 1e-22  # energy 1e-44: a float32 subnormal, whose inverse overflows
    m = SEP(permutations=3)
    m.update(x, torch.arange(2))
    res = m.compute("full", n_boot=10)
    assert res["zero_energy_tokens"] == 1 and res["tokens"] == 11
    for mode in ("full", "folded"):
        mean, std = m.mean_std(mode)
        assert np.isfinite(mean).all() and np.isfinite(std).all() and mean[-1] == pytest.approx(100)
    assert np.isfinite(res["permutation"]["curve_l1"]["mean"])


def test_folded_total_equals_full_total():
    x = torch.randn(5, 12, dtype=torch.float64)
    from vitdistill.analysis.sep import power_spectrum

    for d in (12, 11):
        y = torch.randn(5, d, dtype=torch.float64)
        np.testing.assert_allclose(power_spectrum(y, "folded").sum(-1), power_spectrum(y, "full").sum(-1))
    assert power_spectrum(x, "folded").shape[-1] == 7


def test_sep_full_order_is_symmetric_so_d50_is_half_when_dc_dominates():
    # tokens with a positive mean (DC > Nyquist): full-order d50 is exactly D/2
    x = torch.rand(3, 20, 32) + 0.5
    m = SEP(permutations=0)
    m.update(x, torch.arange(3))
    assert m.compute("full")["d"]["50"] <= 16
    assert m.compute("full")["d"]["50"] >= 1


def test_sep_changes_under_channel_permutation_and_test_reports_it():
    # smooth tokens: energy in low frequencies; a channel shuffle whitens the spectrum
    t = torch.linspace(0, 1, 64)
    x = torch.stack(
        [torch.stack([torch.sin(2 * np.pi * (1 + k % 3) * t + k) for k in range(10)]) for _ in range(4)]
    )
    x = x + 0.01 * torch.randn_like(x)
    m = SEP(permutations=6, perm_mode="folded", seed=3)
    m.update(x, torch.arange(4))
    res = m.compute("folded", n_boot=200, boot_seed=0)
    assert res["d"]["90"] < 6  # folded: low frequencies hold the energy
    assert res["full"]["d"]["90"] > 60  # full order: the mirrored bins at the top end hold it too
    p = res["permutation"]
    assert p["trials"] == 6 and p["curve_l1"]["mean"] > 10
    b = p["bandwidth"]["90"]
    assert b["permuted"] > b["original"] + 0.3
    lo, hi = b["shift_ci95"]
    assert lo <= b["shift"] <= hi and lo > 0
    # the permuted pooled curve equals a numpy recomputation with the same permutations
    perm0 = m.perms[0].numpy()
    flat = x.double().reshape(-1, 64).numpy()[:, perm0]
    np.testing.assert_allclose(
        (m.sums["sum_perm"][0] / m.tokens).numpy(), np_sep(flat, "folded").mean(0), rtol=1e-5
    )


@pytest.mark.parametrize("n", [12, 20])  # N < C: from the N x N Gram matrix; N >= C: from X^T X
def test_rotation_matches_scipy_subspace_angles(n):
    x = features(5, n, 16)
    rot = SubspaceRotation(sample=[0, 2, 3, 4], threshold=0.9)
    rot.update(x[:2], torch.arange(2))  # the sample arrives over two batches
    rot.update(x[2:], torch.arange(2, 5))
    assert sorted(rot.samples) == [0, 2, 3, 4]
    for v, _ in rot.samples.values():  # orthonormal directions either way
        torch.testing.assert_close(v.T @ v, torch.eye(v.shape[1]), atol=1e-5, rtol=0)
    basis = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0]
    summary, raw = rot.compute(basis)
    vs = {}
    for i in (0, 2, 3, 4):
        xi = x[i].double().numpy()
        _, s, vt = np.linalg.svd(xi, full_matrices=False)
        k = int(np.argmax(np.cumsum(s**2) / (s**2).sum() >= 0.9) + 1)
        vs[i] = (vt[:k].T, s[:k] ** 2)
    ov, ang = [], []
    for a, b in [(0, 2), (0, 3), (0, 4), (2, 3), (2, 4), (3, 4)]:
        va, vb = vs[a][0], vs[b][0]
        ov.append((np.linalg.norm(va.T @ vb) ** 2) / min(va.shape[1], vb.shape[1]))
        ang.append(np.degrees(np.sort(scipy.linalg.subspace_angles(va, vb))))
    np.testing.assert_allclose(raw["overlap"], ov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sort(raw["angles_deg"]), np.sort(np.concatenate(ang)), atol=1e-2)
    cap = []
    for i in (0, 2, 3, 4):
        v, s2 = vs[i]
        b = basis.numpy()[:, : v.shape[1]]
        cap.append(float(((b.T @ v) ** 2).sum(0) @ s2 / s2.sum()))
    np.testing.assert_allclose(raw["capture"], cap, rtol=1e-5)
    assert summary["pairs"] == 6 and summary["overlap"]["mean"] == pytest.approx(np.mean(ov), rel=1e-5)
    assert rot.compute(basis)[1] is raw  # computed once per basis and sample
    other = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))[0]
    assert not np.allclose(rot.compute(other)[1]["capture"], cap)  # a new basis is not served stale


def test_identical_images_overlap_one():
    x = features(1, 10, 12).repeat(3, 1, 1)
    rot = SubspaceRotation(sample=[0, 1, 2])
    rot.update(x, torch.arange(3))
    s, _ = rot.compute()
    assert s["overlap"]["min"] == pytest.approx(1.0, abs=1e-5)


def test_sample_indices_seeded_and_bounded():
    a = sample_indices(100, 10, seed=4)
    assert a == sample_indices(100, 10, seed=4) and len(set(a)) == 10 and max(a) < 100
    assert sample_indices(5, 10, seed=0) == [0, 1, 2, 3, 4]


def _all(x, ids, perms=3):
    svd, pca, sep = PerImageSVD(TS), SecondMoment(TS), SEP(permutations=perms, seed=1)
    rot = SubspaceRotation(sample=[1, 4, 6])
    for s, e in ids:
        sl = torch.arange(s, e)
        svd.update(x[s:e], sl)
        pca.update(x[s:e])
        sep.update(x[s:e], sl)
        rot.update(x[s:e], sl)
    return svd, pca, sep, rot


def close(a, b, rel=1e-9):
    """Recursive approximate equality for nested dicts/lists of numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            close(a[k], b[k], rel)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            close(x, y, rel)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12, nan_ok=True)
    else:
        assert a == b


def _same(a, b):
    svd_a, pca_a, sep_a, rot_a = a
    svd_b, pca_b, sep_b, rot_b = b
    assert (svd_a.per_image()[1] == svd_b.per_image()[1]).all()
    assert svd_a.compute() == svd_b.compute()
    torch.testing.assert_close(pca_a.sum_xtx, pca_b.sum_xtx, rtol=1e-12, atol=1e-12)
    assert pca_a.compute()["global"] == pca_b.compute()["global"]
    ra, rb = sep_a.compute("full", 100, 0), sep_b.compute("full", 100, 0)
    assert ra["d"] == rb["d"] and ra["folded"]["d"] == rb["folded"]["d"]
    close(ra["permutation"], rb["permutation"])
    np.testing.assert_allclose(sep_a.mean_std("full")[0], sep_b.mean_std("full")[0], rtol=1e-12)
    close(rot_a.compute()[0], rot_b.compute()[0], rel=1e-6)


def test_uneven_batches_equal_one_batch():
    x = features(9, 10, 12)
    _same(_all(x, [(0, 9)]), _all(x, [(0, 2), (2, 7), (7, 8), (8, 9)]))


def test_state_dict_round_trip_equals_uninterrupted():
    x = features(9, 10, 12)
    whole = _all(x, [(0, 4), (4, 9)])
    first = _all(x, [(0, 4)])
    buf = io.BytesIO()
    torch.save([m.state_dict() for m in first], buf)
    buf.seek(0)
    states = torch.load(buf, weights_only=False)
    fresh = (
        PerImageSVD(TS),
        SecondMoment(TS),
        SEP(permutations=3, seed=1),
        SubspaceRotation(sample=[1, 4, 6]),
    )
    for m, sd in zip(fresh, states, strict=True):
        m.load_state_dict(sd)
    svd, pca, sep, rot = fresh
    sl = torch.arange(4, 9)
    svd.update(x[4:], sl)
    pca.update(x[4:])
    sep.update(x[4:], sl)
    rot.update(x[4:], sl)
    _same(whole, fresh)


def test_merge_of_shards_equals_single_pass():
    x = features(9, 10, 12)
    whole = _all(x, [(0, 9)])
    # shard like torchrun: rank r takes images r, r+2, ... (rows arrive out of order)
    parts = []
    for r in range(2):
        ids = torch.arange(r, 9, 2)
        svd, pca, sep, rot = (
            PerImageSVD(TS),
            SecondMoment(TS),
            SEP(permutations=3, seed=1),
            SubspaceRotation(sample=[1, 4, 6]),
        )
        svd.update(x[ids], ids)
        pca.update(x[ids])
        sep.update(x[ids], ids)
        rot.update(x[ids], ids)
        parts.append((svd, pca, sep, rot))
    merged = (
        PerImageSVD(TS),
        SecondMoment(TS),
        SEP(permutations=3, seed=1),
        SubspaceRotation(sample=[1, 4, 6]),
    )
    for k, m in enumerate(merged):
        m.load_state_dict(merge_states([p[k].state_dict() for p in parts], type(m)))
    _same(whole, merged)


def test_describe_and_bootstrap():
    v = np.random.default_rng(0).normal(size=200)
    d = describe(v)
    assert d["p99"] == pytest.approx(np.percentile(v, 99, method="linear"))
    lo, hi = bootstrap_ci(v, 500, seed=1)
    rng = np.random.default_rng(1)
    means = v[rng.integers(0, 200, size=(500, 200))].mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert lo < v.mean() < hi


def test_preprocess_center_and_standardize_per_image():
    from vitdistill.analysis.runner import preprocess

    x = features(3, 10, 6)
    x[1, :, 2] = 5.0  # a constant channel: zero after centring, left at zero by standardising
    c = preprocess(x, center=True, standardize=False).numpy()
    ref = x.numpy() - x.numpy().mean(axis=1, keepdims=True)
    np.testing.assert_allclose(c, ref, atol=1e-6)
    z = preprocess(x, center=False, standardize=True).numpy()
    sd = ref.std(axis=1, keepdims=True)
    np.testing.assert_allclose(z, np.where(sd > 0, ref / np.where(sd > 0, sd, 1), 0), atol=1e-5)
    assert np.abs(z[1, :, 2]).max() == 0


def test_reference_tables_ship_with_the_package():
    from vitdistill.analysis import reference_table
    from vitdistill.errors import UserError

    assert "| SL | CaiT-S24 | 384 | 14 | 34 | 61 | 121 | 167 | 247 | 302 | 359 |" in reference_table(
        "svd_rank_table.md"
    )
    assert reference_table("sep_comparison_table.csv").startswith("Model,Dimension (D)")
    assert "2511.15572" in reference_table("README.md")
    with pytest.raises(UserError, match="available"):
        reference_table("nope.csv")


def test_threaded_eigvalsh_matches_single_matrix_solves():
    from vitdistill.analysis.spectra import batched_eigvalsh

    x = torch.randn(7, 20, 33, dtype=torch.float64) * torch.linspace(0.1, 3, 33, dtype=torch.float64)
    g = x @ x.transpose(1, 2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_by_one = torch.stack([torch.linalg.eigvalsh(m) for m in g])
        torch.set_num_threads(3)  # 7 matrices over 3 threads: uneven chunks
        got = batched_eigvalsh(g)
        assert torch.get_num_threads() == 3  # restored
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, one_by_one)
    np.testing.assert_allclose(got.numpy(), np.linalg.eigvalsh(g.numpy()), rtol=1e-10, atol=1e-9)


def test_row_store_grows_and_sorts_by_image_index():
    from vitdistill.analysis.stats import RowStore

    store = RowStore(2, torch.float32, shape=(3, 2))
    rng = np.random.default_rng(0)
    order = rng.permutation(300)
    want = {}
    for s in range(0, 300, 7):  # uneven batches, out of order, past several doublings
        ids = torch.as_tensor(order[s : s + 7])
        rows = torch.as_tensor(rng.normal(size=(len(ids), 3, 2)), dtype=torch.float64)
        store.add(ids, rows)
        want.update({int(i): r.float() for i, r in zip(ids, rows, strict=True)})
    ids, rows = store.get()
    assert len(store) == 300 and ids.tolist() == list(range(300)) and rows.dtype == torch.float32
    assert all(torch.equal(rows[i], want[i]) for i in range(300))
    again = RowStore(2, torch.float32, shape=(3, 2))
    again.set(ids[:10], rows[:10])
    again.add(ids[10:], rows[10:])
    assert all(torch.equal(a, b) for a, b in zip(again.get(), store.get(), strict=True))
