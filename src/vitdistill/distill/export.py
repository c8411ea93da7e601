"""Export a trained run as ``model.safetensors`` + a timm-style ``config.json``.

Only the student is written: a ``loss.projector=linear`` run's feature-KD projectors are dropped (a
``pool`` run, the paper's baseline, has none), while a Lift student keeps its lifting projector
(it is part of the model). Every export loads with::

    import timm, vitdistill  # vitdistill registers its students with timm
    model = timm.create_model("local-dir:DIR", pretrained=True)

or with ``vitdistill.models.create_model("DIR")``. A student built by a remedy on any base is
recorded as ``vitdistill_lift`` / ``vitdistill_widelast`` with its base in ``model_args``; the
vitdistill block of ``config.json`` keeps the model spec, from which vitdistill rebuilds it exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitdistill.errors import UserError
from vitdistill.models import create_model, timm_architecture
from vitdistill.utils.io import atomic_write_json, atomic_write_with, result_set
from vitdistill.utils.lock import hold_folder, releases_folders
from vitdistill.utils.markers import refuse_inside

EXPORT_FILES = ("model.safetensors", "config.json")


def _run_checkpoint(run: str | os.PathLike, checkpoint: str | os.PathLike | None) -> Path:
    """The checkpoint to export: ``checkpoint`` when given, else ``RUN/checkpoints/last.pt``."""
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.is_file():
            raise UserError(f"checkpoint {str(p)!r} not found")
        return p
    p = Path(run) / "checkpoints" / "last.pt"
    if not p.is_file():
        raise UserError(f"{run} is not a finished or running vitdistill run (no checkpoints/last.pt)")
    return p


@releases_folders
def export(
    run: str | os.PathLike, out_dir: str | os.PathLike, ema: bool = False, checkpoint=None
) -> dict[str, Any]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json``; returns the config written."""
    from safetensors.torch import save_file

    from vitdistill.data import resolve_data_config

    source = _run_checkpoint(run, checkpoint)
    model, prov = create_model(source, ema=ema, opt_in=None)  # vitdistill wrote it: no opt-in
    spec = prov["weights"].get("model_spec")
    if spec is None or source.suffix == ".safetensors":
        raise UserError(f"{source} is not a vitdistill training checkpoint (it records no model spec)")
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
            "source": str(source),
            "rebuild": "vitdistill.models.create_model(DIR)",
        },
    }
    refuse_inside(out_dir, [run], "out_dir")
    hold_folder(out_dir, "export")
    with result_set(out_dir, lambda name: name in EXPORT_FILES) as out:  # both files new, or both old
        atomic_write_with(
            out / "model.safetensors", lambda tmp: save_file(state, tmp, metadata={"format": "pt"})
        )
        atomic_write_json(out / "config.json", config)
    return config


def load_recipe(out_dir: str | os.PathLike) -> str:
    """Python that loads the export in ``out_dir`` in a fresh interpreter (what ``export`` prints)."""
    source = f"local-dir:{Path(out_dir).resolve()}"
    return f"import timm, vitdistill\nmodel = timm.create_model({source!r}, pretrained=True)"
