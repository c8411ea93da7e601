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

import os
from typing import Any

import torch
from torch import nn

from vitdistill.models.loading import (  # noqa: F401  (load_exported re-exported)
    load_exported,
    load_run_model,
    run_checkpoint,
    timm_architecture,
)
from vitdistill.utils.io import atomic_write_json, atomic_write_with, result_set
from vitdistill.utils.lock import hold_folder, releases_folders
from vitdistill.utils.markers import refuse_inside

EXPORT_FILES = ("model.safetensors", "config.json")


@releases_folders
def export(
    run: str | os.PathLike, out_dir: str | os.PathLike, ema: bool = False, checkpoint=None
) -> dict[str, Any]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json``; returns the config written."""
    from safetensors.torch import save_file

    from vitdistill.data import resolve_data_config

    model, spec = load_run_model(run, checkpoint, ema)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    data_cfg = resolve_data_config(model)
    arch, model_args = timm_architecture(spec)
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
    refuse_inside(out_dir, [run], "--out")
    hold_folder(out_dir, "export")
    with result_set(out_dir, lambda name: name in EXPORT_FILES) as out:  # both files new, or both old
        atomic_write_with(
            out / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"})
        )
        atomic_write_json(out / "config.json", config)
    return config


def count_state(model: nn.Module) -> int:
    return sum(t.numel() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
