"""Spectral Energy Pattern (SEP) of tokens over the channel axis, and its permutation test.

For a token x of D channels, S(k) = |DFT(x)_k|^2 and SEP(d) = 100 * sum_{k<d} S(k) / sum_k S(k).
``full`` mode uses all D bins of the complex FFT in their native order (the published scripts'
convention); ``folded`` uses the real FFT with bins 1..D/2-1 doubled (D' = D//2+1 bins, the
paper's text). Curves are averaged over tokens (each token weighted equally); thresholds are the
first bin count d where the mean curve reaches alpha. Zero-energy tokens are skipped and counted
(so are tokens whose float32 energy is below the smallest normal float32, whose inverse overflows).

Caution: in full order S(k) = S(D-k) for real tokens, so SEP(D/2) >= 50% exactly when the DC bin
holds more energy than the Nyquist bin; d50 = D/2 in full mode is then no evidence of anything.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from vitdistill.analysis.options import SEP_MODES as MODES
from vitdistill.analysis.stats import Mergeable, RowStore, akey, bootstrap_ci, first_at_least

CAUTION = (
    "In full FFT order the power spectrum of a real token is symmetric (S(k) = S(D-k)), so the "
    "50% threshold sits at d = D/2 whenever the DC bin holds more energy than the Nyquist bin; "
    "d50 = D/2 carries no information (random weights give it too). Read the folded curve beside it."
)


def power_spectrum(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Per-token power spectrum over the last axis, float64: (..., D) full or (..., D//2+1) folded."""
    x = x.to(torch.float64)
    if mode == "full":
        return _power(torch.fft.fft(x, dim=-1))
    if mode == "folded":
        p = _power(torch.fft.rfft(x, dim=-1))
        return p * _fold_weights(x.shape[-1], p.shape[-1], p.dtype, p.device)
    raise ValueError(f"unknown SEP mode {mode!r}; use one of {MODES}")


def _power(z: torch.Tensor) -> torch.Tensor:
    """|z|^2 of a complex tensor as re^2 + im^2 (several times faster than ``z.abs().square()``,
    which goes through a square root)."""
    return torch.addcmul(z.real.square(), z.imag, z.imag)


def sep_curves(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token curves (T, D) in percent for x (T, D), and the mask of tokens with non-zero energy."""
    p = power_spectrum(x, mode)
    tot = p.sum(-1, keepdim=True)
    valid = tot[..., 0] > 0
    curves = 100.0 * p.cumsum(-1) / torch.where(tot > 0, tot, torch.ones_like(tot))
    return curves, valid


def _fold_weights(d: int, h: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Weights of the D//2+1 real-FFT bins in the folded spectrum: 2 for bins with a mirror twin."""
    hi = d // 2 if d % 2 == 0 else d // 2 + 1
    w = torch.ones(h, dtype=dtype, device=device)
    w[1:hi] = 2.0
    return w


def _expand(half: torch.Tensor, d: int, mode: str) -> torch.Tensor:
    """Full-order (mirror appended) or folded (interior bins doubled) spectrum from rfft power."""
    h = half.shape[-1]
    if mode == "full":
        return torch.cat([half, half[..., 1 : d - h + 1].flip(-1)], dim=-1)
    return half * _fold_weights(d, h, half.dtype, half.device)


@functools.lru_cache(maxsize=32)
def _curve_maps(d: int, mode: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(a, b, s, j), each (D',): bin k of a token's curve (as a fraction) is
    ``a[k] + b[k] * q_0 + s[k] * c[j[k]]``, where q is the token's normalised half spectrum and
    c = cumsum(q), for tokens of non-zero energy.

    Full order: bins below H = D//2+1 are c itself; bin k >= H adds mirrored bins, and equals
    1 + q_0 - c[D-k-1] (the total is 1 and the mirror of bins 1..D-k-1 is missing). Folded:
    2 c[k] - q_0 while bins are doubled, and 1 at the undoubled Nyquist bin of an even D.
    """
    h = d // 2 + 1
    k = torch.arange(d if mode == "full" else h)
    if mode == "full":
        low = k < h
        a = (~low).double()
        b, s = a.clone(), torch.where(low, 1.0, -1.0).double()
        j = torch.where(low, k, d - k - 1)
    else:
        hi = d // 2 if d % 2 == 0 else d // 2 + 1
        low = k < hi
        a = (~low).double()
        b, s = torch.where(low, -1.0, 0.0).double(), torch.where(low, 2.0, 0.0).double()
        j = torch.where(low, k, 0)
    return tuple(t.to(device) for t in (a, b, s, j))


def _token_moments(q: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-image float64 sums over tokens of c, c^2 and q_0 c (each (B, H)), and of q_0 and
    q_0^2 (each (B, 1)), for the normalised half spectra q (B, N, H) and c = cumsum(q)."""
    c = q.cumsum(-1).to(torch.float64)
    q0 = q[..., 0].to(torch.float64)  # (B, N)
    s_c = c.sum(1)
    s_cc = c.square().sum(1)
    s_q0c = torch.bmm(q0[:, None, :], c)[:, 0]
    return s_c, s_cc, s_q0c, q0.sum(1, keepdim=True), q0.square().sum(1, keepdim=True)


def _squared_deviations(moments, cnt: torch.Tensor, mu: torch.Tensor, maps) -> torch.Tensor:
    """Per image and bin, sum over non-empty tokens of (curve - mu)^2, curves as fractions:
    (B, D') from :func:`_token_moments`, the token counts (B, 1), mu (B, D') and the bin maps."""
    s_c, s_cc, s_q0c, s_q0, s_q0q0 = moments
    a, b, s, j = maps
    c, cc, q0c = s_c[:, j], s_cc[:, j], s_q0c[:, j]
    sum_v = a * cnt + b * s_q0 + s * c
    sum_vv = a * a * cnt + b * b * s_q0q0 + s * s * cc + 2 * a * b * s_q0 + 2 * a * s * c + 2 * b * s * q0c
    return sum_vv - 2 * mu * sum_v + cnt * mu * mu


class SEP(Mergeable):
    """Pooled SEP curves of one layer in both modes, plus per-image thresholds.

    With ``permutations`` > 0, R seeded channel permutations are applied to every token (one
    permutation per trial, shared by all tokens) in ``perm_mode``; per trial the pooled curve
    sums and per-image bandwidths are kept, so the robustness test needs per-image scalars only.
    """

    reductions: ClassVar[dict[str, Any]] = {
        **{f"{p}_{m}": "sum" for m in MODES for p in ("sum", "sumsq")},
        "sum_perm": "sum",
        "ids": "rows",
        "rows": "rows",
        "sum_tokens": "sum",
        "sum_zero": "sum",
        "D": "first",
        "perm": {"ids": "rows", "rows": "rows"},
    }

    def __init__(
        self,
        alphas: Sequence[float] = (50, 60, 70, 80, 90),
        permutations: int = 0,
        perm_mode: str = "full",
        seed: int = 0,
        channels: int | None = None,
    ):
        self.alphas = [float(a) for a in alphas]
        self.permutations = int(permutations)
        self.perm_mode = perm_mode
        self.seed = int(seed)
        self.D: int | None = channels
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens = torch.zeros((), dtype=torch.int64)
        self.zero_tokens = torch.zeros((), dtype=torch.int64)
        na = len(self.alphas)
        self.rows = RowStore(2 * na, torch.float64)  # per-image d (full..., folded...)
        self.perm_rows = RowStore(na, torch.float32, shape=(self.permutations, na))
        self.perms: torch.Tensor | None = None

    def _init(self, d: int, device) -> None:
        if self.D is not None and d != self.D:
            raise ValueError(f"SEP got {d} channels after {self.D}")
        self.D = d
        if not self.sums:
            for m in MODES:
                n = d if m == "full" else d // 2 + 1
                self.sums[f"sum_{m}"] = torch.zeros(n, dtype=torch.float64)
                self.sums[f"sumsq_{m}"] = torch.zeros(n, dtype=torch.float64)
            if self.permutations:
                n = d if self.perm_mode == "full" else d // 2 + 1
                self.sums["sum_perm"] = torch.zeros(self.permutations, n, dtype=torch.float64)
        if self.perms is None and self.permutations:
            g = torch.Generator().manual_seed(self.seed)
            self.perms = torch.stack([torch.randperm(d, generator=g) for _ in range(self.permutations)])

    def update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        """x: (B, N, D) token features of B images.

        One real FFT serves both modes (the full spectrum is the half spectrum plus its mirror).
        Pooled and per-image mean curves are linear in the normalised spectra, so they come from
        per-image sums of half spectra. The std needs each token's curve, but every bin of both
        curves is ``a + b * q_0 + s * c_j`` for the token's cumulative half spectrum ``c`` (see
        :func:`_curve_maps`), so per-image sums of ``c``, ``c^2`` and ``q_0 c`` give every sum of
        squares without building the curves. Spectra and cumulative sums over one token are
        float32 (the features are float32 already); every sum over tokens or images is float64.
        """
        b, n, d = x.shape
        self._init(d, x.device)
        x = x.to(torch.float32)
        half = _power(torch.fft.rfft(x, dim=-1))  # (B, N, H), H = D//2+1
        tot = (half * _fold_weights(d, half.shape[-1], half.dtype, half.device)).sum(-1)  # (B, N) energy
        valid = tot >= torch.finfo(tot.dtype).tiny  # below it 1/energy overflows: counted as zero energy
        inv = torch.where(valid, tot, torch.ones_like(tot)).reciprocal_().mul_(valid)
        q = half.mul_(inv[..., None])  # normalised spectra; zero rows for empty tokens
        cnt = valid.sum(1, keepdim=True).to(torch.float64)  # (B, 1)
        img_half = q.sum(1, dtype=torch.float64)  # (B, H): per-image sum over tokens
        moments = _token_moments(q)
        per_image = []
        for m in MODES:
            s_img = 100.0 * _expand(img_half, d, m).cumsum(-1)  # (B, D'): per-image sums of curves
            mean_img = s_img / cnt.clamp_min(1)
            self.sums[f"sum_{m}"] += s_img.sum(0).cpu()
            # sum of squares = within-image squared deviations + S^2/n (no cancellation)
            m2 = _squared_deviations(moments, cnt, mean_img / 100.0, _curve_maps(d, m, x.device))
            self.sums[f"sumsq_{m}"] += (1e4 * m2 + s_img * mean_img).sum(0).cpu()
            dm = first_at_least(mean_img, self.alphas).to(torch.float64)
            per_image.append(torch.where(cnt > 0, dm, torch.full_like(dm, float("nan"))))
        self.tokens += int(valid.sum())
        self.zero_tokens += int((~valid).sum())
        self.rows.add(ids, torch.cat(per_image, -1))
        if self.permutations:
            self._update_perm(x, ids, inv, cnt)

    def _update_perm(self, x: torch.Tensor, ids: torch.Tensor, inv: torch.Tensor, cnt: torch.Tensor) -> None:
        """R trials: the per-image sums of normalised spectra of channel-permuted tokens.

        A permutation keeps each token's energy (Parseval), so scaling every token by
        1/sqrt(energy) once makes the sum over tokens of |FFT(permuted)|^2 the per-image sum of
        normalised spectra directly. Each trial gathers the channels of every token row and
        transforms the rows one by one, so a token's arithmetic does not depend on the batch
        (batch splits and ranks give equal sums).
        """
        b, n, d = x.shape
        flat = (x * inv.sqrt()[..., None]).reshape(b * n, d)  # (B*N, D) float32
        perms = self.perms.to(x.device)
        half = torch.stack(
            [_power(torch.fft.rfft(flat.index_select(1, p), dim=-1)).view(b, n, -1).sum(1) for p in perms]
        )  # (R, B, H)
        img = _expand(half.to(torch.float64), d, self.perm_mode)  # (R, B, D')
        self.sums["sum_perm"] += 100.0 * img.sum(1).cumsum(-1).cpu()
        dm = first_at_least(100.0 * img.cumsum(-1) / cnt.clamp_min(1)[None], self.alphas)  # (R, B, A)
        rows = torch.where(
            (cnt > 0)[None], dm.to(torch.float32), torch.full_like(dm, float("nan"), dtype=torch.float32)
        )
        self.perm_rows.add(ids, rows.transpose(0, 1).cpu())

    # --- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        ids, rows = self.rows.get()
        sd = {k: v.clone() for k, v in self.sums.items()}
        sd.update(
            ids=ids, rows=rows, sum_tokens=self.tokens.clone(), sum_zero=self.zero_tokens.clone(), D=self.D
        )
        if self.permutations:
            pids, prows = self.perm_rows.get()
            sd["perm"] = {"ids": pids, "rows": prows}
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.D = sd["D"]
        self.sums = {
            k: v.clone()
            for k, v in sd.items()
            if k.startswith(("sum_full", "sumsq_full", "sum_folded", "sumsq_folded", "sum_perm"))
            and v is not None
        }
        self.rows.set(sd["ids"], sd["rows"])
        self.tokens, self.zero_tokens = sd["sum_tokens"].clone(), sd["sum_zero"].clone()
        if self.permutations and sd.get("perm"):
            self.perm_rows.set(sd["perm"]["ids"], sd["perm"]["rows"])
        if self.D is not None and self.permutations and self.perms is None:
            self._init(self.D, "cpu")

    # --- results -------------------------------------------------------------------------
    def mean_std(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        t = max(int(self.tokens), 1)
        mean = self.sums[f"sum_{mode}"] / t
        std = (self.sums[f"sumsq_{mode}"] / t - mean.pow(2)).clamp_min(0).sqrt()
        return mean.numpy(), std.numpy()

    def _thresholds(self, mean: np.ndarray) -> dict[str, int]:
        d = first_at_least(torch.as_tensor(mean)[None], self.alphas)[0]
        return {akey(a): int(d[i]) for i, a in enumerate(self.alphas)}

    def compute(self, mode: str = "full", n_boot: int = 1000, boot_seed: int = 0) -> dict:
        if self.D is None:
            return {}
        out: dict = {
            "mode": mode,
            "D": self.D,
            "tokens": int(self.tokens),
            "zero_energy_tokens": int(self.zero_tokens),
        }
        _, rows = self.rows.get()
        rows = rows.numpy()
        na = len(self.alphas)
        for i, m in enumerate(MODES):
            n_bins = self.D if m == "full" else self.D // 2 + 1
            mean, _ = self.mean_std(m)
            d = self._thresholds(mean)
            pim = rows[:, i * na : (i + 1) * na] / n_bins
            out[m] = {
                "bins": n_bins,
                "d": d,
                "d_over_D": {k: v / n_bins for k, v in d.items()},
                "per_image_mean_d_over_D": {
                    akey(a): float(np.nanmean(pim[:, j])) if len(pim) else float("nan")
                    for j, a in enumerate(self.alphas)
                },
            }
        out["d"], out["d_over_D"] = out[mode]["d"], out[mode]["d_over_D"]
        out["per_image_mean_d_over_D"] = out[mode]["per_image_mean_d_over_D"]
        out["caution"] = CAUTION
        if self.permutations:
            out["permutation"] = self._perm_result(rows, n_boot, boot_seed)
        return out

    def _perm_result(self, rows: np.ndarray, n_boot: int, seed: int) -> dict:
        m = self.perm_mode
        n_bins = self.D if m == "full" else self.D // 2 + 1
        na = len(self.alphas)
        t = max(int(self.tokens), 1)
        base = self.sums[f"sum_{m}"] / t
        perm_means = self.sums["sum_perm"] / t
        l1 = (perm_means - base[None]).abs().mean(-1).numpy()  # mean |diff| over bins, in % points
        _, prows = self.perm_rows.get()
        prows = prows.numpy().astype(np.float64) / n_bins  # (I, R, A)
        off = 0 if m == "full" else na
        orig = rows[:, off : off + na] / n_bins  # (I, A)
        shift = np.nanmean(prows, axis=1) - orig  # per image: mean over trials minus original
        res: dict = {
            "mode": m,
            "trials": self.permutations,
            "seed": self.seed,
            "bootstrap": n_boot,
            "curve_l1": {
                "mean": float(l1.mean()),
                "std": float(l1.std()),
                "max": float(l1.max()),
                "unit": "mean absolute difference over bins, percentage points",
            },
            "bandwidth": {},
        }
        ok = ~np.isnan(shift).any(axis=1)
        for j, a in enumerate(self.alphas):
            lo, hi = bootstrap_ci(shift[ok, j], n_boot, seed + j)
            res["bandwidth"][akey(a)] = {
                "original": float(orig[ok, j].mean()) if ok.any() else float("nan"),
                "permuted": float(np.nanmean(prows[ok, :, j])) if ok.any() else float("nan"),
                "shift": float(shift[ok, j].mean()) if ok.any() else float("nan"),
                "shift_ci95": [lo, hi],
            }
        return res
