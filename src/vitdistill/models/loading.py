"""The one place that builds models and loads their weights (every command goes through it).

* :func:`create_model`: a timm name (or a vitdistill checkpoint that records its model) with a
  local checkpoint, timm pretrained weights or a random init -> the model and its provenance
  (``analyze``, ``compare``, ``inspect``, and :func:`load_model`).
* :func:`load_model`: a run folder, an export folder or a timm name (+ weights) -> the model
  (``eval``).
* :func:`load_run_model` / :func:`load_exported`: a vitdistill run's student / an export
  (``export``, ``eval``, ``train``'s teacher).
* A student is described by a small *model spec* dict (name, remedy, width, num_wide,
  widelast_schedule, kwargs, num_classes) saved in every checkpoint and export:
  :func:`model_spec`, :func:`create_from_spec`, :func:`saved_model_spec`.

Weights are read by :mod:`vitdistill.checkpoints` (never unpickled in full unless the user opts
in); a checkpoint that does not fit the model is a UserError naming the keys.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from vitdistill.errors import UserError, closest_names
from vitdistill.utils.io import file_sha256


def check_name(name: str, role: str = "model") -> None:
    """A UserError naming the closest timm models when ``name`` (``arch.tag`` allowed) is not one."""
    import timm

    arch = name.split(".")[0]
    if timm.is_model(arch):
        return
    near = closest_names(arch, timm.list_models(), n=5)
    hint = f"; closest: {', '.join(near)}" if near else ""
    raise UserError(f"unknown {role} model {name!r}{hint}")


def model_spec(cfg_model: dict, num_classes: int) -> dict[str, Any]:
    """What is needed to rebuild a student: saved in checkpoints and exports."""
    return {
        "name": cfg_model["name"],
        "remedy": cfg_model.get("remedy", "none"),
        "width": cfg_model.get("width"),
        "num_wide": cfg_model.get("num_wide", 1),
        "widelast_schedule": cfg_model.get("widelast_schedule", "heads_step"),
        "kwargs": dict(cfg_model.get("kwargs") or {}),
        "num_classes": int(num_classes),
    }


def create_from_spec(spec: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """Instantiate a student from a model spec (random init unless ``pretrained``)."""
    import timm

    import vitdistill.models as vm

    name, remedy = spec["name"], spec.get("remedy", "none")
    check_name(name, "student")
    kwargs = dict(spec.get("kwargs") or {})
    if kwargs.pop("num_classes", None) not in (None, spec["num_classes"]):
        raise UserError(
            f"model.kwargs.num_classes disagrees with the data ({spec['num_classes']} classes); drop it from the config"
        )
    kwargs["num_classes"] = spec["num_classes"]
    try:
        if remedy == "none":
            return timm.create_model(name, pretrained=pretrained, **kwargs)
        if pretrained:
            raise UserError(
                "model.pretrained is not supported with a remedy; use model.checkpoint with base weights"
            )
        if remedy == "lift":
            return vm.create_lift(name, int(spec["width"]), **kwargs)
        if remedy == "widelast":
            return vm.create_widelast(
                name,
                int(spec["width"]),
                num_wide=int(spec.get("num_wide", 1)),
                schedule=spec.get("widelast_schedule", "heads_step"),
                **kwargs,
            )
    except TypeError as e:  # unexpected kwargs reach the model constructor
        raise UserError(f"cannot build model {name!r} with kwargs {kwargs}: {e}") from None
    raise UserError(f"unknown remedy {remedy!r} (use none, lift or widelast)")


def saved_model_spec(path: str | os.PathLike) -> dict | None:
    """The model spec stored in a vitdistill run folder, run checkpoint or export folder (else None)."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        import json

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
        spec = {
            "name": cfg["architecture"],
            "remedy": "none",
            "kwargs": cfg.get("model_args") or {},
            "num_classes": cfg["num_classes"],
        }
    model = create_from_spec(spec)
    load_weights(model, weights, role="exported")
    model.eval()
    return model


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, dict]:
    """A model in eval mode and a provenance dict (name, weights source, sha256, kwargs).

    ``trust_checkpoint`` allows fully unpickling a legacy checkpoint (it can run code).
    """
    import timm

    import vitdistill  # noqa: F401  (registers the student models with timm)

    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    sd, cfg = (None, {})
    if checkpoint:
        sd, cfg = read_state_dict(checkpoint, trust=trust_checkpoint)
        spec = _saved_spec(checkpoint)
        if spec is not None and not kwargs and num_classes is None and (not name or name == spec.get("name")):
            return _from_spec(spec, sd, checkpoint)
    if not name and cfg:
        name = cfg.get("architecture") or cfg.get("model") or cfg.get("model_name") or ""
    if not name:
        raise UserError("no model name given and none found in the checkpoint's config.json")
    if not timm.is_model(name):
        near = closest_names(name, timm.list_models())
        hint = f"; did you mean {', '.join(near)}?" if near else "; see timm.list_models()"
        raise UserError(f"unknown model {name!r}{hint}")
    if num_classes is None and sd is not None:
        num_classes = head_classes(sd)
        if num_classes is None and not any(k.startswith("head") for k in sd):
            num_classes = 0
    kw = dict(kwargs)
    if num_classes is not None:
        kw["num_classes"] = num_classes
    try:
        model = timm.create_model(name, pretrained=pretrained, **kw)
    except UserError:
        raise
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        if pretrained and "pretrained" in str(e).lower() or "download" in str(e).lower():
            raise UserError(
                f"cannot load pretrained weights for {name}: {str(e).splitlines()[0][:200]}"
            ) from None
        raise UserError(f"cannot build {name} with {kw}: {str(e).splitlines()[0][:200]}") from None
    except OSError as e:
        raise UserError(
            f"cannot load pretrained weights for {name} (offline?): {str(e).splitlines()[0][:200]}"
        ) from None
    weights: dict[str, Any]
    if sd is not None:
        file = weights_file(checkpoint)
        load_state_strict(model, sd, str(checkpoint))
        weights = {"kind": "checkpoint", "path": str(file), "sha256": file_sha256(file)}
    elif pretrained:
        tag = getattr(model, "pretrained_cfg", {}).get("tag")
        weights = {"kind": "timm-pretrained", "tag": f"{name}.{tag}" if tag else name}
    else:
        weights = {"kind": "random init", "seed": torch.initial_seed()}
    model.eval()
    return model, {"model": name, "weights": weights, "model_kwargs": kw}


def _saved_spec(checkpoint) -> dict | None:
    """The model spec a vitdistill run checkpoint or export records (rebuilds Lift/WideLast exactly)."""
    try:
        return saved_model_spec(checkpoint)
    except Exception:  # noqa: BLE001 - an unreadable spec just means "build by name"
        return None


def _from_spec(spec: dict, sd: dict, checkpoint) -> tuple[nn.Module, dict]:
    model = create_from_spec(spec)
    load_state_strict(model, sd, str(checkpoint))
    file = weights_file(checkpoint)
    model.eval()
    weights = {
        "kind": "vitdistill checkpoint",
        "path": str(file),
        "sha256": file_sha256(file),
        "model_spec": spec,
    }
    return model, {
        "model": spec["name"] + (f"+{spec['remedy']}" if spec.get("remedy", "none") != "none" else ""),
        "weights": weights,
        "model_kwargs": dict(spec.get("kwargs") or {}),
    }


def load_model(
    source: str | os.PathLike | nn.Module,
    checkpoint=None,
    ema: bool = False,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """A model from a run folder, an export folder, or a timm name (+ optional weights file)."""
    import timm

    if isinstance(source, nn.Module):
        return source.eval()
    p = Path(source)
    if p.is_dir():
        if (p / "checkpoints").is_dir() or checkpoint is not None:
            return load_run_model(p, checkpoint, ema)[0]
        if (p / "model.safetensors").is_file():
            return load_exported(p)
        raise UserError(f"{p} is neither a run folder (checkpoints/) nor an export (model.safetensors)")
    name = str(source)
    check_name(name, "evaluated")
    kwargs = {} if num_classes is None or checkpoint is None else {"num_classes": num_classes}
    try:
        model = timm.create_model(name, pretrained=checkpoint is None, **kwargs)
    except (RuntimeError, OSError) as e:
        raise UserError(
            f"cannot load pretrained weights for {name!r} ({str(e).splitlines()[0][:200]}); "
            "pass --checkpoint FILE"
        ) from None
    if checkpoint is not None:
        load_weights(model, checkpoint, role="model", ema=ema, trust=trust_checkpoint)
    return model.eval()
