"""Export a trained run as ``model.safetensors`` + a timm-style ``config.json``.

Only the student is written: a ``loss.projector=linear`` run's feature-KD projectors are dropped (a
``pool`` run, the paper's baseline, has none), while a Lift student keeps its lifting projector
(it is part of the model). For a plain timm architecture
or a registered student the export loads with::

    cfg = json.load(open(DIR / "config.json"))
    timm.create_model(cfg["architecture"], pretrained=True, num_classes=cfg["num_classes"],
                      pretrained_cfg_overlay=dict(file=str(DIR / "model.safetensors"),
                                                  num_classes=cfg["num_classes"]),
                      **cfg["model_args"])

(``num_classes`` in the overlay stops timm from discarding the head as "adapted"), or in short
``timm.create_model(f"local-dir:{DIR}", pretrained=True)``. A student built by a remedy on any base
is recorded as ``vitdistill_lift`` / ``vitdistill_widelast`` with its base in ``model_args``;
:func:`load_exported` rebuilds every export from the vitdistill model spec.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.distill import build as build_mod
from vitdistill.errors import UserError
from vitdistill.utils.io import atomic_write_json, atomic_write_with


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
    from vitdistill.distill import checkpoint as ckpt_mod

    st = ckpt_mod.load(run_checkpoint(run, checkpoint))
    spec = st["model_spec"]
    model = build_mod.create_from_spec(spec)
    if ema:
        if st.get("ema") is None:
            raise UserError(f"{run} has no EMA weights (trained with ema.enabled: false)")
        model.load_state_dict(st["ema"])
    else:
        model.load_state_dict(st["student"])
    model.eval()
    return model, spec


def _timm_name_and_args(spec: dict) -> tuple[str, dict[str, Any]]:
    """The timm architecture and ``model_args`` that rebuild this student (remedies on any base
    are registered as ``vitdistill_lift`` / ``vitdistill_widelast``)."""
    kwargs = dict(spec.get("kwargs") or {})
    remedy = spec.get("remedy", "none")
    if remedy == "lift":
        return "vitdistill_lift", dict(base=spec["name"], lift_dim=int(spec["width"]), **kwargs)
    if remedy == "widelast":
        args = dict(base=spec["name"], wide_dim=int(spec["width"]), num_wide=int(spec.get("num_wide", 1)))
        return "vitdistill_widelast", dict(args, **kwargs)
    return spec["name"].split(".")[0], kwargs


def export(
    run: str | os.PathLike, out_dir: str | os.PathLike, ema: bool = False, checkpoint=None
) -> dict[str, Any]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json``; returns the config written."""
    from safetensors.torch import save_file

    from vitdistill.data import resolve_data_config

    model, spec = load_run_model(run, checkpoint, ema)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_with(out / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    data_cfg = resolve_data_config(model)
    arch, model_args = _timm_name_and_args(spec)
    pretrained_cfg = {
        "num_classes": spec["num_classes"],
        "input_size": list(data_cfg["input_size"]),
        "interpolation": data_cfg.get("interpolation"),
        "mean": list(data_cfg["mean"]),
        "std": list(data_cfg["std"]),
        "crop_pct": data_cfg.get("crop_pct"),
        "crop_mode": data_cfg.get("crop_mode"),
        "classifier": (getattr(model, "pretrained_cfg", {}) or {}).get("classifier", "head"),
    }
    config = {
        "architecture": arch,
        "num_classes": spec["num_classes"],
        "num_features": int(getattr(model, "num_features", 0) or 0),
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
        "vitdistill": {
            "model_spec": spec,
            "weights": "ema" if ema else "raw",
            "source": str(run_checkpoint(run, checkpoint)),
            "rebuild": "vitdistill.distill.load_exported(DIR)",
        },
    }
    atomic_write_json(out / "config.json", config)
    return config


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
    model = build_mod.create_from_spec(spec)
    build_mod.load_weights(model, weights, role="exported")
    model.eval()
    return model


def count_state(model: nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
