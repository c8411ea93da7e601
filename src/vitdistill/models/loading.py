"""The one place that builds models and loads their weights (every command goes through it).

* A model is described by one small dict, the *model spec* (name, remedy, width, num_wide,
  widelast_schedule, kwargs, num_classes), saved in every checkpoint and export.
  :func:`as_spec` reads every other description into it: a timm name, the command-line strings
  ``lift:BASE:DIM`` / ``widelast:BASE:DIM[:NUM_WIDE]``, and the ``build_spec`` that the Lift /
  WideLast builders attach to a student. :func:`create_from_spec` builds it.
* :func:`create_model`: any description (or a vitdistill checkpoint that records its model) with
  a local checkpoint, timm pretrained weights or a random init -> the model and its provenance
  (``analyze``, ``compare``, ``inspect``, ``eval`` and ``train``'s teacher).
* :func:`load_model`: a run folder, an export folder or a model name (+ weights) -> the model
  (``eval``).
* :func:`load_run_model` / :func:`load_exported`: a vitdistill run's student / an export
  (``export``, ``eval``).

Weights are read by :mod:`vitdistill.checkpoints` (never unpickled in full unless the user opts
in); a checkpoint that does not fit the model is a UserError naming the keys.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.checkpoints import (
    head_classes,
    load_state_strict,
    read_run_checkpoint,
    read_state_dict,
    torch_load,
    weights_file,
)
from vitdistill.errors import UserError, closest_names, first_line
from vitdistill.models.conventions import resolve_init, saved_init
from vitdistill.utils.io import file_sha256

REMEDIES = ("none", "lift", "widelast")
MODEL_STRINGS = "a timm name, lift:BASE:LIFT_DIM or widelast:BASE:WIDE_DIM[:NUM_WIDE]"


def check_name(name: str, role: str = "model") -> None:
    """A UserError naming the closest timm models when ``name`` (``arch.tag`` allowed) is not one."""
    import timm

    arch = name.split(".")[0]
    if timm.is_model(arch):
        return
    near = closest_names(arch, timm.list_models(), n=5)
    hint = f"; closest: {', '.join(near)}" if near else "; see timm.list_models()"
    raise UserError(f"unknown {role} model {name!r}{hint}")


# --------------------------------------------------------------------------------------------
# The model spec: the one description of a model
# --------------------------------------------------------------------------------------------


def model_spec(cfg_model: Mapping, num_classes: int | None = None) -> dict[str, Any]:
    """The model spec of a training config's ``model`` section (or any dict with its keys).

    ``num_classes`` None keeps the model's own classifier size (1000 for timm's defaults).
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
    model spec, or the ``build_spec`` of a builder-made student.
    """
    kwargs = dict(kwargs or {})
    if isinstance(model, Mapping):
        if "builder" in model:
            return _spec_from_build_spec(model, num_classes, kwargs)
        nc = num_classes if num_classes is not None else model.get("num_classes")
        return model_spec({**model, "kwargs": {**(model.get("kwargs") or {}), **kwargs}}, nc)
    if not isinstance(model, str) or not model:
        raise UserError(f"model must be {MODEL_STRINGS}; got {model!r}")
    kind, _, rest = model.partition(":")
    if kind not in ("lift", "widelast") or not rest:  # a name: the model's own init convention
        return model_spec({"name": model, "kwargs": kwargs, "init": "auto"}, num_classes)
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
    return model_spec({**cfg, "kwargs": kwargs, "init": "auto"}, num_classes)


def _spec_from_build_spec(build_spec: Mapping, num_classes: int | None, overrides: dict) -> dict:
    """The model spec of a builder's ``build_spec`` (``overrides`` update its recorded kwargs)."""
    if build_spec.get("builder") not in ("create_lift", "create_widelast"):
        raise UserError(f"not a vitdistill build spec: {dict(build_spec)!r}")
    kwargs = dict(build_spec.get("kwargs") or {}, **overrides)
    kwargs.pop("pretrained_cfg_overlay", None)
    if num_classes is None:
        num_classes = kwargs.pop("num_classes", None)
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
    return model_spec({**cfg, "kwargs": kwargs}, num_classes)


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


def create_from_spec(spec: Mapping, pretrained: bool = False, role: str = "student") -> nn.Module:
    """Build a model spec (random init unless ``pretrained``; a remedy then starts from the base's
    pretrained weights). Unknown names, remedies and keyword arguments raise UserError."""
    import vitdistill.models as vm

    name, remedy = spec["name"], spec.get("remedy", "none")
    check_name(name, role)
    if remedy not in REMEDIES:
        raise UserError(f"unknown remedy {remedy!r} (use none, lift or widelast)")
    kwargs = _spec_kwargs(spec)
    try:
        if remedy == "lift":
            return vm.create_lift(name, int(spec["width"]), pretrained=pretrained, **kwargs)
        if remedy == "widelast":
            return vm.create_widelast(
                name,
                int(spec["width"]),
                num_wide=int(spec.get("num_wide", 1)),
                schedule=spec.get("widelast_schedule", "heads_step"),
                pretrained=pretrained,
                **kwargs,
            )
        return vm.create_base_model(name, pretrained=pretrained, **kwargs)
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot load pretrained weights for {name} (offline?): {first_line(e)}") from None
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


def build_model(spec: str | Mapping, pretrained: bool = False, **kwargs) -> nn.Module:
    """A model from any description read by :func:`as_spec` (``kwargs`` go to timm / the builder)."""
    return create_from_spec(as_spec(spec, kwargs=kwargs), pretrained=pretrained, role="model")


def from_build_spec(build_spec: Mapping, pretrained: bool = False, **overrides) -> nn.Module:
    """Rebuild a builder-made student from its ``build_spec`` (``overrides`` update its kwargs):
    :func:`build_model`, which reads a ``build_spec`` like any other description."""
    return build_model(build_spec, pretrained, **overrides)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def saved_model_spec(path: str | os.PathLike) -> dict | None:
    """The model spec stored in a vitdistill run folder, run checkpoint or export folder (else None)."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            return (json.loads((p / "config.json").read_text()).get("vitdistill") or {}).get("model_spec")
        return None
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if p.is_file() and p.suffix in (".pt", ".pth"):
        with contextlib.suppress(UserError):
            obj = torch_load(p, opt_in=None)
            if isinstance(obj, dict):
                return obj.get("model_spec")
    return None


def load_weights(
    model: nn.Module,
    path: str | os.PathLike,
    role: str = "model",
    ema: bool = False,
    state: dict | None = None,
    trust: bool = False,
    opt_in: str = "--trust-checkpoint",
) -> None:
    """Load ``path`` (or an already read ``state``) into ``model`` strictly, naming any differing keys.

    ``trust`` allows fully unpickling a legacy file (see :mod:`vitdistill.checkpoints`).
    """
    if state is None:
        state, _ = read_state_dict(path, ema=ema, trust=trust, opt_in=opt_in)
    load_state_strict(model, state, str(path), role=role)


def run_checkpoint(run: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint to use for a run folder (``checkpoints/last.pt`` unless given)."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise UserError(f"checkpoint {str(p)!r} not found")
        return p
    p = Path(run) / "checkpoints" / "last.pt"
    if not p.is_file():
        raise UserError(f"{run} is not a finished or running vitdistill run (no checkpoints/last.pt)")
    return p


def load_run_model(run: str | os.PathLike, checkpoint=None, ema: bool = False) -> tuple[nn.Module, dict]:
    """The student of a run (raw or EMA weights) in eval mode, and its checkpoint's model spec."""
    st = read_run_checkpoint(run_checkpoint(run, checkpoint))
    spec = st["model_spec"]
    model = create_from_spec(spec)
    if ema:
        if st.get("ema") is None:
            raise UserError(f"{run} has no EMA weights (trained with ema.enabled: false)")
        model.load_state_dict(st["ema"])
    else:
        model.load_state_dict(st["student"])
    model.eval()
    return model, spec


def load_exported(out_dir: str | os.PathLike) -> nn.Module:
    """Rebuild an exported student (any kind, including remedy-on-base students) in eval mode."""
    d = Path(out_dir)
    cfg_path, weights = d / "config.json", d / "model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise UserError(f"{d} is not an export folder (needs config.json and model.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    spec = (cfg.get("vitdistill") or {}).get("model_spec")
    if spec is None:
        if not cfg.get("architecture"):
            raise UserError(f"{cfg_path} names no architecture")
        spec = as_spec(cfg["architecture"], cfg.get("num_classes"), cfg.get("model_args"))
    model = create_from_spec(spec)
    load_weights(model, weights, role="exported")
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# Any description + any weights -> model and provenance
# --------------------------------------------------------------------------------------------


def create_model(
    name: str | Mapping | None,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    *,
    ema: bool = False,
    role: str = "model",
    opt_in: str = "--trust-checkpoint",
    **kwargs: Any,
) -> tuple[nn.Module, dict]:
    """A model in eval mode and a provenance dict (model, weights source and sha256, kwargs).

    ``name`` is any description :func:`as_spec` reads, or empty when ``checkpoint`` records its
    model (a vitdistill run / export, or a ``config.json`` naming the architecture). Without
    ``num_classes`` a checkpoint's head decides the class count. ``ema`` picks a run's EMA
    weights; ``trust_checkpoint`` allows fully unpickling a legacy checkpoint (it can run code).
    ``role`` ("teacher", ...) names the model in errors; ``opt_in`` is the flag the refusal of
    an untrusted checkpoint names.
    """
    import vitdistill  # noqa: F401  (registers the student models with timm)

    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    if "num_classes" in kwargs:
        n = kwargs.pop("num_classes")
        if num_classes is not None and n is not None and int(n) != int(num_classes):
            raise UserError(f"num_classes={num_classes} and kwargs num_classes={n} disagree")
        num_classes = num_classes if num_classes is not None else n
    sd, cfg, saved = None, {}, None
    if checkpoint:
        sd, cfg = read_state_dict(checkpoint, ema=ema, trust=trust_checkpoint, opt_in=opt_in)
        saved = _saved_spec(checkpoint)
    spec, recorded = _requested_spec(name, saved, cfg, num_classes, kwargs, role)
    if sd is not None and spec["num_classes"] is None:
        spec["num_classes"] = _file_classes(sd)
    model = create_from_spec(spec, pretrained, role=role)
    if sd is not None:
        load_state_strict(model, sd, str(checkpoint), role=role)
    model.eval()
    return model, _provenance(model, spec, checkpoint, pretrained, recorded)


def _requested_spec(name, saved, cfg: dict, num_classes, kwargs: dict, role: str) -> tuple[dict, bool]:
    """The spec to build, and whether it is the one the checkpoint records (rebuilt exactly)."""
    if saved is not None and (
        not name
        or name == saved.get("name")
        and not kwargs
        and num_classes in (None, saved.get("num_classes"))
    ):
        return as_spec(saved, num_classes, kwargs), True
    if not name:
        name = cfg.get("architecture") or cfg.get("model") or cfg.get("model_name")
        if not name:
            raise UserError(
                f"no {role} model name given, and the checkpoint records none (no vitdistill model "
                "spec, no architecture in a config.json beside it)"
            )
        kwargs = {**(cfg.get("model_args") or {}), **kwargs}
    return as_spec(name, num_classes, kwargs), False


def _file_classes(sd: dict) -> int | None:
    """The class count a state dict's classifier has: 0 when it has no head at all."""
    n = head_classes(sd)
    if n is None and not any(k.startswith("head") for k in sd):
        return 0
    return n


def _saved_spec(checkpoint) -> dict | None:
    """The model spec a vitdistill run checkpoint or export records (rebuilds Lift/WideLast exactly)."""
    try:
        return saved_model_spec(checkpoint)
    except Exception:  # noqa: BLE001 - an unreadable spec just means "build by name"
        return None


def _provenance(model: nn.Module, spec: dict, checkpoint, pretrained: bool, recorded: bool) -> dict:
    weights: dict[str, Any]
    if checkpoint:
        file = weights_file(checkpoint)
        kind = "vitdistill checkpoint" if recorded else "checkpoint"
        weights = {"kind": kind, "path": str(file), "sha256": file_sha256(file)}
        if recorded:
            weights["model_spec"] = spec
    elif pretrained:
        arch, tag = spec_label(spec).split(".")[0], getattr(model, "pretrained_cfg", {}).get("tag")
        weights = {"kind": "timm-pretrained", "tag": f"{arch}.{tag}" if tag else spec_label(spec)}
    else:
        weights = {"kind": "random init", "seed": torch.initial_seed()}
    kw = dict(spec.get("kwargs") or {})
    if not recorded and spec.get("num_classes") is not None:
        kw["num_classes"] = spec["num_classes"]
    return {"model": spec_label(spec), "weights": weights, "model_kwargs": kw}


def load_model(
    source: str | os.PathLike | nn.Module,
    checkpoint=None,
    ema: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """A model from a run folder, an export folder, or a model name (+ optional weights file;
    timm's pretrained weights without one). ``num_classes`` applies with a weights file only."""
    if isinstance(source, nn.Module):
        return source.eval()
    p = Path(source)
    if p.is_dir():
        if (p / "checkpoints").is_dir() or checkpoint is not None:
            return load_run_model(p, checkpoint, ema)[0]
        if (p / "model.safetensors").is_file():
            return load_exported(p)
        raise UserError(f"{p} is neither a run folder (checkpoints/) nor an export (model.safetensors)")
    model, _ = create_model(
        str(source),
        checkpoint,
        pretrained=checkpoint is None,
        num_classes=num_classes if checkpoint is not None else None,
        trust_checkpoint=trust_checkpoint,
        ema=ema,
    )
    return model
