"""Parameter / MAC counting, throughput, token grid and block widths."""

from __future__ import annotations

import pytest
import timm
import torch

from vitdistill.errors import UserError
from vitdistill.models import (
    block_widths,
    count_macs,
    count_params,
    create_widelast,
    format_widths,
    inspect_models,
    measure_throughput,
    token_grid,
)
from vitdistill.models.profile import format_table, resolve_device

KW = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)


def _hand_macs(img=32, patch=8, dim=64, depth=2, classes=10, mlp_ratio=4, chans=3):
    patches = (img // patch) ** 2
    n = patches + 1  # + CLS
    hidden = dim * mlp_ratio
    embed = patches * dim * chans * patch * patch
    per_block = (
        n * dim * 3 * dim  # qkv
        + n * n * dim  # Q K^T over all heads (heads * head_dim = dim)
        + n * n * dim  # attention x V
        + n * dim * dim  # output projection
        + n * dim * hidden
        + n * hidden * dim  # MLP
    )
    head = dim * classes  # token pooling: one vector into the classifier
    return embed + depth * per_block + head


@pytest.mark.parametrize("fused", [True, False])
def test_count_macs_matches_hand_count(fused):
    m = timm.create_model("vit_tiny_patch16_224", **KW)
    for b in m.blocks:
        b.attn.fused_attn = fused
    assert count_macs(m) == _hand_macs() == 1_942_400
    # a different input size is honoured
    m2 = timm.create_model("vit_tiny_patch16_224", **dict(KW, img_size=48))
    assert count_macs(m2) == _hand_macs(img=48)
    assert m.training  # mode restored


def test_count_params_and_trainable_only():
    m = timm.create_model("vit_tiny_patch16_224", **KW)
    total = sum(p.numel() for p in m.parameters())
    assert count_params(m) == total
    for p in m.patch_embed.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in m.patch_embed.parameters())
    assert count_params(m, trainable_only=True) == total - frozen


def test_measure_throughput_cpu():
    m = timm.create_model("vit_tiny_patch16_224", **KW)
    ips = measure_throughput(m, batch_size=2, device="cpu", warmup=1, iters=2)
    assert ips > 0 and m.training
    assert measure_throughput(m, batch_size=2, warmup=0, iters=1, amp="bf16") > 0
    with pytest.raises(UserError):
        measure_throughput(m, batch_size=2, iters=1, amp="int3")
    with pytest.raises(UserError):
        measure_throughput(m, batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_is_a_user_error():
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError):
        resolve_device("nonsense")


def test_token_grid_and_block_widths():
    m = timm.create_model("vit_tiny_patch16_224", **dict(KW, img_size=(32, 48)))
    assert token_grid(m) == (4, 6)
    assert block_widths(m) == [64, 64]
    w = create_widelast("vit_tiny_patch16_224", 128, num_wide=1, **dict(KW, depth=3))
    assert block_widths(w) == [64, 64, 128]
    cait = timm.create_model("cait_xxs24_224", img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2)
    assert block_widths(cait) == [64, 64, 64]  # self-attention blocks only
    assert format_widths([192] * 11 + [384]) == "192x11 + 384x1"
    assert format_widths([64, 128, 64]) == "64x1 + 128x1 + 64x1"
    assert format_widths([]) == ""


def test_inspect_models_rows():
    inst = timm.create_model("vit_tiny_patch16_224", **KW)
    rows = inspect_models(
        ["deit_tiny_widelast_patch16_224", inst],
        throughput=False,
        labels=["wide", "tiny"],
        model_kwargs=dict(img_size=32),
        num_classes=10,
    )
    wide, tiny = rows
    assert wide["model"] == "wide" and wide["widths"] == "192x11 + 384x1" and wide["head_width"] == 384
    assert wide["token_grid"] == [2, 2] and wide["input_size"] == [3, 32, 32] and wide["num_classes"] == 10
    ref = timm.create_model("deit_tiny_widelast_patch16_224", img_size=32, num_classes=10)
    assert wide["params"] == count_params(ref) and wide["macs"] == count_macs(ref)
    assert tiny["macs"] == 1_942_400 and tiny["throughput"] is None
    table = format_table(rows)
    assert "192x11 + 384x1" in table and f"{wide['params']:,}" in table
    assert len({len(line) for line in table.splitlines()[:2]}) == 1  # header and rule aligned
    with pytest.raises(UserError):
        inspect_models(["vit_tiny_patch16_224"], labels=["a", "b"], throughput=False)


# ---- hand counts for every family the paper uses (independent of the counter's implementation) ----


def _vit_block(n, dim, hidden, heads_n=None):
    """qkv + QK^T + AV + output projection + MLP for ``n`` tokens at width ``dim``."""
    return n * dim * 3 * dim + 2 * n * n * dim + n * dim * dim + 2 * n * dim * hidden


def _deit_like(dim, depth, img=224, patch=16, classes=1000, prefix=1, heads_out=1, chans=3):
    patches = (img // patch) ** 2
    n = patches + prefix
    return (
        patches * dim * chans * patch * patch
        + depth * _vit_block(n, dim, 4 * dim)
        + heads_out * dim * classes
    )


def test_deit_tiny_hand_count_full_size():
    # 196*192*768 + 12 * (197*192*576 + 2*197^2*192 + 197*192^2 + 2*197*192*768) + 192*1000
    assert _deit_like(192, 12) == 1_253_683_200
    assert count_macs(timm.create_model("deit_tiny_patch16_224")) == 1_253_683_200


def test_students_hand_counts_full_size():
    trunk = _deit_like(192, 12) - 192 * 1000  # DeiT-Tiny without its head
    lift = trunk + 197 * 192 * 384 + 384 * 1000  # projector on every token, head at 384
    assert count_macs(timm.create_model("deit_tiny_lift_patch16_224")) == lift == 1_268_399_616
    wide = _deit_like(192, 11) - 192 * 1000 + 197 * 192 * 384 + _vit_block(197, 384, 1536) + 384 * 1000
    assert count_macs(timm.create_model("deit_tiny_widelast_patch16_224")) == wide == 1_544_741_760
    assert count_macs(timm.create_model("deit_tiny_uniform219_patch16_224")) == _deit_like(219, 12)


def test_distilled_deit_counts_both_heads():
    m = timm.create_model("deit_tiny_distilled_patch16_224", **dict(KW, num_classes=10))
    assert count_macs(m) == _deit_like(64, 2, img=32, patch=8, classes=10, prefix=2, heads_out=2)


def _cait_hand(patches, dim, depth, heads, depth_token=2, classes=10, patch=8, chans=3):
    n = patches
    talking = 2 * n * n * heads * heads  # proj_l and proj_w mix heads on every (query, key) pair
    sa = n * dim * 3 * dim + 2 * n * n * dim + talking + n * dim * dim + 2 * n * dim * 4 * dim
    # class attention: q from CLS only; k, v from CLS + patches; MLP on CLS only
    ca = dim * dim + 2 * (n + 1) * dim * dim + 2 * (n + 1) * dim + dim * dim + 2 * dim * 4 * dim
    return n * dim * chans * patch * patch + depth * sa + depth_token * ca + dim * classes


def test_cait_hand_count_talking_heads_and_class_attention():
    m = timm.create_model(
        "cait_xxs24_224", img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10
    )
    assert count_macs(m) == _cait_hand(16, 64, 3, 4)


def test_cait_s24_full_size_hand_count():
    assert _cait_hand(196, 384, 24, 8, classes=1000, patch=16) == 9_327_327_744
    assert count_macs(timm.create_model("cait_s24_224")) == 9_327_327_744


def _swin_hand(img, patch, dim, depths, window, classes, chans=3):
    res, total = img // patch, (img // patch) ** 2 * dim * chans * patch * patch
    for i, depth in enumerate(depths):
        if i:  # patch merging: 2x2 neighbours concatenated (4C) -> 2C
            res, dim = res // 2, dim * 2
            total += res * res * 4 * (dim // 2) * dim
        t = res * res
        win = min(window, res) ** 2  # tokens per window
        total += depth * (t * dim * 3 * dim + 2 * t * win * dim + t * dim * dim + 2 * t * dim * 4 * dim)
    return total + dim * classes


def test_swin_hand_count_shifted_windows_and_merging():
    kw = dict(img_size=56, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=7, num_classes=10)
    m = timm.create_model("swin_tiny_patch4_window7_224", **kw)
    assert count_macs(m) == _swin_hand(56, 4, 32, (2, 2), 7, 10)
    assert _swin_hand(224, 4, 96, (2, 2, 6, 2), 7, 1000) == 4_490_566_656  # Swin-T, 4.49 GMACs


@pytest.mark.parametrize("grad_mode", ["inference_mode", "no_grad", "enable_grad"])
def test_count_macs_same_under_every_grad_mode_and_sdpa_backend(grad_mode):
    m = timm.create_model("vit_tiny_patch16_224", **KW)
    outer = {
        "inference_mode": torch.inference_mode,
        "no_grad": torch.no_grad,
        "enable_grad": torch.enable_grad,
    }
    with outer[grad_mode]():
        assert count_macs(m) == 1_942_400
    attention = pytest.importorskip("torch.nn.attention")  # torch >= 2.3
    with attention.sdpa_kernel(attention.SDPBackend.MATH), outer[grad_mode]():
        assert count_macs(m) == 1_942_400


def test_block_widths_real_stage_depths():
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=56, embed_dim=32, depths=(2, 3), num_heads=(2, 4)
    )
    assert block_widths(swin) == [32, 32, 64, 64, 64]
    assert format_widths(block_widths(timm.create_model("swin_tiny_patch4_window7_224"))) == (
        "96x2 + 192x2 + 384x6 + 768x2"
    )
    with pytest.raises(UserError, match="no transformer blocks"):
        block_widths(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten()))


def test_inspect_models_row_for_a_model_that_cannot_be_counted():
    broken = torch.nn.Linear(5, 7)  # its forward cannot take an image
    (row,) = inspect_models([broken], throughput=True, labels=["lin"])
    assert row["macs"] is None and "RuntimeError" in row["macs_error"] and "\n" not in row["macs_error"]
    assert row["params"] == 42 and row["throughput"] is None and row["widths"] == "-"
    line = format_table([row]).splitlines()[2]
    assert line.split()[:3] == ["lin", "42", "-"]


_SMALL = dict(img_size=32, patch_size=8, depth=2)
_FAMILIES = {
    "vit_base_patch16_224": dict(_SMALL, embed_dim=64, num_heads=2),
    "deit3_small_patch16_224": _SMALL,
    "deit_tiny_distilled_patch16_224": _SMALL,
    "eva02_tiny_patch14_224": _SMALL,
    "beit_base_patch16_224": dict(_SMALL, embed_dim=64, num_heads=2),
    "xcit_tiny_12_p16_224": dict(img_size=64, depth=2),
    "convit_tiny": _SMALL,
    "flexivit_small": _SMALL,
    "vit_base_patch16_reg4_gap_256": dict(_SMALL, embed_dim=64, num_heads=2),
    "swin_tiny_patch4_window7_224": dict(img_size=56, depths=(2, 2), num_heads=(3, 6), embed_dim=48),
}


@pytest.mark.parametrize("name", sorted(_FAMILIES))
def test_count_macs_agrees_with_torch_flop_counter_on_math_attention(name):
    """Reference: torch's own FlopCounterMode with attention forced through plain matmuls."""
    attention = pytest.importorskip("torch.nn.attention")  # torch >= 2.3
    from torch.utils.flop_counter import FlopCounterMode

    from vitdistill.models.profile import model_input_size

    m = timm.create_model(name, **_FAMILIES[name]).eval()
    x = torch.zeros(1, *model_input_size(m))
    with (
        attention.sdpa_kernel(attention.SDPBackend.MATH),
        torch.no_grad(),
        FlopCounterMode(display=False) as ref,
    ):
        m(x)
    assert count_macs(m) == ref.get_total_flops() // 2 > 0


def test_throughput_runs_in_eval_inference_mode_under_autocast():
    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.seen = set()

        def forward(self, x):
            y = self.lin(x.flatten(1)[:, :4])
            self.seen.add((self.training, torch.is_inference_mode_enabled(), y.dtype))
            return y

    m = Probe()
    assert measure_throughput(m, batch_size=3, warmup=1, iters=2, amp="bf16", input_size=(1, 2, 2)) > 0
    assert m.seen == {(False, True, torch.bfloat16)} and m.training
