"""Token taps against timm's own computations, on small random-init timm models."""

from __future__ import annotations

import pytest
import timm
import torch

from vitdistill.errors import UserError
from vitdistill.models.taps import (
    TokenTaps,
    check_tappable,
    feature_grid,
    num_tap_layers,
    resolve_layers,
    token_features,
)


def tiny_vit(**kw):
    args = dict(img_size=32, patch_size=8, depth=3, embed_dim=48, num_heads=2, num_classes=5)
    args.update(kw)
    return timm.create_model("vit_tiny_patch16_224", **args).eval()


def manual_block_outputs(model, x):
    """The residual stream after each block, by running timm's modules one by one."""
    h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    outs = []
    for blk in model.blocks:
        h = blk(h)
        outs.append(h)
    return outs


def test_vit_taps_equal_manual_block_outputs_without_prefix():
    m = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = manual_block_outputs(m, x)
        got = token_features(m, x)
    assert len(got) == 3
    for r, g in zip(ref, got, strict=True):
        assert g.shape == (2, 16, 48)
        torch.testing.assert_close(g, r[:, 1:], rtol=0, atol=0)


def test_taps_equal_timm_forward_intermediates_nchw():
    m = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = m.forward_intermediates(x, indices=[0, 2], output_fmt="NCHW", intermediates_only=True)
        got = token_features(m, x, [0, 2])
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r.flatten(2).transpose(1, 2))


def test_register_tokens_are_dropped():
    m = tiny_vit(reg_tokens=4)
    assert m.num_prefix_tokens == 5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = manual_block_outputs(m, x)[-1]
        (got,) = token_features(m, x, "last")
    assert got.shape == (1, 16, 48)
    torch.testing.assert_close(got, ref[:, 5:], rtol=0, atol=0)
    # the prefix really is at the front: the dropped rows are the CLS + register tokens
    assert not torch.allclose(got, ref[:, :16])


def test_distilled_deit_drops_cls_and_distillation_token():
    m = timm.create_model(
        "deit_tiny_distilled_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=48,
        num_heads=2,
        num_classes=5,
    ).eval()
    assert m.num_prefix_tokens == 2
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = manual_block_outputs(m, x)[-1]
        (got,) = token_features(m, x, -1)
    torch.testing.assert_close(got, ref[:, 2:], rtol=0, atol=0)


def test_cait_taps_are_the_self_attention_blocks():
    m = timm.create_model(
        "cait_xxs24_224",
        img_size=32,
        patch_size=8,
        depth=3,
        depth_token_only=2,
        embed_dim=48,
        num_heads=2,
        num_classes=5,
    ).eval()
    assert num_tap_layers(m) == 3  # not 3 + 2 class-attention blocks
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = m.pos_drop(m.patch_embed(x) + m.pos_embed)
        ref = []
        for blk in m.blocks:
            h = blk(h)
            ref.append(h)
        got = token_features(m, x)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == (2, 16, 48)
        torch.testing.assert_close(g, r, rtol=0, atol=0)


def test_swin_stages_are_flattened_to_tokens():
    m = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=56,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 2),
        window_size=7,
        num_classes=5,
    ).eval()
    assert num_tap_layers(m) == 2
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        h = m.patch_embed(x)  # NHWC inside Swin
        s0 = m.layers[0](h)
        s1 = m.layers[1](s0)
        got = token_features(m, x)
    assert got[0].shape == (2, 14 * 14, 16) and got[1].shape == (2, 7 * 7, 32)
    torch.testing.assert_close(got[0], s0.reshape(2, -1, 16))
    torch.testing.assert_close(got[1], s1.reshape(2, -1, 32))
    assert feature_grid(m) == (7, 7)


def test_norm_option_applies_the_final_norm():
    m = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (raw,) = token_features(m, x, "last")
        (normed,) = token_features(m, x, "last", norm=True)
    torch.testing.assert_close(normed, m.norm(raw))


def test_requested_order_is_kept_and_only_needed_blocks_run():
    m = tiny_vit(depth=4)
    calls = []
    handles = [
        blk.register_forward_hook(lambda mod, i, o, k=k: calls.append(k)) for k, blk in enumerate(m.blocks)
    ]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = token_features(m, x, [1, 0])
    for h in handles:
        h.remove()
    with torch.no_grad():
        ref = manual_block_outputs(m, x)
    assert calls == [0, 1]  # stopped early: blocks 2 and 3 never ran
    torch.testing.assert_close(a, ref[1][:, 1:])
    torch.testing.assert_close(b, ref[0][:, 1:])


def test_taps_are_differentiable():
    m = tiny_vit().train()
    x = torch.randn(2, 3, 32, 32)
    (f,) = token_features(m, x, "last")
    f.square().mean().backward()
    assert m.blocks[-1].mlp.fc2.weight.grad is not None
    assert m.patch_embed.proj.weight.grad.abs().sum() > 0


def test_token_taps_object():
    m = tiny_vit()
    taps = TokenTaps(m, "0,2")
    assert taps.layers == [0, 2] and taps.num_prefix_tokens == 1
    named = taps.named(torch.randn(1, 3, 32, 32))
    assert sorted(named) == [0, 2]
    assert feature_grid(m) == (4, 4)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [0, 1, 2]),
        ("all", [0, 1, 2]),
        ("last", [2]),
        (-1, [2]),
        ("0, 2", [0, 2]),
        ([2, -1, 0], [2, 0]),
        (1, [1]),
    ],
)
def test_resolve_layers(spec, expected):
    assert resolve_layers(tiny_vit(), spec) == expected


@pytest.mark.parametrize("spec", [3, -4, "0,7", "first", "", []])
def test_bad_layer_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        resolve_layers(tiny_vit(), spec)


@pytest.mark.parametrize("spec", [[1.5], 1.5, [True], True, [0, "1"]])
def test_layer_indices_that_are_not_integers_are_user_errors(spec):
    # a float or a bool is not truncated to some layer: the numbers would belong to another layer
    with pytest.raises(UserError, match="integer"):
        resolve_layers(tiny_vit(), spec)


def test_out_of_range_message_names_the_range():
    with pytest.raises(UserError, match=r"valid: 0\.\.2"):
        resolve_layers(tiny_vit(), 5)


def test_untappable_models_get_clear_errors():
    check_tappable(timm.create_model("resnet18", num_classes=5))  # a CNN: its stages are the layers
    with pytest.raises(UserError, match="cannot be tapped"):
        check_tappable(torch.nn.Linear(3, 3))
    with pytest.raises(UserError, match="forward_intermediates"):
        check_tappable(torch.nn.Linear(3, 3))
