"""The paper students initialise and compute as the published training code's models.

Expected statistics are derived here from first principles (PyTorch's default Linear init is
kaiming-uniform with a = sqrt(5)), and the forward passes are checked against re-implementations
written in this file from the published models' description (the published Lift wrapper: a
DeiT-Tiny's last block output -> Linear(192 -> 384, no bias) -> nn.LayerNorm(384) (eps 1e-5) ->
mean over patch tokens -> Linear head; the published WideLast: blocks at 192, then
LN(Linear(192 -> 384, no bias)) on every token and a pre-norm block at 384 with 6 heads, final
LayerNorm(384, eps 1e-6), head on the CLS token).
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import vitdistill.models  # noqa: F401  (registers the students)
from vitdistill.distill import config as C
from vitdistill.errors import UserError
from vitdistill.models import as_spec, create_lift, create_model, create_widelast, timm_architecture

WIDELAST = [
    "deit_tiny_widelast_patch16_224",
    "deit_tiny_widelast_fixed_step_patch16_224",
    "deit_tiny_widelast_heads_linear_patch16_224",
    "deit_tiny_widelast_fixed_linear_patch16_224",
]
SMALL = dict(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2, num_classes=10)


def _uniform_bound(fan_in: int) -> float:
    # kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + 5)), std = gain / sqrt(fan_in),
    # bound = sqrt(3) * std = 1 / sqrt(fan_in); the bias is uniform in the same +-1/sqrt(fan_in)
    return math.sqrt(3.0) * math.sqrt(2.0 / 6.0) / math.sqrt(fan_in)


def _assert_pytorch_linear_default(t: torch.Tensor, fan_in: int, rtol: float) -> None:
    bound = _uniform_bound(fan_in)
    t = t.detach().double().flatten()
    assert t.abs().max() <= bound  # a uniform's support, never a normal's tails
    assert t.abs().max() > 0.98 * bound  # ... and filled to its edge
    assert float(t.std()) == pytest.approx(bound / math.sqrt(3.0), rel=rtol)  # 0.0417 / 0.0295 here
    assert abs(float(t.mean())) < 4 * bound / math.sqrt(3.0) / math.sqrt(t.numel())


def _assert_timm_linear(lin: torch.nn.Linear) -> None:
    assert float(lin.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    assert lin.bias is None or not lin.bias.any()


def test_registered_lift_initialises_as_published():
    torch.manual_seed(0)
    m = timm.create_model("deit_tiny_lift_patch16_224")
    proj, ln, head = m.norm.proj, m.norm.norm, m.head
    assert (m.init, ln.eps, proj.bias) == ("published", 1e-5, None)
    assert torch.equal(ln.weight, torch.ones(384)) and torch.equal(ln.bias, torch.zeros(384))
    _assert_pytorch_linear_default(proj.weight, 192, rtol=0.02)  # 73,728 draws
    _assert_pytorch_linear_default(head.weight, 384, rtol=0.02)  # 384,000 draws
    _assert_pytorch_linear_default(head.bias, 384, rtol=0.12)  # 1,000 draws
    assert head.bias.ne(0).all()
    # the backbone is timm's DeiT-Tiny initialisation, as the published wrapper's base model
    _assert_timm_linear(m.blocks[0].attn.qkv)
    _assert_timm_linear(m.blocks[11].mlp.fc2)
    assert float(m.cls_token.detach().std()) < 1e-5 and float(m.pos_embed.detach().std()) == pytest.approx(
        0.02, rel=0.05
    )


def test_registered_lift_with_timm_init():
    m = timm.create_model("deit_tiny_lift_patch16_224", init="timm")
    assert (m.init, m.norm.norm.eps) == ("timm", 1e-6)
    _assert_timm_linear(m.norm.proj)
    _assert_timm_linear(m.head)
    with pytest.raises(UserError, match="init must be one of"):
        timm.create_model("deit_tiny_lift_patch16_224", init="jax")


def test_registered_widelast_students_draw_cls_token_from_trunc_normal_002():
    draws = []
    for seed in range(3):
        for name in WIDELAST:
            torch.manual_seed(seed)
            m = timm.create_model(name)
            assert m.init == "published"
            draws.append(m.cls_token.detach().flatten())
            _assert_timm_linear(m.blocks[-1].attn.qkv)  # everything else is timm's ViT init
            _assert_timm_linear(m.head)
            assert float(m.pos_embed.detach().std()) == pytest.approx(0.02, rel=0.05)
    x = torch.cat(draws).double()  # 2,304 draws
    assert x.abs().max() <= 2.0  # nn.init.trunc_normal_'s default bounds [-2, 2]
    assert float(x.std()) == pytest.approx(0.02, rel=0.06)
    assert abs(float(x.mean())) < 4 * 0.02 / math.sqrt(x.numel())
    assert float(timm.create_model(WIDELAST[0], init="timm").cls_token.detach().std()) < 1e-5  # timm: 1e-6


def test_uniform219_is_timms_deit_tiny_at_width_219():
    """The published control is ``timm.create_model('deit_tiny_patch16_224', embed_dim=219, num_heads=3)``."""
    sds = []
    for build in (
        lambda: timm.create_model("deit_tiny_uniform219_patch16_224"),
        lambda: timm.create_model("deit_tiny_uniform219_patch16_224", init="timm"),
        lambda: timm.create_model("deit_tiny_patch16_224", embed_dim=219, num_heads=3, drop_rate=0.0),
    ):
        torch.manual_seed(3)
        sds.append(build().state_dict())
    for sd in sds[1:]:
        assert sd.keys() == sds[0].keys()
        assert all(torch.equal(sd[k], sds[0][k]) for k in sd)


def test_builders_keep_timm_conventions_and_switch_to_published():
    t = create_lift("vit_tiny_patch16_224", 48, **SMALL)
    assert (t.init, t.norm.norm.eps) == ("timm", 1e-6) and "init" not in t.build_spec["kwargs"]
    _assert_timm_linear(t.head)
    p = create_lift("vit_tiny_patch16_224", 48, init="published", **SMALL)
    assert (p.init, p.norm.norm.eps) == ("published", 1e-5) and p.head.bias.ne(0).all()
    _assert_pytorch_linear_default(p.norm.proj.weight, 24, rtol=0.15)
    # the build spec records it: the spec, the rebuild and timm's export architecture agree
    spec = as_spec(p.build_spec)
    assert spec["kwargs"]["init"] == "published"
    assert create_model(spec)[0].norm.norm.eps == 1e-5
    arch, args = timm_architecture(spec)
    assert timm.create_model(arch, **args).norm.norm.eps == 1e-5
    w = create_widelast("vit_tiny_patch16_224", 48, init="published", **SMALL)
    assert float(w.cls_token.detach().abs().max()) > 1e-3 and w.build_spec["kwargs"]["init"] == "published"
    assert float(create_widelast("vit_tiny_patch16_224", 48, **SMALL).cls_token.detach().abs().max()) < 1e-4
    with pytest.raises(UserError, match="init must be one of"):
        create_widelast("vit_tiny_patch16_224", 48, init="pytorch", **SMALL)


def test_new_descriptions_record_published_and_old_specs_rebuild_as_built():
    new = as_spec("deit_tiny_lift_patch16_224", num_classes=10)
    assert new["kwargs"] == {"init": "published"}
    assert create_model(new)[0].norm.norm.eps == 1e-5
    arch, args = timm_architecture(new)  # what an export's config.json records
    assert (arch, args) == ("deit_tiny_lift_patch16_224", {"init": "published"})
    # a spec saved before the choice existed was built with timm's conventions and still is
    old = {k: v for k, v in new.items() if k != "kwargs"} | {"kwargs": {}}
    assert as_spec(old)["kwargs"] == {}
    assert create_model(old)[0].norm.norm.eps == 1e-6
    assert timm_architecture(old)[1] == {"init": "timm"}
    # plain timm models and remedies at timm's default record nothing: their specs are unchanged
    assert as_spec("deit_tiny_patch16_224")["kwargs"] == {}
    assert as_spec("deit_tiny_uniform219_patch16_224")["kwargs"] == {}
    assert as_spec("lift:deit_tiny_patch16_224:384")["kwargs"] == {}


@pytest.mark.parametrize(
    ("model", "init", "kwargs", "want"),
    [
        ({"name": "deit_tiny_lift_patch16_224"}, "auto", {}, {"init": "published"}),
        ({"name": "deit_tiny_lift_patch16_224"}, "timm", {}, {}),
        ({"name": "deit_tiny_widelast_patch16_224"}, "auto", {"init": "timm"}, {}),
        ({"name": "deit_tiny_patch16_224", "remedy": "lift", "width": 384}, "auto", {}, {}),
        (
            {"name": "deit_tiny_patch16_224", "remedy": "lift", "width": 384},
            "published",
            {},
            {"init": "published"},
        ),
        ({"name": "deit_tiny_patch16_224"}, "published", {}, {}),  # timm's own model: one convention
    ],
)
def test_config_model_init_key(model, init, kwargs, want):
    cfg = C.resolve({"model": model | {"init": init, "kwargs": kwargs}})
    assert as_spec(cfg["model"])["kwargs"] == want


@given(st.text(max_size=12))
@settings(max_examples=60, deadline=None)
def test_model_init_accepts_its_three_values_only(text):
    for over in ([f"model.init={text}"], [("model.init", text)]):
        try:
            got = C.resolve(None, over)["model"]["init"]
        except UserError as e:
            assert "model.init" in str(e)
            continue
        assert got in ("auto", "published", "timm")


def test_config_model_init_errors():
    with pytest.raises(UserError, match="model.init"):
        C.resolve({"model": {"name": "deit_tiny_lift_patch16_224", "init": "jax"}})
    cfg = C.resolve(
        {"model": {"name": "deit_tiny_lift_patch16_224", "init": "timm", "kwargs": {"init": "published"}}}
    )
    with pytest.raises(UserError, match="disagree"):
        as_spec(cfg["model"])


# ------------------------------------------------------------------ forward passes as published
def _published_lift_logits(lift: torch.nn.Module, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The published Lift wrapper's forward on the same weights, written from its description."""
    base = timm.create_model("deit_tiny_patch16_224").double().eval()
    sd = {k: v for k, v in lift.state_dict().items() if not k.startswith(("norm.", "head."))}
    assert not base.load_state_dict(sd, strict=False).unexpected_keys
    _, blocks = base.forward_intermediates(x)  # block outputs, patch tokens as NCHW, no final norm
    b, c, h, w = blocks[-1].shape
    lifted = blocks[-1].permute(0, 2, 3, 1) @ lift.norm.proj.weight.T  # (B, H, W, 384)
    lifted = F.layer_norm(lifted, (384,), lift.norm.norm.weight, lift.norm.norm.bias, eps)
    return lifted.mean(dim=(1, 2)) @ lift.head.weight.T + lift.head.bias


@torch.no_grad()
def test_lift_logits_equal_the_published_wrappers():
    torch.manual_seed(0)
    lift = timm.create_model("deit_tiny_lift_patch16_224").double().eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    ours = lift(x)
    torch.testing.assert_close(ours, _published_lift_logits(lift, x, eps=1e-5), rtol=0, atol=1e-12)
    # the check can fail: timm's eps (1e-6) moves the logits far beyond float64 rounding
    assert float((ours - _published_lift_logits(lift, x, eps=1e-6)).abs().max()) > 1e-9


def _published_block(x, p, heads, eps=1e-6):
    """A pre-norm transformer block from its parameters ``p`` (dict of tensors by timm's names)."""
    b, n, c = x.shape
    y = F.layer_norm(x, (c,), p["norm1.weight"], p["norm1.bias"], eps)
    qkv = (y @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]).reshape(b, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
    x = x + ((attn @ v).transpose(1, 2).reshape(b, n, c) @ p["attn.proj.weight"].T + p["attn.proj.bias"])
    y = F.layer_norm(x, (c,), p["norm2.weight"], p["norm2.bias"], eps)
    y = F.gelu(y @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
    return x + (y @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"])


@torch.no_grad()
def test_widelast_logits_equal_the_published_models():
    torch.manual_seed(0)
    m = timm.create_model("deit_tiny_widelast_patch16_224").double().eval()
    sd = m.state_dict()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    t = torch.cat([sd["cls_token"].expand(2, -1, -1), t.flatten(2).transpose(1, 2)], 1) + sd["pos_embed"]
    for i in range(12):
        p = {k[len(f"blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        if i == 11:  # the published proj_in + proj_norm before the wide block
            t = F.layer_norm(
                t @ p["entry.proj.weight"].T, (384,), p["entry.norm.weight"], p["entry.norm.bias"], 1e-6
            )
        t = _published_block(t, p, 3 if i < 11 else 6)
    t = F.layer_norm(t, (384,), sd["norm.weight"], sd["norm.bias"], 1e-6)
    torch.testing.assert_close(m(x), t[:, 0] @ sd["head.weight"].T + sd["head.bias"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("recorded", [True, False], ids=["new-spec", "spec-saved-before-init"])
def test_runs_and_exports_rebuild_the_init_they_were_built_with(tmp_path, recorded):
    from vitdistill.distill import checkpoint as ckpt_mod
    from vitdistill.distill import export

    spec = as_spec("deit_tiny_lift_patch16_224", num_classes=10, kwargs=dict(img_size=32, patch_size=8))
    if not recorded:  # as every run saved before the choice existed: built with eps 1e-6
        spec["kwargs"].pop("init")
    eps = 1e-5 if recorded else 1e-6
    model = create_model(spec)[0].eval()
    assert model.norm.norm.eps == eps
    state = {"student": model.state_dict(), "model_spec": spec, "epoch": 1}
    ckpt_mod.save(tmp_path / "run" / "checkpoints" / "last.pt", state)
    export(tmp_path / "run", tmp_path / "export")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        for rebuilt in (
            create_model(tmp_path / "run")[0],
            create_model(tmp_path / "export")[0],
            timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True).eval(),
        ):
            assert rebuilt.norm.norm.eps == eps
            torch.testing.assert_close(rebuilt(x), ref, rtol=0, atol=0)
