"""The one way in for models: :func:`create_model`, for every kind of source.

* A model is described by one small dict, the *model spec* (name, remedy, width, num_wide,
  widelast_schedule, kwargs, num_classes), saved in every run checkpoint and export.
  :func:`as_spec` reads every other description into it: a timm name, the strings
  ``lift:BASE:DIM`` / ``widelast:BASE:DIM[:NUM_WIDE]``, a training config's ``model`` section and
  the ``build_spec`` that the Lift / WideLast builders attach to a student.
* :func:`create_model` takes any of those, or a weights source that records its model (a run
  folder, an export folder, a run checkpoint, an export's ``model.safetensors``), with a local
  checkpoint, timm's pretrained weights or a random init, and returns the model in eval mode and
  its provenance. Each weights file is read once, by :mod:`vitdistill.checkpoints` (never
  unpickled in full unless the caller opts in); a checkpoint that does not fit the model is a
  UserError naming the keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.checkpoints import TRUST_OPT_IN, Weights, head_classes, load_state_strict, read_weights
from vitdistill.errors import UserError, first_line
from vitdistill.models import registry  # noqa: F401  (the registered students are timm names)
from vitdistill.models.builders import check_name, create_base, create_lift, create_widelast
from vitdistill.models.conventions import resolve_init, saved_init

REMEDIES = ("none", "lift", "widelast")
MODEL_STRINGS = "a timm name, lift:BASE:LIFT_DIM or widelast:BASE:WIDE_DIM[:NUM_WIDE]"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


# --------------------------------------------------------------------------------------------
# The model spec: the one description of a model
# --------------------------------------------------------------------------------------------


def _model_spec(cfg_model: Mapping, num_classes: int | None = None) -> dict[str, Any]:
    """The model spec of a dict with a training config's ``model`` keys (``num_classes`` None keeps
    the model's own classifier size, 1000 for timm's defaults).

    An ``init`` key (a config's ``model.init``: auto, published or timm) is resolved into the
    spec's kwargs (:func:`vitdistill.models.conventions.resolve_init`); without it the kwargs are
    kept as recorded.
    """
    kwargs = dict(cfg_model.get("kwargs") or {})
    remedy = cfg_model.get("remedy", "none")
    if cfg_model.get("init") is not None:
        kwargs = resolve_init(cfg_model["name"], remedy, cfg_model["init"], kwargs)
    return {
        "name": cfg_model["name"],
        "remedy": remedy,
        "width": cfg_model.get("width"),
        "num_wide": cfg_model.get("num_wide", 1),
        "widelast_schedule": cfg_model.get("widelast_schedule", "heads_step"),
        "kwargs": kwargs,
        "num_classes": None if num_classes is None else int(num_classes),
    }


def as_spec(model: str | Mapping, num_classes: int | None = None, kwargs: Mapping | None = None) -> dict:
    """Any description of a model -> its model spec; ``kwargs`` / ``num_classes`` are added to it.

    ``model`` is a timm name, ``lift:BASE:LIFT_DIM`` / ``widelast:BASE:WIDE_DIM[:NUM_WIDE]``, a
    model spec or a training config's ``model`` section, or the ``build_spec`` of a builder-made
    student.
    """
    kwargs = dict(kwargs or {})
    if isinstance(model, Mapping):
        if "builder" in model:
            return _spec_from_build_spec(model, num_classes, kwargs)
        nc = num_classes if num_classes is not None else model.get("num_classes")
        return _model_spec({**model, "kwargs": {**(model.get("kwargs") or {}), **kwargs}}, nc)
    if not isinstance(model, str) or not model:
        raise UserError(f"model must be {MODEL_STRINGS}; got {model!r}")
    kind, _, rest = model.partition(":")
    if kind not in ("lift", "widelast") or not rest:  # a name: the model's own init convention
        return _model_spec({"name": model, "kwargs": kwargs, "init": "auto"}, num_classes)
    parts = rest.split(":")
    if kind == "lift" and len(parts) != 2 or kind == "widelast" and len(parts) not in (2, 3):
        raise UserError(
            f"bad model spec '{model}': use lift:BASE:LIFT_DIM or widelast:BASE:WIDE_DIM[:NUM_WIDE]"
        )
    try:
        nums = [int(p) for p in parts[1:]]
    except ValueError:
        raise UserError(f"bad model spec '{model}': widths must be integers") from None
    cfg = {"name": parts[0], "remedy": kind, "width": nums[0], "num_wide": nums[1] if nums[1:] else 1}
    if kind == "widelast":  # the builder's own keyword names, accepted as kwargs too
        cfg["num_wide"] = kwargs.pop("num_wide", cfg["num_wide"])
        cfg["widelast_schedule"] = kwargs.pop("schedule", "heads_step")
    return _model_spec({**cfg, "kwargs": kwargs, "init": "auto"}, num_classes)


def _spec_from_build_spec(build_spec: Mapping, num_classes: int | None, overrides: dict) -> dict:
    """The model spec of a builder's ``build_spec`` (``overrides`` update its recorded kwargs)."""
    if build_spec.get("builder") not in ("create_lift", "create_widelast"):
        raise UserError(f"not a vitdistill build spec: {dict(build_spec)!r}")
    kwargs = dict(build_spec.get("kwargs") or {}, **overrides)
    kwargs.pop("pretrained_cfg_overlay", None)
    recorded_classes = kwargs.pop("num_classes", None)  # a requested class count replaces it
    if num_classes is None:
        num_classes = recorded_classes
    cfg: dict[str, Any] = {"name": build_spec["base"]}
    if build_spec["builder"] == "create_lift":
        cfg.update(remedy="lift", width=build_spec["lift_dim"])
    else:
        if build_spec.get("wide_num_heads") is not None:
            kwargs["wide_num_heads"] = build_spec["wide_num_heads"]
        cfg.update(
            remedy="widelast",
            width=build_spec["wide_dim"],
            num_wide=build_spec.get("num_wide", 1),
            widelast_schedule=build_spec.get("schedule", "heads_step"),
        )
    return _model_spec({**cfg, "kwargs": kwargs}, num_classes)


def spec_label(spec: Mapping) -> str:
    """A short name for a spec: the timm name, with ``+lift`` / ``+widelast`` for a remedy."""
    remedy = spec.get("remedy", "none")
    return spec["name"] + (f"+{remedy}" if remedy != "none" else "")


def timm_architecture(spec: Mapping) -> tuple[str, dict[str, Any]]:
    """The timm architecture and ``model_args`` that rebuild a spec with ``timm.create_model``
    (a remedy on any base is registered as ``vitdistill_lift`` / ``vitdistill_widelast``)."""
    remedy = spec.get("remedy", "none")
    kwargs = saved_init(spec["name"], remedy, spec.get("kwargs") or {})
    if remedy == "lift":
        return "vitdistill_lift", dict(base=spec["name"], lift_dim=int(spec["width"]), **kwargs)
    if remedy == "widelast":
        args = dict(base=spec["name"], wide_dim=int(spec["width"]), num_wide=int(spec.get("num_wide", 1)))
        if spec.get("widelast_schedule", "heads_step") != "heads_step":
            args["schedule"] = spec["widelast_schedule"]
        return "vitdistill_widelast", dict(args, **kwargs)
    return spec["name"].split(".")[0], kwargs


def _build(spec: Mapping, pretrained: bool = False, role: str = "model") -> nn.Module:
    """Build a model spec (random init unless ``pretrained``; a remedy then starts from the base's
    pretrained weights). Unknown names, remedies and keyword arguments raise UserError."""
    name, remedy = spec["name"], spec.get("remedy", "none")
    check_name(name, role)
    if remedy not in REMEDIES:
        raise UserError(f"unknown remedy {remedy!r} (use none, lift or widelast)")
    kwargs = _spec_kwargs(spec)
    try:
        if remedy == "lift":
            return create_lift(name, int(spec["width"]), pretrained=pretrained, **kwargs)
        if remedy == "widelast":
            return create_widelast(
                name,
                int(spec["width"]),
                num_wide=int(spec.get("num_wide", 1)),
                schedule=spec.get("widelast_schedule", "heads_step"),
                pretrained=pretrained,
                **kwargs,
            )
        return create_base(name, pretrained=pretrained, **kwargs)
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot load pretrained weights for {name}: {first_line(e)}") from None
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        if pretrained and (isinstance(e, RuntimeError) or "pretrained" in str(e).lower()):
            raise UserError(f"cannot load pretrained weights for {name}: {first_line(e)}") from None
        raise UserError(f"cannot build {role} {name!r} with kwargs {kwargs}: {first_line(e)}") from None


def _spec_kwargs(spec: Mapping) -> dict[str, Any]:
    """The spec's keyword arguments with its ``num_classes`` (a different one in kwargs is an error)
    and the init convention it was built with."""
    kwargs = saved_init(spec["name"], spec.get("remedy", "none"), spec.get("kwargs") or {})
    n, k = spec.get("num_classes"), kwargs.pop("num_classes", None)
    if n is not None and k is not None and int(k) != int(n):
        raise UserError(
            f"model.kwargs.num_classes={k} disagrees with the data ({n} classes); drop it from the config"
        )
    if n is not None or k is not None:
        kwargs["num_classes"] = int(n if n is not None else k)
    return kwargs


# --------------------------------------------------------------------------------------------
# Any source + any weights -> model and provenance
# --------------------------------------------------------------------------------------------


def _weights_source(source: Any) -> bool:
    """Whether ``source`` names a weights file or folder rather than a model."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str) or ":" in source.split("/")[0]:
        return False  # a description, or a timm URI such as lift:..., hf-hub:org/name
    p = Path(source).expanduser()
    if p.suffix in _WEIGHT_SUFFIXES or os.sep in source or (os.altsep and os.altsep in source):
        return True
    import timm

    return p.exists() and not timm.is_model(source.split(".")[0])


def create_model(
    source: str | os.PathLike | Mapping | None,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    *,
    ema: bool = False,
    role: str = "model",
    opt_in: str | None = TRUST_OPT_IN,
    **kwargs: Any,
) -> tuple[nn.Module, dict]:
    """A model in eval mode and its provenance (model, weights source and sha256, kwargs).

    ``source`` is any description :func:`as_spec` reads, or a weights source that records its
    model: a vitdistill run folder or export folder, a run checkpoint, an export's
    ``model.safetensors``, or a file with a ``config.json`` naming the architecture beside it.
    ``checkpoint`` gives the weights for a described model (or replaces the weights of a run
    folder). Without ``num_classes`` a checkpoint's head decides the class count. ``ema`` picks a
    run's EMA weights; ``trust_checkpoint`` allows fully unpickling a legacy checkpoint (it can run
    code). ``role`` ("teacher", ...) names the model in errors; ``opt_in`` is the setting the
    refusal of an untrusted checkpoint names (None: a file vitdistill wrote). ``kwargs`` go to timm / the builder.
    """
    if isinstance(source, str) and source.startswith("local-dir:"):  # timm's name for an export folder
        source = Path(source.removeprefix("local-dir:"))
    if _weights_source(source):
        source, checkpoint = None, checkpoint or source
    if pretrained and checkpoint:
        raise UserError("give either pretrained=True or a checkpoint, not both", settings=("pretrained",))
    if "num_classes" in kwargs:
        n = kwargs.pop("num_classes")
        if num_classes is not None and n is not None and int(n) != int(num_classes):
            raise UserError(f"num_classes={num_classes} and kwargs num_classes={n} disagree")
        num_classes = num_classes if num_classes is not None else n
    w = read_weights(checkpoint, ema=ema, trust=trust_checkpoint, opt_in=opt_in) if checkpoint else None
    spec, recorded = _requested_spec(source, w, num_classes, kwargs, role)
    if w is not None and spec["num_classes"] is None:
        spec["num_classes"] = _file_classes(w.state)
    model = _build(spec, pretrained, role=role)
    if w is not None:
        load_state_strict(model, w.state, str(checkpoint), role=role)
    model.eval()
    return model, _provenance(model, spec, w, pretrained, recorded)


def _requested_spec(name, w: Weights | None, num_classes, kwargs: dict, role: str) -> tuple[dict, bool]:
    """The spec to build, and whether it is the one the weights record (rebuilt exactly)."""
    saved = w.model_spec if w is not None else None
    if saved is not None and (
        not name
        or name == saved.get("name")
        and not kwargs
        and num_classes in (None, saved.get("num_classes"))
    ):
        return as_spec(saved, num_classes, kwargs), True
    what = "model" if role == "model" else f"{role} model"
    if not name and w is None:
        raise UserError(f"no {what} given: {MODEL_STRINGS}, a run or export folder, or a weights file")
    if not name:
        name = w.config.get("architecture") or w.config.get("model") or w.config.get("model_name")
        if not name:
            raise UserError(
                f"no {what} name given, and the checkpoint records none (no vitdistill model "
                "spec, no architecture in a config.json beside it)"
            )
        kwargs = {**(w.config.get("model_args") or {}), **kwargs}
    return as_spec(name, num_classes, kwargs), False


def _file_classes(sd: dict) -> int | None:
    """The class count a state dict's classifier has: 0 when it has no head at all."""
    n = head_classes(sd)
    if n is None and not any(k.startswith("head") for k in sd):
        return 0
    return n


def _provenance(model: nn.Module, spec: dict, w: Weights | None, pretrained: bool, recorded: bool) -> dict:
    weights: dict[str, Any]
    if w is not None:
        kind = "vitdistill checkpoint" if recorded else "checkpoint"
        weights = {"kind": kind, "path": str(w.file), "sha256": w.sha256}
        if recorded:
            weights["model_spec"] = w.model_spec  # as the file records it
    elif pretrained:
        arch, tag = spec_label(spec).split(".")[0], getattr(model, "pretrained_cfg", {}).get("tag")
        weights = {"kind": "timm-pretrained", "tag": f"{arch}.{tag}" if tag else spec_label(spec)}
    else:
        weights = {"kind": "random init", "seed": torch.initial_seed()}
    kw = dict(spec.get("kwargs") or {})
    if not recorded and spec.get("num_classes") is not None:
        kw["num_classes"] = spec["num_classes"]
    return {"model": spec_label(spec), "weights": weights, "model_kwargs": kw}
