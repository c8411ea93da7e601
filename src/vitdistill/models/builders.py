"""Registered student models and builders that apply Lift / WideLast to any timm ViT.

Importing this module registers with timm:

* ``deit_tiny_lift_patch16_224`` - DeiT-Tiny + lifting projector to 384 (5,983,528 params at 1000 classes)
* ``deit_tiny_widelast_patch16_224`` - DeiT-Tiny with its last block at 384 (7,313,896 params)
* ``deit_tiny_uniform219_patch16_224`` - plain ViT at width 219 / 3 heads, the parameter-matched control
* ``vitdistill_lift`` / ``vitdistill_widelast`` - a remedy on any timm ViT (``base=``, ``lift_dim=`` /
  ``wide_dim=``, ``num_wide=``): the architecture that exports of such students record, so that
  ``timm.create_model("local-dir:EXPORT_DIR", pretrained=True)`` rebuilds them
* ``deit_tiny_widelast_fixed_step_patch16_224`` - last block at 384 with 3 heads of 128
* ``deit_tiny_widelast_heads_linear_patch16_224`` - last 3 blocks 256/4h, 320/5h, 384/6h
* ``deit_tiny_widelast_fixed_linear_patch16_224`` - last 3 blocks 240, 312, 384, all 3 heads

(``deit_tiny_widelast_patch16_224`` is the ``heads_step`` schedule.)

The Lift and WideLast students initialise as the paper's published code did (``init="published"``,
see :mod:`vitdistill.models.conventions`; ``init="timm"`` gives timm's conventions); the builders
default to timm's.

None of them has published weights; ``pretrained=True`` loads a local file given through
``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

import functools
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerScale, PatchDropout, PatchEmbed
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import Attention, Block, Mlp, VisionTransformer, checkpoint_filter_fn
from torch import nn

from vitdistill.errors import UserError
from vitdistill.models.conventions import CLS_TOKEN_STD, check_init
from vitdistill.models.lift import LiftVisionTransformer
from vitdistill.models.loading import check_name
from vitdistill.models.widelast import WideLastVisionTransformer

__all__ = [
    "create_lift",
    "create_widelast",
    "create_base_model",
    "vit_args_from_model",
    "STUDENT_MODELS",
]

STUDENT_MODELS = (
    "deit_tiny_lift_patch16_224",
    "deit_tiny_widelast_patch16_224",
    "deit_tiny_uniform219_patch16_224",
    "deit_tiny_widelast_fixed_step_patch16_224",
    "deit_tiny_widelast_heads_linear_patch16_224",
    "deit_tiny_widelast_fixed_linear_patch16_224",
)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # DeiT's evaluation settings; no url / hub id: weights only ever come from a user's file.
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


REMEDY_MODELS = ("vitdistill_lift", "vitdistill_widelast")

default_cfgs = generate_default_cfgs({name: _cfg() for name in STUDENT_MODELS + REMEDY_MODELS})


def _has_weight_source(kwargs: dict) -> bool:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    cfg = kwargs.get("pretrained_cfg")
    sources = [overlay.get(k) for k in ("file", "state_dict", "url", "hf_hub_id")]
    if isinstance(cfg, dict):
        sources += [cfg.get(k) for k in ("file", "state_dict", "url", "hf_hub_id")]
    elif cfg is not None and not isinstance(cfg, str):
        sources += [getattr(cfg, k, None) for k in ("file", "state_dict", "url", "hf_hub_id")]
    return any(sources)


def _record_input_size(model: nn.Module) -> None:
    """Make ``pretrained_cfg['input_size']`` the size the model was built for (e.g. img_size=32)."""
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        h, w = pe.img_size
        cfg["input_size"] = (pe.proj.in_channels, int(h), int(w))
        model.pretrained_cfg = model.default_cfg = cfg


def _checkpoint_head_rows(path: str) -> int | None:
    """Rows of ``head.weight`` in a weights file, read without loading the whole file when possible."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                names = set(f.keys())
                return int(f.get_slice("head.weight").get_shape()[0]) if "head.weight" in names else None
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise UserError(f"weights file not found: {path}") from None
    except Exception:  # unreadable here: leave the verdict to timm's loader
        return None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    w = sd.get("head.weight") if isinstance(sd, dict) else None
    return int(w.shape[0]) if w is not None else None


def _create(model_cls, variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> nn.Module:
    if pretrained and not _has_weight_source(kwargs):
        raise UserError(
            f"{variant} has no published weights; pass a local file with "
            f"pretrained_cfg_overlay=dict(file='model.safetensors')"
        )
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if pretrained and overlay.get("file") and "num_classes" not in overlay:
        # timm drops the head whenever num_classes differs from the cfg's 1000; a file whose head
        # has the requested size (or any size, when none is requested: the short load form of a
        # 10-class export) must keep its trained head.
        rows = _checkpoint_head_rows(overlay["file"])
        if rows is not None and rows == kwargs.get("num_classes", rows):
            overlay["num_classes"] = rows
            kwargs = dict(kwargs, num_classes=rows, pretrained_cfg_overlay=overlay)
    out_indices = kwargs.pop("out_indices", 3)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **dict(model_args, **kwargs),
    )
    _record_input_size(model)
    return model


@register_model
def deit_tiny_lift_patch16_224(pretrained: bool = False, **kwargs) -> LiftVisionTransformer:
    """DeiT-Tiny with a retained lifting projector 192 -> 384 and a head on the mean lifted patch token."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, lift_dim=384, init="published")
    return _create(LiftVisionTransformer, "deit_tiny_lift_patch16_224", pretrained, args, kwargs)


@register_model
def deit_tiny_widelast_patch16_224(pretrained: bool = False, **kwargs) -> WideLastVisionTransformer:
    """DeiT-Tiny whose last block runs at 384 (6 heads of 64) after an entry projection."""
    args = dict(
        patch_size=16, embed_dim=192, depth=12, num_heads=3, wide_dim=384, num_wide=1, init="published"
    )
    return _create(WideLastVisionTransformer, "deit_tiny_widelast_patch16_224", pretrained, args, kwargs)


def _deit_tiny_widelast(variant: str, schedule: str, num_wide: int, pretrained: bool, kwargs: dict):
    args = dict(
        patch_size=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        wide_dim=384,
        num_wide=num_wide,
        schedule=schedule,
        init="published",
    )
    return _create(WideLastVisionTransformer, variant, pretrained, args, kwargs)


@register_model
def deit_tiny_widelast_fixed_step_patch16_224(
    pretrained: bool = False, **kwargs
) -> WideLastVisionTransformer:
    """WideLast ``fixed_step``: DeiT-Tiny whose last block runs at 384 with 3 heads of 128."""
    return _deit_tiny_widelast(
        "deit_tiny_widelast_fixed_step_patch16_224", "fixed_step", 1, pretrained, kwargs
    )


@register_model
def deit_tiny_widelast_heads_linear_patch16_224(
    pretrained: bool = False, **kwargs
) -> WideLastVisionTransformer:
    """WideLast ``heads_linear``: 9 blocks at 192, then 256/4 heads, 320/5 heads, 384/6 heads."""
    return _deit_tiny_widelast(
        "deit_tiny_widelast_heads_linear_patch16_224", "heads_linear", 3, pretrained, kwargs
    )


@register_model
def deit_tiny_widelast_fixed_linear_patch16_224(
    pretrained: bool = False, **kwargs
) -> WideLastVisionTransformer:
    """WideLast ``fixed_linear``: 9 blocks at 192, then 240, 312, 384, all with 3 heads."""
    return _deit_tiny_widelast(
        "deit_tiny_widelast_fixed_linear_patch16_224", "fixed_linear", 3, pretrained, kwargs
    )


@register_model
def deit_tiny_uniform219_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Uniform-width control: width 219 everywhere (3 heads of 73), parameter-matched to WideLast.

    The published code built it with timm (DeiT-Tiny's arguments, width 219), so its
    initialisation is timm's under either ``init``."""
    check_init(kwargs.pop("init", "published"))
    args = dict(patch_size=16, embed_dim=219, depth=12, num_heads=3)
    return _create(VisionTransformer, "deit_tiny_uniform219_patch16_224", pretrained, args, kwargs)


# --------------------------------------------------------------------------------------------
# Builders: apply a remedy to any timm VisionTransformer
# --------------------------------------------------------------------------------------------

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


def _cfg_value(key: str, overlay: dict, cfg: Any) -> Any:
    """``key`` from the pretrained cfg overlay, else from the pretrained cfg (a dict or timm's dataclass)."""
    if overlay.get(key) is not None:
        return overlay[key]
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def _remedy_entry(build, pretrained: bool, kwargs: dict, *args) -> nn.Module:
    """``build(*args, **kwargs)`` as a timm entry point: ``pretrained=True`` loads the weights file, or
    the ``model.safetensors`` of the folder, named by the pretrained cfg (``local-dir:`` gives one)."""
    cfg = kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    for k in ("cache_dir", "pretrained_model_args"):
        kwargs.pop(k, None)
    if pretrained and _cfg_value("num_classes", overlay, cfg) is not None:
        kwargs.setdefault("num_classes", _cfg_value("num_classes", overlay, cfg))  # the file's head
    model = build(*args, **kwargs)
    if pretrained:
        src = _cfg_value("file", overlay, cfg)
        if not src:
            raise UserError(
                f"{build.__name__}({args[0]}) has no published weights; load an export folder with "
                "timm.create_model('local-dir:DIR', pretrained=True)"
            )
        from vitdistill.checkpoints import read_state_dict

        state, _ = read_state_dict(src)  # a weights file or an export folder
        model.load_state_dict(state)
    return model


@register_model
def vitdistill_lift(
    pretrained: bool = False, base: str = "deit_tiny_patch16_224", lift_dim: int = 384, **kwargs
) -> LiftVisionTransformer:
    """Lift on any timm ViT ``base`` (kwargs go to ``timm.create_model(base, ...)``)."""
    return _remedy_entry(create_lift, pretrained, kwargs, base, lift_dim)


@register_model
def vitdistill_widelast(
    pretrained: bool = False,
    base: str = "deit_tiny_patch16_224",
    wide_dim: int = 384,
    num_wide: int = 1,
    **kwargs,
) -> WideLastVisionTransformer:
    """WideLast on any timm ViT ``base`` (kwargs go to ``timm.create_model(base, ...)``, except
    ``schedule`` and ``wide_num_heads``, which :func:`create_widelast` takes)."""
    return _remedy_entry(create_widelast, pretrained, kwargs, base, wide_dim, num_wide)


def create_base_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with a one-line error (and close names) for unknown models."""
    if not isinstance(name, str):
        raise UserError(f"unknown model {name!r}: a timm model name is a string")
    check_name(name)
    if "img_size" in kwargs:
        _image_size(kwargs["img_size"])
    try:
        try:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
        except TypeError as e:
            if "img_size" not in kwargs or "img_size" not in str(e):
                raise
            model = timm.create_model(name, pretrained=pretrained, **_without_img_size(kwargs))
        return _with_input_size(model, kwargs) if "img_size" in kwargs else model
    except (TypeError, AssertionError) as e:
        raise UserError(f"cannot build '{name}' with {kwargs}: {e}") from e


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


def _norm_layer_of(norm: nn.Module):
    eps = getattr(norm, "eps", None)
    return functools.partial(type(norm), eps=eps) if eps is not None else type(norm)


def _act_layer_of(act: nn.Module):
    if isinstance(act, nn.GELU) and act.approximate != "none":
        return functools.partial(nn.GELU, approximate=act.approximate)
    return type(act)


def vit_args_from_model(base: nn.Module, name: str = "") -> dict[str, Any]:
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
    args = vit_args_from_model(base, name)
    args.update({k: v for k, v in kwargs.items() if k in _PASSTHROUGH})
    return args


def _inherit_cfg(base: nn.Module, student: nn.Module, build_spec: dict) -> None:
    cfg = dict(getattr(base, "pretrained_cfg", {}) or {})
    for k in ("url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "tag", "source"):
        cfg.pop(k, None)
    cfg["architecture"] = f"{build_spec['builder']}({build_spec['base']})"
    cfg["num_classes"] = student.num_classes
    student.pretrained_cfg = student.default_cfg = cfg
    _record_input_size(student)
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
    base_model = create_base_model(base, pretrained=pretrained, **kwargs)
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
    base_model = create_base_model(base, pretrained=pretrained, **kwargs)
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
    """The JSON/YAML-friendly part of the builder kwargs (for ``build_spec``, which
    :func:`vitdistill.models.loading.as_spec` reads into a model spec), with ``init`` when it is
    not the builders' default (a spec without it was built with timm's conventions)."""
    out = {"init": init} if init != "timm" else {}
    for k, v in kwargs.items():
        if isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
        elif isinstance(v, (tuple, list)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
    return out
