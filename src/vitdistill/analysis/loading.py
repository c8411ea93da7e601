"""Build a timm model by name and load weights from a local file, a vitdistill run, or timm.

Accepted weight sources: ``.safetensors``; ``.pt``/``.pth``/``.bin`` holding a raw state dict or
one under ``state_dict`` / ``model`` / ``state_dict_ema`` / ``model_ema``; a vitdistill run folder
(``RUN/checkpoints/best.pt``, else ``last.pt``); an export folder (``model.safetensors`` beside
``config.json``). A checkpoint that does not fit the model is a UserError naming the keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.errors import UserError, closest_names
from vitdistill.utils.io import file_sha256

STATE_KEYS = ("student", "state_dict", "model", "model_state", "state_dict_ema", "model_ema")


def _resolve_file(path: Path) -> tuple[Path, dict]:
    """The weights file inside ``path`` and any config.json found beside it."""
    cfg: dict = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            cfg = json.loads((path / "config.json").read_text())
        for cand in ("model.safetensors", "checkpoints/best.pt", "checkpoints/last.pt", "model.pt", "pytorch_model.bin"):
            if (path / cand).is_file():
                return path / cand, cfg
        raise UserError(f"{path} is a folder without weights (model.safetensors or checkpoints/best.pt)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if (path.parent / "config.json").is_file() and path.suffix == ".safetensors":
        cfg = json.loads((path.parent / "config.json").read_text())
    return path, cfg


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config found beside it) from any of the supported checkpoint layouts."""
    file, cfg = _resolve_file(Path(path).expanduser())
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=False)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file from the user's side
        raise UserError(f"cannot read checkpoint {file}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if isinstance(sd, dict):
        for key in STATE_KEYS:
            if isinstance(sd.get(key), dict):
                if key == "model" and isinstance(sd.get("config"), dict):
                    cfg = {**sd["config"], **cfg}
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"checkpoint {file} holds no state dict (looked for {', '.join(STATE_KEYS)} or raw tensors)")
    prefix = "module."
    if sd and all(k.startswith(prefix) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd, cfg


def _head_classes(sd: dict[str, torch.Tensor]) -> int | None:
    for key in ("head.weight", "head.fc.weight", "fc.weight", "classifier.weight"):
        if key in sd and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None


def load_state_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} of another shape (e.g. {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})")
        raise UserError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def create_model(
    name: str,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = False,
    num_classes: int | None = None,
    **kwargs: Any,
) -> tuple[nn.Module, dict]:
    """A model in eval mode and a provenance dict (name, weights source, sha256, kwargs)."""
    import timm

    import vitdistill  # noqa: F401  (registers the student models with timm)

    if pretrained and checkpoint:
        raise UserError("give either --pretrained or --checkpoint, not both")
    sd, cfg = (None, {})
    if checkpoint:
        sd, cfg = read_state_dict(checkpoint)
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
        num_classes = _head_classes(sd)
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
            raise UserError(f"cannot load pretrained weights for {name}: {str(e).splitlines()[0][:200]}") from None
        raise UserError(f"cannot build {name} with {kw}: {str(e).splitlines()[0][:200]}") from None
    except OSError as e:
        raise UserError(f"cannot load pretrained weights for {name} (offline?): {str(e).splitlines()[0][:200]}") from None
    weights: dict[str, Any]
    if sd is not None:
        file, _ = _resolve_file(Path(checkpoint).expanduser())
        load_state_into(model, sd, str(checkpoint))
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
    load_state_into(model, sd, str(checkpoint))
    file, _ = _resolve_file(Path(checkpoint).expanduser())
    model.eval()
    weights = {"kind": "vitdistill checkpoint", "path": str(file), "sha256": file_sha256(file), "model_spec": spec}
    return model, {"model": spec["name"] + (f"+{spec['remedy']}" if spec.get("remedy", "none") != "none" else ""),
                   "weights": weights, "model_kwargs": dict(spec.get("kwargs") or {})}
