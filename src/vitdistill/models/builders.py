"""Lift and WideLast applied to any timm ViT, and the plain timm models they start from.

:func:`create_lift` and :func:`create_widelast` build the base with timm, read its architecture
from the instance, build the student, copy every backbone weight and check that the copied
backbone computes what the base computes. :func:`create_base` is ``timm.create_model`` with
one-line errors, and pretrained weights that fail fast when the hub cannot be reached.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import timm
import torch
from timm.layers import LayerScale, PatchDropout, PatchEmbed
from timm.models.vision_transformer import Attention, Block, Mlp, VisionTransformer
from torch import nn

from vitdistill.checkpoints import check_values
from vitdistill.errors import UserError, closest_names
from vitdistill.models.conventions import CLS_TOKEN_STD, check_init
from vitdistill.models.hub import hub_fails_fast
from vitdistill.models.lift import LiftVisionTransformer
from vitdistill.models.widelast import WideLastVisionTransformer


def check_name(name: str, role: str = "model") -> None:
    """A UserError naming the closest timm models when ``name`` (``arch.tag`` allowed) is not one."""
    arch = name.split(".")[0]
    if timm.is_model(arch):
        return
    near = closest_names(arch, timm.list_models(), n=5)
    hint = f"; closest: {', '.join(near)}" if near else "; see timm.list_models()"
    what = "model" if role == "model" else f"{role} model"
    raise UserError(f"unknown {what} {name!r}{hint}")


def create_base(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with a one-line error (and close names) for unknown models; pretrained
    weights come from the local cache at once when the hub cannot be reached."""
    if not isinstance(name, str):
        raise UserError(f"unknown model {name!r}: a timm model name is a string")
    check_name(name)
    if "img_size" in kwargs:
        _image_size(kwargs["img_size"])
    _check_numbers(kwargs)
    try:
        with hub_fails_fast(name, pretrained, kwargs):
            try:
                model = timm.create_model(name, pretrained=pretrained, **kwargs)
            except TypeError as e:
                if "img_size" not in kwargs or "img_size" not in str(e):
                    raise
                model = timm.create_model(name, pretrained=pretrained, **_without_img_size(kwargs))
        if pretrained:  # timm read these weights itself: at least they must be finite
            own = model.state_dict()
            check_values(own, own, f"the pretrained weights of {name}")
        return _with_input_size(model, kwargs) if "img_size" in kwargs else model
    except (TypeError, AssertionError) as e:
        raise UserError(f"cannot build '{name}' with {kwargs}: {e}") from e


def _check_numbers(kwargs: dict) -> None:
    """Numbers timm takes on trust: finite, and drop rates probabilities (else training dies in a forward)."""
    for k, v in kwargs.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"model setting {k} must be a finite number (got {v})")
        probability = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
        if k.endswith(("drop_rate", "drop_path_rate")) and v is not None and not probability:
            raise UserError(f"model setting {k} is a probability in [0, 1] (got {v!r})")


def _image_size(size: Any) -> tuple[int, int]:
    """(H, W) of an ``img_size`` kwarg: a positive int or a pair of them; UserError otherwise."""
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, list | tuple) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise UserError(f"img_size must be a positive integer or a pair [H, W] of them (got {size!r})")
    return pair


def _without_img_size(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k != "img_size"}


def _with_input_size(model: nn.Module, kwargs: dict) -> nn.Module:
    """``img_size`` becomes the model's data config input size, which the eval transform and
    the taps read: timm keeps the registered size there even when the constructor took another
    one, and a constructor without ``img_size`` (a CNN takes any input size) never sees it."""
    h, w = _image_size(kwargs["img_size"])
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg["input_size"] = (int(cfg.get("input_size", (3,))[0]), int(h), int(w))
    cfg.pop("test_input_size", None)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def record_input_size(model: nn.Module) -> None:
    """Make ``pretrained_cfg['input_size']`` the size the model was built for (e.g. img_size=32)."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        h, w = pe.img_size
        cfg["input_size"] = (pe.proj.in_channels, int(h), int(w))
        model.pretrained_cfg = model.default_cfg = cfg


# Keyword arguments that do not change the architecture's shape; forwarded to the student as given.
_PASSTHROUGH = (
    "drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
    "weight_init",
    "fix_init",
    "device",
    "dtype",
)


def _norm_layer_of(norm: nn.Module):
    eps = getattr(norm, "eps", None)
    return functools.partial(type(norm), eps=eps) if eps is not None else type(norm)


def _act_layer_of(act: nn.Module):
    if isinstance(act, nn.GELU) and act.approximate != "none":
        return functools.partial(nn.GELU, approximate=act.approximate)
    return type(act)


def _vit_args(base: nn.Module, name: str = "") -> dict[str, Any]:
    """Constructor arguments that rebuild ``base`` (a plain timm ``VisionTransformer``) from the instance.

    Only the standard ViT family is accepted (pre-norm ``Block`` with timm ``Attention`` and ``Mlp``,
    ``PatchEmbed``); anything else raises ``UserError`` naming what is not supported.
    """
    label = name or type(base).__name__
    if type(base) is not VisionTransformer:
        raise UserError(
            f"'{label}' is a {type(base).__name__}, not a plain timm VisionTransformer; Lift/WideLast "
            f"builders support ViT/DeiT-style models (e.g. deit_tiny_patch16_224, vit_small_patch16_224)"
        )
    blk = base.blocks[0]
    parts = {
        "block": (blk, Block),
        "attention": (getattr(blk, "attn", None), Attention),
        "mlp": (getattr(blk, "mlp", None), Mlp),
        "patch embed": (base.patch_embed, PatchEmbed),
    }
    for what, (mod, cls) in parts.items():
        if type(mod) is not cls:
            raise UserError(
                f"'{label}' uses a {type(mod).__name__} {what}; the Lift/WideLast builders support "
                f"ViT variants built from timm's {cls.__name__} only"
            )
    if base.attn_pool is not None:
        raise UserError(f"'{label}' pools with attention (global_pool={base.global_pool!r}); not supported")
    if getattr(blk.attn, "gate", None) is not None or not isinstance(blk.attn.norm, nn.Identity):
        raise UserError(f"'{label}' uses gated or normalised attention; not supported by the builders")
    embed_dim = base.embed_dim
    pe = base.patch_embed
    args: dict[str, Any] = dict(
        img_size=tuple(pe.img_size) if pe.img_size is not None else None,
        patch_size=tuple(pe.patch_size),
        in_chans=pe.proj.in_channels,
        num_classes=base.num_classes,
        global_pool=base.global_pool,
        embed_dim=embed_dim,
        depth=len(base.blocks),
        num_heads=blk.attn.num_heads,
        mlp_ratio=blk.mlp.fc1.out_features / embed_dim,
        qkv_bias=blk.attn.qkv.bias is not None,
        qk_norm=not isinstance(blk.attn.q_norm, nn.Identity),
        scale_mlp_norm=not isinstance(blk.mlp.norm, nn.Identity),
        proj_bias=blk.attn.proj.bias is not None,
        # layer-scale values are copied with the weights; only its presence matters here
        init_values=1.0 if isinstance(blk.ls1, LayerScale) else None,
        class_token=base.has_class_token,
        pos_embed="learn" if base.pos_embed is not None else "none",
        no_embed_class=base.no_embed_class,
        reg_tokens=base.num_reg_tokens,
        pre_norm=not isinstance(base.norm_pre, nn.Identity),
        final_norm=not (isinstance(base.norm, nn.Identity) and isinstance(base.fc_norm, nn.Identity)),
        fc_norm=not isinstance(base.fc_norm, nn.Identity),
        pool_include_prefix=base.pool_include_prefix,
        dynamic_img_size=base.dynamic_img_size,
        dynamic_img_pad=getattr(pe, "dynamic_img_pad", False),
        norm_layer=_norm_layer_of(blk.norm1),
        act_layer=_act_layer_of(blk.mlp.act),
        pos_drop_rate=base.pos_drop.p,
        drop_rate=base.head_drop.p,
        patch_drop_rate=base.patch_drop.prob if isinstance(base.patch_drop, PatchDropout) else 0.0,
    )
    if pe.norm is not None and not isinstance(pe.norm, nn.Identity):
        args["embed_norm_layer"] = _norm_layer_of(pe.norm)
    return args


def _copy_backbone(base: nn.Module, student: nn.Module, replaced: tuple[str, ...], name: str) -> None:
    """Load every ``base`` weight except the replaced modules into ``student``; anything else must match."""

    def is_replaced(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in replaced)

    sd = {k: v for k, v in base.state_dict().items() if not is_replaced(k)}
    own = student.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd and not is_replaced(k))
    bad_shape = sorted(k for k in sd if k in own and own[k].shape != sd[k].shape)
    if unexpected or missing or bad_shape:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for what, keys in (
                ("unexpected", unexpected),
                ("missing", missing),
                ("shape mismatch", bad_shape),
            )
            if keys
        )
        raise UserError(f"the ViT variant '{name}' is not supported by the builders ({detail})")
    student.load_state_dict(sd, strict=False)


@torch.no_grad()
def _check_same_backbone(base: nn.Module, student: nn.Module, upto: int, name: str) -> None:
    """Catch variants whose weights match but whose computation differs (activation, norm eps...)."""
    if upto < 0:
        return
    modes = base.training, student.training
    base.eval()
    student.eval()
    try:
        c = base.patch_embed.proj.in_channels
        h, w = base.patch_embed.img_size
        g = torch.Generator().manual_seed(0)
        p = next(base.parameters())
        x = torch.randn(1, c, h, w, generator=g).to(device=p.device, dtype=p.dtype)
        kw = dict(indices=[upto], stop_early=True, intermediates_only=True, output_fmt="NLC")
        a = base.forward_intermediates(x, **kw)[0]
        b = VisionTransformer.forward_intermediates(student, x, **kw)[0]
    finally:
        base.train(modes[0])
        student.train(modes[1])
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise UserError(
            f"the ViT variant '{name}' is not supported by the builders (rebuilt backbone computes "
            f"different features; max diff {float((a - b).abs().max()):.3g})"
        )


def _student_kwargs(base: nn.Module, name: str, kwargs: dict) -> dict:
    args = _vit_args(base, name)
    args.update({k: v for k, v in kwargs.items() if k in _PASSTHROUGH})
    return args


def _inherit_cfg(base: nn.Module, student: nn.Module, build_spec: dict) -> None:
    cfg = dict(getattr(base, "pretrained_cfg", {}) or {})
    for k in ("url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "tag", "source"):
        cfg.pop(k, None)
    cfg["architecture"] = f"{build_spec['builder']}({build_spec['base']})"
    cfg["num_classes"] = student.num_classes
    student.pretrained_cfg = student.default_cfg = cfg
    record_input_size(student)
    # how to rebuild this student (e.g. for a trainer's config or an export)
    student.build_spec = build_spec


def create_lift(
    base: str, lift_dim: int, pretrained: bool = False, init: str = "timm", **kwargs
) -> LiftVisionTransformer:
    """A Lift student made from the timm ViT ``base`` (weights copied from it; lifted to ``lift_dim``).

    ``kwargs`` go to ``timm.create_model(base, ...)`` (img_size, patch_size, embed_dim, depth,
    num_heads, num_classes, drop_path_rate, pretrained_cfg_overlay, ...). With ``pretrained=True`` the
    backbone starts from the base's weights; the base's final norm and head are dropped. ``init``:
    ``timm`` (the base's norm layer, timm's init) or ``published`` (the paper's published code:
    projector LayerNorm eps 1e-5, PyTorch's default init of the projector and head).
    """
    check_init(init)
    base_model = create_base(base, pretrained=pretrained, **kwargs)
    args = _student_kwargs(base_model, base, kwargs)
    # Lift's own head: mean of the lifted patch tokens; the base's final norm / fc_norm are replaced
    for k in ("fc_norm", "final_norm"):
        args.pop(k)
    args["global_pool"] = "avg"
    args["pool_include_prefix"] = False
    student = LiftVisionTransformer(lift_dim=lift_dim, init=init, **args)
    _copy_backbone(base_model, student, ("norm", "fc_norm", "head"), base)
    _check_same_backbone(base_model, student, len(student.blocks) - 1, base)
    _inherit_cfg(
        base_model,
        student,
        dict(builder="create_lift", base=base, lift_dim=int(lift_dim), kwargs=_plain(kwargs, init)),
    )
    return student


def create_widelast(
    base: str, wide_dim: int, num_wide: int = 1, pretrained: bool = False, init: str = "timm", **kwargs
) -> WideLastVisionTransformer:
    """A WideLast student made from the timm ViT ``base``: its last ``num_wide`` blocks at ``wide_dim``.

    The narrow blocks, embeddings and tokens are copied from the base (pretrained if asked); the
    wide blocks, final norm and head are new. ``kwargs`` go to ``timm.create_model(base, ...)``;
    ``wide_num_heads`` (default: keep the base head dim) and ``schedule`` (default ``heads_step``;
    see :func:`vitdistill.models.widelast.widelast_tail`) are taken out first. ``init``: ``timm``
    or ``published`` (the paper's published code: a trunc-normal 0.02 ``cls_token``, unless
    ``pretrained`` brings the base's trained one).
    """
    check_init(init)
    wide_heads = kwargs.pop("wide_num_heads", None)
    schedule = kwargs.pop("schedule", "heads_step")
    base_model = create_base(base, pretrained=pretrained, **kwargs)
    args = _student_kwargs(base_model, base, kwargs)
    student = WideLastVisionTransformer(
        wide_dim=wide_dim,
        num_wide=num_wide,
        wide_num_heads=wide_heads,
        schedule=schedule,
        init=init,
        **args,
    )
    replaced = ("norm", "fc_norm", "head") + tuple(
        f"blocks.{i}" for i in range(student.first_wide, len(student.blocks))
    )
    _copy_backbone(base_model, student, replaced, base)
    _check_same_backbone(base_model, student, student.first_wide - 1, base)
    if init == "published" and not pretrained and student.cls_token is not None:
        with torch.no_grad():  # the copied token is the base's timm init; a pretrained one is kept
            nn.init.trunc_normal_(student.cls_token, std=CLS_TOKEN_STD)
    _inherit_cfg(
        base_model,
        student,
        dict(
            builder="create_widelast",
            base=base,
            wide_dim=int(wide_dim),
            num_wide=int(num_wide),
            wide_num_heads=wide_heads,
            schedule=schedule,
            kwargs=_plain(kwargs, init),
        ),
    )
    return student


def _plain(kwargs: dict, init: str = "timm") -> dict:
    """The JSON/YAML-friendly part of the builder kwargs (for ``build_spec``, which the model spec
    reader :func:`vitdistill.models.as_spec` reads), with ``init`` when it is not the builders'
    default (a spec without it was built with timm's conventions)."""
    out = {"init": init} if init != "timm" else {}
    for k, v in kwargs.items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
    return out
