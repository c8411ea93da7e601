"""Build a timm model by name and load weights from a local file, a vitdistill run, or timm.

Weights are read by :mod:`vitdistill.checkpoints` (safetensors, .pt files, vitdistill runs and
exports). A checkpoint that does not fit the model is a UserError naming the keys.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vitdistill.checkpoints import head_classes, load_state_strict, read_state_dict, weights_file
from vitdistill.errors import UserError, closest_names
from vitdistill.utils.io import file_sha256


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
        from vitdistill.distill.build import saved_model_spec
    except ImportError:  # pragma: no cover - training package absent
        return None
    try:
        return saved_model_spec(checkpoint)
    except Exception:  # noqa: BLE001 - an unreadable spec just means "build by name"
        return None


def _from_spec(spec: dict, sd: dict, checkpoint) -> tuple[nn.Module, dict]:
    from vitdistill.distill.build import create_from_spec

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
