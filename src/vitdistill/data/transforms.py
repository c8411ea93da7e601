"""Eval and train transforms built from the model's own timm data config.

timm keeps a model's ``pretrained_cfg`` (input size 224, mean/std, crop) even when the model
is created at another resolution (``img_size=32``). Using that config would resize every image
to 224 and feed the model the wrong size. Here the input size always comes from the model's
patch embedding, while mean, std, interpolation and crop settings still come from timm.
"""

from __future__ import annotations

import inspect
from typing import Any

from vitdistill.errors import UserError


def model_input_size(model) -> tuple[int, int, int] | None:
    """(C, H, W) the model was built for, read from its patch embedding when it has one."""
    pe = getattr(model, "patch_embed", None)
    img_size = getattr(pe, "img_size", None)
    if img_size is None:
        return None
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    in_chans = getattr(getattr(pe, "proj", None), "in_channels", 3)
    return (int(in_chans), int(img_size[0]), int(img_size[1]))


def resolve_data_config(model_or_cfg, **overrides) -> dict[str, Any]:
    """timm's data config for a model (with its real input size) or a given dict, plus overrides."""
    from timm.data import resolve_model_data_config

    if isinstance(model_or_cfg, dict):
        cfg = dict(model_or_cfg)
        if "input_size" not in cfg:
            if "img_size" in cfg:
                s = cfg.pop("img_size")
                cfg["input_size"] = (3, s, s) if isinstance(s, int) else (3, *s)
            else:
                raise UserError("a data config needs 'input_size' (C, H, W) or 'img_size'")
        cfg.setdefault("interpolation", "bicubic")
        cfg.setdefault("mean", (0.485, 0.456, 0.406))
        cfg.setdefault("std", (0.229, 0.224, 0.225))
        cfg.setdefault("crop_pct", 0.875)
        cfg.setdefault("crop_mode", "center")
    else:
        args = {}
        size = model_input_size(model_or_cfg)
        if size is not None:
            args["input_size"] = size
        cfg = resolve_model_data_config(model_or_cfg, args=args)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    cfg["input_size"] = tuple(cfg["input_size"])
    return cfg


def _create(cfg: dict[str, Any], is_training: bool, aug: dict[str, Any]):
    from timm.data import create_transform

    allowed = set(inspect.signature(create_transform).parameters)
    unknown = sorted(set(aug) - allowed)
    if unknown:
        from vitdistill.errors import closest_names

        hint = closest_names(unknown[0], allowed)
        raise UserError(
            f"unknown augmentation option {unknown[0]!r}" + (f" (did you mean {hint[0]}?)" if hint else "")
        )
    kwargs = {
        "input_size": cfg["input_size"],
        "interpolation": cfg.get("interpolation", "bicubic"),
        "mean": cfg.get("mean"),
        "std": cfg.get("std"),
        "crop_pct": cfg.get("crop_pct"),
        "crop_mode": cfg.get("crop_mode"),
    }
    kwargs.update(aug)
    return create_transform(is_training=is_training, **kwargs)


def eval_transform(model_or_cfg, crop_pct: float | None = None, **kwargs):
    """The model's timm eval transform (resize, center crop, normalise) at its real input size.

    ``crop_pct=1.0`` keeps the whole image (use it when images are already at the model's size,
    as the synthetic sets are).
    """
    cfg = resolve_data_config(model_or_cfg, crop_pct=crop_pct)
    return _create(cfg, is_training=False, aug=kwargs)


def train_transform(model_or_cfg, **aug):
    """timm's training transform (random resized crop, flips, RandAugment, erasing...) for a model.

    ``aug`` are ``timm.data.create_transform`` keywords, e.g. ``auto_augment='rand-m9-mstd0.5-inc1'``,
    ``re_prob=0.25``, ``hflip=0.5``, ``scale=(0.08, 1.0)``, ``color_jitter=0.4``.
    """
    cfg = resolve_data_config(model_or_cfg)
    transform = _create(cfg, is_training=True, aug=aug)
    guard_posterize(transform)
    return transform


def _posterize_zero_safe(img, bits_to_keep, **_):
    """timm's posterize, also for 0 bits (an all-black image, as in the TF original).

    timm's increasing-posterize maps magnitude 10 to 0 bits, which Pillow >= 11 rejects; with
    ``rand-m9-mstd0.5`` magnitudes reach 10, so training would crash at random.
    """
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def guard_posterize(transform) -> None:
    """Swap the posterize op of any RandAugment/AutoAugment inside ``transform`` for the 0-bit-safe one."""
    stack = [transform]
    while stack:
        t = stack.pop()
        if "Posterize" in str(getattr(t, "name", "")) and hasattr(t, "aug_fn"):
            t.aug_fn = _posterize_zero_safe
        stack.extend(getattr(t, "ops", None) or [])
        stack.extend(getattr(t, "transforms", None) or [])
        for sub in getattr(t, "policy", None) or []:  # AutoAugment: a list of sub-policies
            stack.extend(sub if isinstance(sub, list | tuple) else [sub])
