"""create_lift / create_widelast / create_model applied to timm ViTs."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch

from vitdistill.errors import UserError
from vitdistill.models import (
    LiftVisionTransformer,
    WideEntryBlock,
    WideLastVisionTransformer,
    block_widths,
    create_lift,
    create_model,
    create_widelast,
)

TINY = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=10)


@pytest.fixture
def base_file(tmp_path):
    """A 'pretrained' tiny ViT saved to a local safetensors file, and the model it came from."""
    base = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    path = tmp_path / "base.safetensors"
    safetensors.torch.save_file(base.state_dict(), str(path))
    return base, str(path)


def _inter(model, x, indices):
    with torch.no_grad():
        return model.forward_intermediates(x, indices=indices, output_fmt="NLC", intermediates_only=True)


def test_lift_from_pretrained_base_copies_every_backbone_weight(base_file):
    base, path = base_file
    m = create_lift(
        "vit_tiny_patch16_224", lift_dim=192, pretrained=True, pretrained_cfg_overlay=dict(file=path), **TINY
    ).eval()
    assert isinstance(m, LiftVisionTransformer) and m.lift_dim == 192 and m.embed_dim == 64
    sd, bsd = m.state_dict(), base.state_dict()
    for k, v in bsd.items():
        if k.startswith(("norm.", "head.")):
            continue
        assert torch.equal(sd[k], v), k
    assert torch.equal(m.patch_embed.proj.weight, base.patch_embed.proj.weight)
    assert torch.equal(m.blocks[2].mlp.fc1.weight, base.blocks[2].mlp.fc1.weight)
    assert m.norm.proj.weight.shape == (192, 64) and m.head.weight.shape == (10, 192)
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(_inter(m, x, None), _inter(base, x, None), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        assert m.forward_features(x).shape == (2, 65, 192) and m(x).shape == (2, 10)
    assert block_widths(m) == [64] * 4
    assert m.pretrained_cfg["input_size"] == (3, 32, 32)
    assert timm.data.resolve_model_data_config(m)["input_size"] == (3, 32, 32)
    assert m.build_spec["builder"] == "create_lift" and m.build_spec["lift_dim"] == 192


def test_widelast_from_pretrained_base(base_file):
    base, path = base_file
    m = create_widelast(
        "vit_tiny_patch16_224",
        wide_dim=128,
        num_wide=2,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=path),
        **TINY,
    ).eval()
    assert isinstance(m, WideLastVisionTransformer) and m.first_wide == 2
    assert isinstance(m.blocks[2], WideEntryBlock) and m.blocks[2].entry.proj.weight.shape == (128, 64)
    assert [b.attn.num_heads for b in m.blocks] == [2, 2, 4, 4]  # head dim 32 kept
    assert block_widths(m) == [64, 64, 128, 128]
    for i in (0, 1):
        for k, v in base.blocks[i].state_dict().items():
            assert torch.equal(m.blocks[i].state_dict()[k], v)
    assert torch.equal(m.pos_embed, base.pos_embed) and torch.equal(m.cls_token, base.cls_token)
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(_inter(m, x, [0, 1]), _inter(base, x, [0, 1]), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        assert m(x).shape == (2, 10)
    assert m.head.in_features == 128 and m.norm.normalized_shape == (128,)


def test_builders_without_pretrained_and_vit_small_lifted_to_768():
    m = create_lift("vit_small_patch16_224", 768, img_size=32, depth=2)
    assert m.embed_dim == 384 and m.lift_dim == 768 and m.head.in_features == 768
    assert m.blocks[0].attn.num_heads == 6
    w = create_widelast("vit_tiny_patch16_224", 64 * 3, num_wide=4, **TINY)  # every block wide
    assert isinstance(w.blocks[0], WideEntryBlock) and block_widths(w) == [192] * 4
    w(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(
    "name", ["deit3_small_patch16_224", "vit_medium_patch16_reg4_gap_256", "vit_small_patch14_reg4_dinov2"]
)
def test_builders_on_layer_scale_and_register_token_variants(name, tmp_path):
    # DeiT-III (layer scale, no_embed_class), register tokens with avg pooling + fc_norm, DINOv2-style
    kw = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
    base = timm.create_model(name, **kw).eval()
    path = tmp_path / "base.safetensors"
    safetensors.torch.save_file(base.state_dict(), str(path))
    m = create_lift(name, 96, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw).eval()
    assert m.num_prefix_tokens == base.num_prefix_tokens and m.no_embed_class == base.no_embed_class
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(_inter(m, x, None), _inter(base, x, None), strict=True):
        torch.testing.assert_close(a, b)
    w = create_widelast(name, 128, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kw).eval()
    torch.testing.assert_close(_inter(w, x, [0])[0], _inter(base, x, [0])[0])
    with torch.no_grad():
        n = base.num_classes  # 0 for DINOv2-style backbones: features come out
        assert m(x).shape == (1, n or 96) and w(x).shape == (1, n or 128)


def test_unknown_and_unsupported_models_are_user_errors():
    with pytest.raises(UserError, match="deit_tiny_patch16_224"):
        create_lift("deit_tiny_pach16_224", 384)
    with pytest.raises(UserError, match="not a plain timm VisionTransformer"):
        create_lift("resnet18", 384)
    with pytest.raises(UserError, match="VisionTransformerDistilled"):
        create_widelast("deit_tiny_distilled_patch16_224", 384, img_size=32, depth=2)
    with pytest.raises(UserError, match="head dim"):
        create_widelast("vit_tiny_patch16_224", 100, **TINY)


def build_model(source, **kwargs):
    return create_model(source, **kwargs)[0]


def test_build_model_specs():
    m = build_model("lift:vit_tiny_patch16_224:96", **TINY)
    assert isinstance(m, LiftVisionTransformer) and m.lift_dim == 96
    m = build_model("widelast:vit_tiny_patch16_224:128:2", **TINY)
    assert isinstance(m, WideLastVisionTransformer) and m.num_wide == 2
    assert type(build_model("vit_tiny_patch16_224", **TINY)).__name__ == "VisionTransformer"
    for bad in ("lift:vit_tiny_patch16_224", "lift:vit_tiny_patch16_224:x", "widelast:a:1:2:3", ""):
        with pytest.raises(UserError):
            build_model(bad, **TINY)
    with pytest.raises(UserError, match="cannot build"):
        build_model("vit_tiny_patch16_224", no_such_arg=3)


def test_build_spec_round_trip(tmp_path):
    import json

    m = create_widelast("vit_tiny_patch16_224", 128, num_wide=2, **TINY).eval()
    spec = json.loads(json.dumps(m.build_spec))  # must survive a JSON/YAML config
    again = build_model(spec).eval()
    assert type(again) is type(m) and again.num_wide == 2
    again.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), m(x))
    lift = build_model(create_lift("vit_tiny_patch16_224", 96, **TINY).build_spec, num_classes=3)
    assert lift.lift_dim == 96 and lift.head.out_features == 3
    with pytest.raises(UserError):
        build_model({"builder": "nope"})
