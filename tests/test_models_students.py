"""Lift, WideLast and the uniform control as registered timm models."""

from __future__ import annotations

import pytest
import safetensors.torch
import timm
import torch
from timm.models.vision_transformer import Block
from timm.optim import create_optimizer_v2

import vitdistill.models  # registers the students
from vitdistill.errors import UserError
from vitdistill.models import (
    LiftVisionTransformer,
    TokenProjector,
    WideEntryBlock,
    WideLastVisionTransformer,
    count_macs,
    count_params,
    token_features,
)

LIFT = "deit_tiny_lift_patch16_224"
WIDE = "deit_tiny_widelast_patch16_224"
UNI = "deit_tiny_uniform219_patch16_224"
SMALL = dict(img_size=32, num_classes=10)  # 2x2 patch grid: full-width blocks, tiny compute


def _meta(name, **kw):
    return timm.create_model(name, device="meta", **kw)


def test_registered_with_timm():
    for name in (LIFT, WIDE, UNI):
        assert timm.is_model(name)
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.875
        assert cfg.mean == timm.data.IMAGENET_DEFAULT_MEAN and cfg.std == timm.data.IMAGENET_DEFAULT_STD
        assert not cfg.url and not cfg.hf_hub_id


def test_exact_parameter_counts():
    lift = _meta(LIFT)
    assert count_params(lift) == 5_983_528
    backbone = sum(p.numel() for n, p in lift.named_parameters() if not n.startswith(("norm.", "head.")))
    assert backbone == 5_524_032
    assert sum(p.numel() for n, p in lift.named_parameters() if n.startswith("norm.")) == 73_728 + 768
    assert sum(p.numel() for p in lift.head.parameters()) == 385_000
    assert count_params(_meta(WIDE)) == 7_313_896
    uni = _meta(UNI)
    assert count_params(uni) == 7_372_759
    assert uni.embed_dim == 219 and len(uni.blocks) == 12
    assert all(b.attn.num_heads == 3 and b.mlp.fc1.out_features == 876 for b in uni.blocks)


def test_widelast_macs_match_published():
    macs = count_macs(_meta(WIDE))
    assert abs(macs - 1.545e9) / 1.545e9 < 0.01
    # Lift adds ~1.2% MACs over DeiT-Tiny
    ratio = count_macs(_meta(LIFT)) / count_macs(_meta("deit_tiny_patch16_224"))
    assert 1.005 < ratio < 1.02


def test_lift_structure_and_forward():
    m = timm.create_model(LIFT, **SMALL).eval()
    assert isinstance(m, LiftVisionTransformer) and m.lift_dim == 384
    assert isinstance(m.norm, TokenProjector)
    names = {n for n, _ in m.named_parameters()}
    top = {n for n in names if not n.startswith(("blocks.", "patch_embed."))}
    # no leftover final norm / fc_norm / old head at 192
    assert top == {
        "cls_token",
        "pos_embed",
        "norm.proj.weight",
        "norm.norm.weight",
        "norm.norm.bias",
        "head.weight",
        "head.bias",
    }
    assert m.norm.proj.weight.shape == (384, 192) and m.norm.proj.bias is None
    assert m.head.in_features == 384 and m.num_features == m.head_hidden_size == 384
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (2, 1 + 4, 384)
        assert m.forward_head(feats, pre_logits=True).shape == (2, 384)
        logits = m(x)
        assert logits.shape == (2, 10)
        raw = m.forward_intermediates(x, indices=[11], output_fmt="NLC", intermediates_only=True)[0]
        lifted = m.forward_intermediates(
            x, indices=[11], norm=True, output_fmt="NLC", intermediates_only=True
        )[0]
        tapped = token_features(m, x, [11], norm=True)[0]
    # LN(W x) by hand on the patch tokens of the last block (the published LayerNorm's eps, 1e-5)
    w, g, b = m.norm.proj.weight, m.norm.norm.weight, m.norm.norm.bias
    y = raw.double() @ w.double().T
    mu = y.mean(-1, keepdim=True)
    var = ((y - mu) ** 2).mean(-1, keepdim=True)
    by_hand = (y - mu) / torch.sqrt(var + 1e-5) * g.double() + b.double()
    assert raw.shape == (2, 4, 192) and lifted.shape == (2, 4, 384)
    torch.testing.assert_close(lifted.double(), by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tapped, lifted)
    # classifier = head(mean of the lifted patch tokens), CLS excluded
    torch.testing.assert_close(logits, m.head(lifted.mean(1)), rtol=1e-5, atol=1e-5)


def test_widelast_structure_and_forward():
    m = timm.create_model(WIDE, **SMALL).eval()
    assert isinstance(m, WideLastVisionTransformer)
    assert (m.wide_dim, m.num_wide, m.first_wide) == (384, 1, 11)
    assert len(m.blocks) == 12
    assert all(type(b) is Block and b.norm1.normalized_shape == (192,) for b in m.blocks[:11])
    last = m.blocks[11]
    assert isinstance(last, WideEntryBlock)
    assert last.entry.proj.weight.shape == (384, 192) and last.entry.proj.bias is None
    assert last.entry.norm.normalized_shape == (384,)
    assert last.attn.num_heads == 6 and last.attn.head_dim == 64 and last.mlp.fc1.out_features == 1536
    assert last.norm1.eps == m.blocks[0].norm1.eps
    assert m.norm.normalized_shape == (384,) and m.head.in_features == 384
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        inter = m.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        assert [t.shape[-1] for t in inter] == [192] * 11 + [384]
        x10 = m.forward_intermediates(
            x, indices=[10], output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True
        )[0]
        seq10 = torch.cat([x10[1], x10[0]], dim=1)  # prefix + patch tokens = block 10 output
        expect = Block.forward(last, last.entry(seq10))
        torch.testing.assert_close(inter[11], expect[:, 1:])
        logits = m(x)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, m.head(m.norm(expect)[:, 0]), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="wide"):
        m.forward_intermediates(x, indices=[5], norm=True)
    with torch.no_grad():
        normed = m.forward_intermediates(
            x, indices=[11], norm=True, output_fmt="NLC", intermediates_only=True
        )[0]
    torch.testing.assert_close(normed, m.norm(expect)[:, 1:])


@pytest.mark.parametrize("name", [LIFT, WIDE])
def test_num_classes_changes(name):
    m = timm.create_model(name, img_size=32, num_classes=7)
    assert m.head.out_features == 7 and m(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    m.reset_classifier(3)
    assert m.head.in_features == m.num_features == 384 and m.head.out_features == 3
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    m.reset_classifier(0)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 384)
    assert m.get_classifier is not None


@pytest.mark.parametrize("name", [LIFT, WIDE, UNI])
def test_safetensors_round_trip_through_create_model(name, tmp_path):
    m = timm.create_model(name, **SMALL).eval()
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(m.state_dict(), str(path))
    again = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **SMALL
    ).eval()
    assert type(again) is type(m)
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), again(x))


def test_pretrained_without_a_file_is_a_user_error():
    with pytest.raises(UserError, match="pretrained_cfg_overlay"):
        timm.create_model(LIFT, pretrained=True)


def test_gradients_reach_the_new_projections():
    lift = timm.create_model(LIFT, **SMALL)
    wide = timm.create_model(WIDE, **SMALL)
    x = torch.randn(2, 3, 32, 32)
    lifted = token_features(lift, x, [11], norm=True)[0]
    (lifted.pow(2).mean() + lift(x).logsumexp(-1).mean()).backward()
    assert lift.norm.proj.weight.grad is not None and lift.norm.proj.weight.grad.abs().sum() > 0
    assert lift.norm.norm.weight.grad.abs().sum() > 0
    assert lift.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    wide(x).logsumexp(-1).mean().backward()
    assert wide.blocks[11].entry.proj.weight.grad.abs().sum() > 0
    assert wide.blocks[11].entry.norm.weight.grad.abs().sum() > 0
    assert wide.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [LIFT, WIDE])
def test_no_weight_decay_and_optimizer_groups(name):
    m = timm.create_model(name, **SMALL)
    assert {"pos_embed", "cls_token"} <= m.no_weight_decay()
    opt = create_optimizer_v2(m, "adamw", lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    no_decay = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    assert {
        "pos_embed",
        "cls_token",
        "head.bias",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.bias",
    } <= no_decay
    assert {"head.weight", "blocks.0.attn.qkv.weight"} <= decay
    if name == LIFT:
        assert {"norm.norm.weight", "norm.norm.bias"} <= no_decay
        assert "norm.proj.weight" in decay
    else:
        assert {
            "blocks.11.entry.norm.weight",
            "blocks.11.entry.norm.bias",
            "norm.weight",
            "norm.bias",
        } <= no_decay
        assert "blocks.11.entry.proj.weight" in decay
    # every 1-D tensor is exempt, every matrix decays
    assert all(
        p.ndim <= 1 or names[id(p)] in ("pos_embed", "cls_token")
        for p in m.parameters()
        if names[id(p)] in no_decay
    )
    assert all(p.ndim >= 2 for p in m.parameters() if names[id(p)] in decay)


def test_invalid_remedy_arguments_are_user_errors():
    with pytest.raises(UserError):
        timm.create_model(WIDE, wide_dim=100, device="meta")  # not a multiple of head dim 64
    with pytest.raises(UserError):
        timm.create_model(WIDE, num_wide=13, device="meta")
    with pytest.raises(UserError):
        timm.create_model(LIFT, global_pool="map", device="meta")


def test_widelast_num_wide_two_keeps_indices():
    m = timm.create_model(WIDE, num_wide=2, device="meta")
    assert len(m.blocks) == 12 and isinstance(m.blocks[10], WideEntryBlock)
    assert type(m.blocks[11]) is Block and m.blocks[11].attn.num_heads == 6
    assert m.block_widths() == [192] * 10 + [384] * 2
    assert [f["num_chs"] for f in m.feature_info][-3:] == [192, 384, 384]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize(
    "name", list(vitdistill.models.STUDENT_MODELS) + ["widelast:vit_tiny_patch16_224:256:2"]
)
def test_students_script_and_export_like_eager(name):
    """timm's model battery: TorchScript and torch.export give the eager logits (eval mode)."""
    kw = dict(img_size=32, patch_size=8, num_classes=5)
    model = vitdistill.models.create_model(name, **kw)[0].eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), ref)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), ref)


def test_wide_entry_block_is_timm_block_on_projected_tokens():
    """The written-out forward of WideEntryBlock equals timm's Block.forward after the entry projection."""
    blk = WideEntryBlock(in_dim=16, dim=32, num_heads=2, init_values=0.5).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), Block.forward(blk, blk.entry(x)))


SCHEDULE_MODELS = {
    "deit_tiny_widelast_patch16_224": ([384], [6]),
    "deit_tiny_widelast_fixed_step_patch16_224": ([384], [3]),
    "deit_tiny_widelast_heads_linear_patch16_224": ([256, 320, 384], [4, 5, 6]),
    "deit_tiny_widelast_fixed_linear_patch16_224": ([240, 312, 384], [3, 3, 3]),
}


def _analytic_macs(m):
    """Matrix-product MACs per image by hand: linears on every token (head on one), patch conv,
    and attention's QK^T and AV (2 * N^2 * width per block)."""
    n = m.patch_embed.num_patches + m.num_prefix_tokens
    macs = sum(
        (1 if mod is m.head else n) * mod.in_features * mod.out_features
        for mod in m.modules()
        if isinstance(mod, torch.nn.Linear)
    )
    pe = m.patch_embed.proj
    macs += m.patch_embed.num_patches * pe.weight.numel()
    return macs + sum(2 * n * n * b.attn.num_heads * b.attn.head_dim for b in m.blocks)


@pytest.mark.parametrize("name", SCHEDULE_MODELS)
def test_widelast_schedules_widths_heads_and_costs(name):
    widths, heads = SCHEDULE_MODELS[name]
    m = _meta(name)
    k = len(widths)
    assert m.block_widths() == [192] * (12 - k) + widths
    assert [b.attn.num_heads for b in m.blocks] == [3] * (12 - k) + heads
    assert [b.mlp.fc1.out_features for b in m.blocks[-k:]] == [4 * w for w in widths]
    # every width change starts with an entry projection from the previous width
    ins = [192] + widths[:-1]
    assert [(b.entry.proj.in_features, b.entry.proj.out_features) for b in m.blocks[-k:]] == list(
        zip(ins, widths, strict=True)
    )
    assert m.norm.normalized_shape == (384,) and m.head.in_features == 384
    assert count_macs(m) == _analytic_macs(m)


def test_widelast_schedule_through_the_builder_and_the_train_config():
    from vitdistill.distill import config

    kw = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=5)
    m = vitdistill.models.create_widelast(
        "vit_tiny_patch16_224", 96, num_wide=3, schedule="fixed_linear", **kw
    )
    assert m.block_widths() == [48, 48, 72, 96] and [b.attn.num_heads for b in m.blocks] == [3] * 4
    again = vitdistill.models.create_model(m.build_spec)[0]
    assert again.block_widths() == m.block_widths()
    cfg = config.resolve(
        {
            "model": {
                "name": "vit_tiny_patch16_224",
                "remedy": "widelast",
                "width": 96,
                "num_wide": 3,
                "widelast_schedule": "heads_linear",
                "kwargs": kw,
            }
        }
    )
    student = vitdistill.models.create_model(cfg["model"], num_classes=5)[0]
    assert student.block_widths() == [48, 64, 80, 96] and [b.attn.num_heads for b in student.blocks] == [
        3,
        4,
        5,
        6,
    ]
    with pytest.raises(UserError, match="widelast_schedule"):
        config.resolve(
            {"model.widelast_schedule": "fixed_step"} and {"model": {"widelast_schedule": "fixed_step"}}
        )
