"""Build students and teachers from the config, and load weights from local files.

A student is described by a small "model spec" dict (name, remedy, width, num_wide,
widelast_schedule, kwargs, num_classes) that is saved in every checkpoint and export, so the exact model can be rebuilt
later without the training config.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from vitdistill.checkpoints import head_classes, load_state_strict, read_state_dict, torch_load
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
        "widelast_schedule": cfg_model.get("widelast_schedule", "heads_step"),
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


def build_teacher(cfg_teacher: dict) -> nn.Module:
    """The frozen teacher in eval mode: timm name + kwargs, pretrained or a local file.

    A teacher trained by vitdistill (run folder or export) may omit ``name``: its saved model
    spec rebuilds it exactly (Lift / WideLast teachers included).
    """
    import timm

    name = cfg_teacher.get("name")
    ckpt = cfg_teacher.get("checkpoint")
    trust = bool(cfg_teacher.get("trust_checkpoint"))
    opt_in = "--trust-checkpoint (or teacher.trust_checkpoint: true)"
    if not name:
        spec = saved_model_spec(ckpt) if ckpt else None
        if spec is None:
            if ckpt:  # an unreadable or refused file says so first
                read_state_dict(ckpt, trust=trust, opt_in=opt_in)
            raise UserError(
                "teacher.name is not set (and teacher.checkpoint is not a vitdistill run or export "
                "that records its model)"
            )
        teacher = create_from_spec(spec)
        load_weights(teacher, ckpt, role="teacher", trust=trust, opt_in=opt_in)
        teacher.requires_grad_(False)
        return teacher.eval()
    _check_name(name, "teacher")
    kwargs = dict(cfg_teacher.get("kwargs") or {})
    state = None
    if ckpt:
        state, _ = read_state_dict(ckpt, trust=trust, opt_in=opt_in)
        n_head = head_classes(state)
        if "num_classes" not in kwargs and n_head is not None:
            kwargs["num_classes"] = n_head  # a teacher trained on other data keeps its classes
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
