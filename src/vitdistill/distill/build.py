"""Build students and teachers from the config, and load weights from local files.

A student is described by a small "model spec" dict (name, remedy, width, num_wide, kwargs,
num_classes) that is saved in every checkpoint and export, so the exact model can be rebuilt
later without the training config.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.errors import UserError, closest_names


def _check_name(name: str, role: str) -> None:
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
        "kwargs": dict(cfg_model.get("kwargs") or {}),
        "num_classes": int(num_classes),
    }


def create_from_spec(spec: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """Instantiate a student from a model spec (random init unless ``pretrained``)."""
    import timm

    import vitdistill.models as vm

    name, remedy = spec["name"], spec.get("remedy", "none")
    _check_name(name, "student")
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
            raise UserError("model.pretrained is not supported with a remedy; use model.checkpoint with base weights")
        if remedy == "lift":
            return vm.create_lift(name, int(spec["width"]), **kwargs)
        if remedy == "widelast":
            return vm.create_widelast(name, int(spec["width"]), num_wide=int(spec.get("num_wide", 1)), **kwargs)
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
        with contextlib.suppress(Exception):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                return obj.get("model_spec")
    return None


def build_teacher(cfg_teacher: dict) -> nn.Module:
    """The frozen teacher in eval mode: timm name + kwargs, pretrained or a local file.

    A teacher trained by vitdistill (run folder or export) may omit ``name``: its saved model
    spec rebuilds it exactly (Lift / WideLast teachers included).
    """
    import timm

    name = cfg_teacher.get("name")
    ckpt = cfg_teacher.get("checkpoint")
    if not name:
        spec = saved_model_spec(ckpt) if ckpt else None
        if spec is None:
            raise UserError("teacher.name is not set (and teacher.checkpoint is not a vitdistill run or export "
                            "that records its model)")
        teacher = create_from_spec(spec)
        load_weights(teacher, ckpt, role="teacher")
        teacher.requires_grad_(False)
        return teacher.eval()
    _check_name(name, "teacher")
    kwargs = dict(cfg_teacher.get("kwargs") or {})
    state = None
    if ckpt:
        state = read_state_dict(ckpt)
        head = state.get("head.weight", state.get("module.head.weight"))
        if "num_classes" not in kwargs and head is not None and head.ndim == 2:
            kwargs["num_classes"] = int(head.shape[0])  # a teacher trained on other data keeps its classes
    try:
        teacher = timm.create_model(name, pretrained=bool(cfg_teacher.get("pretrained")), **kwargs)
    except TypeError as e:
        raise UserError(f"cannot build teacher {name!r} with kwargs {kwargs}: {e}") from None
    except (RuntimeError, OSError) as e:
        if cfg_teacher.get("pretrained"):
            raise UserError(
                f"cannot load pretrained weights for teacher {name!r} ({str(e).splitlines()[0][:200]}); "
                "download them into the timm/HF cache or use teacher.checkpoint: FILE"
            ) from None
        raise
    if state is not None:
        load_weights(teacher, ckpt, role="teacher", state=state)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher


def read_state_dict(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """Weights from safetensors, a .pt/.pth file, a vitdistill run checkpoint, a run folder or an export folder."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "model.safetensors", p / "checkpoints" / "last.pt"):
            if cand.is_file():
                p = cand
                break
        else:
            raise UserError(f"{path}: folder has neither model.safetensors nor checkpoints/last.pt")
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error types
            raise UserError(f"cannot read {p}: {e}") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {p}: {str(e).splitlines()[0][:200]}") from None
    if isinstance(obj, dict) and "student" in obj:  # a vitdistill run checkpoint
        if ema:
            if obj.get("ema") is None:
                raise UserError(f"{p} holds no EMA weights (the run had ema.enabled: false)")
            return obj["ema"]
        return obj["student"]
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return obj[key]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise UserError(f"{p} does not look like a checkpoint (no tensors found)")


def load_weights(model: nn.Module, path: str | os.PathLike, role: str = "model", ema: bool = False,
                 state: dict | None = None) -> None:
    """Load ``path`` into ``model`` strictly; a mismatch is a UserError listing the differing keys."""
    if state is None:
        state = read_state_dict(path, ema=ema)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if shape:
            k = shape[0]
            parts.append(f"shape mismatch in {len(shape)} (e.g. {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise UserError(f"{role} checkpoint {path} does not fit the {role} model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
