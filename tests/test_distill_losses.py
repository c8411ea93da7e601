"""Loss terms against hand computations, and the config schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitdistill.distill import config as C
from vitdistill.distill import losses as L
from vitdistill.errors import UserError


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("T", [1.0, 2.5])
def test_soft_kd_matches_hand_kl(T):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 7)), rng.normal(size=(4, 7)) * 2
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean() * T * T
    got = L.soft_kd(torch.tensor(s), torch.tensor(t), T).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert L.soft_kd(torch.tensor(s), torch.tensor(s), T).item() == pytest.approx(0.0, abs=1e-6)


def test_hard_kd_is_ce_on_teacher_argmax():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    y = t.argmax(1)
    expected = -np.log(_softmax(s)[np.arange(5), y]).mean()
    assert L.hard_kd(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_label_smoothing_and_soft_targets():
    rng = np.random.default_rng(2)
    s, y, eps, K = rng.normal(size=(3, 4)), np.array([0, 3, 1]), 0.1, 4
    q = np.full((3, K), eps / K)
    q[np.arange(3), y] += 1 - eps
    expected = -(q * np.log(_softmax(s))).sum(1).mean()
    assert L.cross_entropy(torch.tensor(s), torch.tensor(y), eps).item() == pytest.approx(expected, rel=1e-5)
    # soft targets (after mixup) already carry the smoothing
    assert L.cross_entropy(torch.tensor(s), torch.tensor(q), eps).item() == pytest.approx(expected, rel=1e-5)


def test_feature_mse_and_layernorm():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 9, 5)), rng.normal(size=(2, 9, 5))
    assert L.feature_mse(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(
        ((a - b) ** 2).mean(), rel=1e-6
    )
    n = L.normalize_tokens(torch.tensor(a), "layernorm").numpy()
    ref = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(n, ref, rtol=1e-5, atol=1e-6)


def test_spectral_loss_matches_numpy_rfft2():
    rng = np.random.default_rng(4)
    B, H, W, Cc = 2, 4, 6, 3
    a, b = rng.normal(size=(B, H * W, Cc)), rng.normal(size=(B, H * W, Cc))

    def spec(x):  # tokens are row-major over the (H, W) grid
        grid = x.reshape(B, H, W, Cc).transpose(0, 3, 1, 2)
        f = np.fft.rfft2(grid, norm="ortho")
        return np.stack([f.real, f.imag], -1)

    expected = ((spec(a) - spec(b)) ** 2).mean()
    got = L.spectral_loss(torch.tensor(a), torch.tensor(b), (H, W)).item()
    assert got == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------ config
def test_defaults_and_overrides_are_typed():
    cfg = C.resolve(
        {"model": "vit_tiny_patch16_224", "data": "synthetic:shapes"},
        [
            "loss.alpha=0.9",
            "optim.lr=5e-4",
            "teacher.name=vit_small_patch16_224",
            "loss.pairs=[[-1,-1],[0,1]]",
        ],
    )
    assert cfg["model"]["name"] == "vit_tiny_patch16_224" and cfg["data"]["train"] == "synthetic:shapes"
    assert cfg["optim"]["lr"] == 5e-4 and isinstance(cfg["optim"]["lr"], float)
    assert cfg["loss"]["pairs"] == [[-1, -1], [0, 1]]
    assert cfg["sched"]["warmup_lr"] == 1e-6 and cfg["aug"]["repeated_aug"] == 1


@pytest.mark.parametrize(
    "bad, needle",
    [
        (["loss.alpah=0.5"], "loss.alpha"),
        (["loss.kd=medium"], "soft, hard"),
        (["epochs=ten"], "'epochs'"),
        (["data.batch_size=1.5"], "'data.batch_size'"),
        (["nonsense=1"], "nonsense"),
        (["loss.alpha=0.5"], "teacher"),
        (["model.remedy=lift"], "model.width"),
    ],
)
def test_config_errors_name_the_key(bad, needle):
    with pytest.raises(UserError, match=None) as e:
        C.resolve({}, bad)
    assert needle in str(e.value)


def test_unknown_section_key_lists_allowed():
    with pytest.raises(UserError) as e:
        C.resolve({"sched": {"warmup": 3}})
    assert "sched.warmup" in str(e.value)


RECIPES = sorted((Path(C.__file__).parents[1] / "configs").glob("*/*.yaml"))


def test_recipes_exist():
    names = {p.parent.name + "/" + p.stem for p in RECIPES}
    for n in [
        "paper/deit_tiny_alone",
        "paper/softkd",
        "paper/featkd_mse",
        "paper/featkd_spectral",
        "paper/lift_softkd_spectral",
        "paper/lift_mse",
        "paper/widelast_softkd_mse",
        "paper/widelast_spectral",
        "paper/uniform219_softkd_mse",
        "paper/lift_alone",
        "paper/widelast_alone",
        "cpu/teacher",
    ]:
        assert n in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_recipe_loads(path):
    cfg = C.resolve(path)
    if path.parent.name == "paper":
        assert cfg["epochs"] == 300 and cfg["data"]["batch_size"] == 2048
        assert cfg["optim"]["lr_base"] * 2048 / cfg["optim"]["lr_base_size"] == pytest.approx(2e-3)
        assert cfg["aug"]["repeated_aug"] == 3 and cfg["aug"]["reprob"] == 0.25
        assert cfg["loss"]["smoothing"] == 0.1 and cfg["sched"]["warmup_epochs"] == 5
        assert cfg["model"]["kwargs"].get("drop_path_rate", 0.0) == 0.0


def _pool_reference(x: np.ndarray, channels: int) -> np.ndarray:
    """Per-output-bin mean with adaptive pooling's bin edges [floor(i*C/c), ceil((i+1)*C/c))."""
    c_t = x.shape[-1]
    out = np.empty(x.shape[:-1] + (channels,), dtype=np.float64)
    for i in range(channels):
        lo, hi = (i * c_t) // channels, -((-(i + 1) * c_t) // channels)
        out[..., i] = x[..., lo:hi].astype(np.float64).mean(axis=-1)
    return out


@pytest.mark.parametrize("c_t,c", [(384, 192), (384, 219), (12, 5), (32, 16), (7, 7), (10, 1)])
def test_pool_channels_matches_binned_means(c_t, c):
    x = torch.randn(2, 3, c_t, generator=torch.Generator().manual_seed(c_t + c), dtype=torch.float64)
    got = L.pool_channels(x, c)
    assert got.shape == (2, 3, c)
    np.testing.assert_allclose(got.numpy(), _pool_reference(x.numpy(), c), rtol=1e-12, atol=1e-12)


def test_pool_channels_halving_is_adjacent_pair_mean_and_widening_is_refused():
    x = torch.arange(8.0).view(1, 8)
    torch.testing.assert_close(L.pool_channels(x, 4), torch.tensor([[0.5, 2.5, 4.5, 6.5]]))
    # 8 -> 3: bins [0,3), [2,6), [5,8) (boundary channels shared)
    torch.testing.assert_close(L.pool_channels(x, 3), torch.tensor([[1.0, 3.5, 6.0]]))
    with pytest.raises(ValueError, match="only narrows"):
        L.pool_channels(x, 9)
