"""Model weights from the files people have: one reader for ``analyze``, ``train``, ``eval`` and ``export``.

Accepted sources:

* ``.safetensors`` (an export folder's ``model.safetensors``, with the ``config.json`` beside it);
* ``.pt`` / ``.pth`` / ``.bin`` holding a raw state dict, or one under ``state_dict`` / ``model`` /
  ``model_state`` / ``state_dict_ema`` / ``model_ema``;
* a vitdistill run checkpoint (``student`` weights, ``ema`` with ``ema=True``);
* a folder: an export (``model.safetensors``), or a run (``checkpoints/last.pt``: the last epoch,
  which is the figure a run reports).

Files are read with ``torch.load(weights_only=True)``, which refuses to run code. Checkpoints
written by other training scripts sometimes pickle more than tensors (DeiT's hold an argparse
``Namespace``); unpickling those in full can run arbitrary code, so they are refused with an
error naming the opt-in (``--trust-checkpoint`` on the command line, ``teacher.trust_checkpoint``
/ ``model.trust_checkpoint`` in a training config). Only then are they unpickled, as timm does.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.errors import UserError, first_line

FOLDER_WEIGHTS = ("model.safetensors", "checkpoints/last.pt", "model.pt", "pytorch_model.bin")
STATE_KEYS = ("state_dict", "model", "model_state", "state_dict_ema", "model_ema")


def weights_file(path: str | os.PathLike) -> Path:
    """The file holding the weights: ``path`` itself, or the weights inside a run / export folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in FOLDER_WEIGHTS:
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p} is a folder without weights (looked for {', '.join(FOLDER_WEIGHTS)})")
    if not p.is_file():
        raise UserError(f"checkpoint {p} does not exist")
    return p


def _config_beside(file: Path) -> dict:
    cfg = file.parent / "config.json"
    if file.suffix == ".safetensors" and cfg.is_file():
        try:
            return json.loads(cfg.read_text())
        except (ValueError, OSError):
            raise UserError(f"{cfg} is not valid JSON") from None
    return {}


def _pickled_names(file: Path) -> list[str] | None:
    """The importable names a pickle refers to, read with pickletools (nothing runs); None if not a pickle."""
    import pickletools
    import zipfile

    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(file):
                z = stack.enter_context(zipfile.ZipFile(file))
                pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if pkl is None:
                    return None
                f = stack.enter_context(z.open(pkl))
            else:
                f = stack.enter_context(open(file, "rb"))
            names, strings = [], []
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - not parseable as a pickle: a damaged or foreign file
        return None
    return [n for n in dict.fromkeys(names) if not n.startswith(("torch.", "collections.OrderedDict"))]


def torch_load(
    file: str | os.PathLike, trust: bool = False, opt_in: str | None = "--trust-checkpoint"
) -> Any:
    """The one ``torch.load`` of vitdistill: never unpickles arbitrary objects unless ``trust``.

    A pickle that needs more than tensors raises a UserError naming ``opt_in`` (``None``: a
    file vitdistill wrote itself, for which no opt-in exists). Any unreadable file is a
    one-line UserError; torch's warnings about the file stay off the terminal.
    """
    file = Path(file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = _pickled_names(file)
            if names is None:
                raise UserError(f"cannot read checkpoint {file}: not a PyTorch or pickle file") from None
            what = f" ({', '.join(names[:3])})" if names else ""
            if opt_in is None:
                raise UserError(
                    f"{file} pickles Python objects besides tensors{what}, which vitdistill never writes; "
                    "it was not unpickled"
                ) from None
            if not trust:
                raise UserError(
                    f"checkpoint {file} pickles Python objects besides tensors{what}, and unpickling it "
                    f"could run code; if you trust the file, pass {opt_in}"
                ) from None
        except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is unusable
            raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None
        try:
            return torch.load(file, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None


def read_state_dict(
    path: str | os.PathLike, ema: bool = False, trust: bool = False, opt_in: str = "--trust-checkpoint"
) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the config found with it) from any supported file or folder.

    ``ema=True`` picks a vitdistill run's EMA weights. A ``module.`` prefix (DDP) is removed.
    ``trust=True`` allows full unpickling of a legacy file (see the module docstring); the
    refusal otherwise names ``opt_in``.
    """
    file = weights_file(path)
    cfg = _config_beside(file)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(file))
        else:
            obj = torch_load(file, trust, opt_in)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is unusable
        raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("student"), dict):  # a vitdistill run checkpoint
        if ema:
            if obj.get("ema") is None:
                raise UserError(f"{file} holds no EMA weights (the run had ema.enabled: false)")
            obj = obj["ema"]
        else:
            obj = obj["student"]
    elif ema:
        raise UserError(f"{file} is not a vitdistill run checkpoint, so it has no EMA weights to pick")
    elif isinstance(obj, dict):
        for key in STATE_KEYS:
            if isinstance(obj.get(key), dict):
                if key == "model" and isinstance(obj.get("config"), dict):
                    cfg = {**obj["config"], **cfg}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"checkpoint {file} holds no state dict (looked for {', '.join(STATE_KEYS)} or raw tensors)"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj, cfg


def head_classes(sd: dict[str, torch.Tensor]) -> int | None:
    """The class count of the classifier in a state dict, if it has a recognisable one."""
    for key in ("head.weight", "head.fc.weight", "fc.weight", "classifier.weight"):
        if key in sd and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None


def load_state_strict(
    model: nn.Module, sd: dict[str, torch.Tensor], source: str, role: str = "model"
) -> None:
    """Load ``sd`` into ``model``; any missing, unexpected or reshaped key is a UserError naming examples."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    reshaped = [k for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if reshaped:
            k = reshaped[0]
            parts.append(
                f"{len(reshaped)} of another shape (e.g. {k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)})"
            )
        raise UserError(f"{role} checkpoint {source} does not fit the {role}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def read_run_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A vitdistill training checkpoint (``checkpoints/last.pt``): tensors and containers, never unpickled."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found")
    state = torch_load(p, opt_in=None)
    if not isinstance(state, dict) or "student" not in state or "epoch" not in state:
        raise UserError(f"{p} is not a vitdistill training checkpoint")
    return state
