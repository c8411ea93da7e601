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
