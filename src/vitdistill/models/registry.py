"""The students registered with timm: importing this module makes them ``timm.create_model`` names.

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
``pretrained_cfg_overlay=dict(file=...)`` or an export folder through ``local-dir:``. The file is
read by :mod:`vitdistill.checkpoints`, once, and checked like every other weights file.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from vitdistill.checkpoints import check_values, load_state_strict, read_state_dict
from vitdistill.errors import UserError
from vitdistill.models.builders import create_lift, create_widelast, record_input_size
from vitdistill.models.conventions import check_init
from vitdistill.models.lift import LiftVisionTransformer
from vitdistill.models.widelast import WideLastVisionTransformer

STUDENT_MODELS = (
    "deit_tiny_lift_patch16_224",
    "deit_tiny_widelast_patch16_224",
    "deit_tiny_uniform219_patch16_224",
    "deit_tiny_widelast_fixed_step_patch16_224",
    "deit_tiny_widelast_heads_linear_patch16_224",
    "deit_tiny_widelast_fixed_linear_patch16_224",
)
REMEDY_MODELS = ("vitdistill_lift", "vitdistill_widelast")
_SOURCES = ("file", "state_dict", "url", "hf_hub_id")


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


default_cfgs = generate_default_cfgs({name: _cfg() for name in STUDENT_MODELS + REMEDY_MODELS})


def _cfg_value(key: str, overlay: dict, cfg: Any) -> Any:
    """``key`` from the pretrained cfg overlay, else from the pretrained cfg (a dict or timm's dataclass)."""
    if overlay.get(key) is not None:
        return overlay[key]
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)


def _checked_filter(state: dict, model: nn.Module) -> dict:
    """timm's ViT checkpoint filter, after the weights are checked against the model."""
    check_values(state, model.state_dict(), "pretrained weights")
    return checkpoint_filter_fn(state, model)


def _create(model_cls, variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> nn.Module:
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    cfg = kwargs.get("pretrained_cfg")
    if pretrained and not any(_cfg_value(k, overlay, cfg) for k in _SOURCES):
        raise UserError(
            f"{variant} has no published weights; pass a local file with "
            f"pretrained_cfg_overlay=dict(file='model.safetensors')"
        )
    if pretrained and overlay.get("file"):
        # read by vitdistill (once), handed to timm as a state dict. timm drops the head whenever
        # num_classes differs from the cfg's 1000; a file whose head has the requested size (or any
        # size, when none is requested: the short load form of a 10-class export) keeps it.
        state, _ = read_state_dict(overlay.pop("file"))
        overlay["state_dict"] = state
        head = state.get("head.weight")
        rows = int(head.shape[0]) if head is not None and head.ndim == 2 else None
        if rows is not None and rows == kwargs.get("num_classes", rows) and "num_classes" not in overlay:
            overlay["num_classes"] = rows
            kwargs = dict(kwargs, num_classes=rows)
        kwargs = dict(kwargs, pretrained_cfg_overlay=overlay)
    out_indices = kwargs.pop("out_indices", 3)
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=_checked_filter,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **dict(model_args, **kwargs),
    )
    model.pretrained_cfg.pop("state_dict", None)  # the tensors are in the model now
    record_input_size(model)
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
        state, _ = read_state_dict(src)  # a weights file or an export folder
        load_state_strict(model, state, str(src))
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
