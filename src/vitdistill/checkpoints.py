"""Model weights from the files people have: one reader for ``analyze``, ``train``, ``eval`` and ``export``.

Accepted sources:

* ``.safetensors`` (an export folder's ``model.safetensors``, with the ``config.json`` beside it);
* ``.pt`` / ``.pth`` / ``.bin`` holding a raw state dict, or one under ``state_dict`` / ``model`` /
  ``model_state`` / ``state_dict_ema`` / ``model_ema``;
* a vitdistill run checkpoint (``student`` weights, ``ema`` with ``ema=True``);
* a folder: an export (``model.safetensors``), or a run (``checkpoints/last.pt``: the last epoch,
  which is the figure a run reports).

This is the only module that opens a weights file, and it reads each file once (the same bytes
give the tensors and the sha256 that provenance records). Files are read with
``torch.load(weights_only=True)``, which refuses to run code. Checkpoints written by other
training scripts sometimes pickle more than tensors (DeiT's hold an argparse ``Namespace``);
unpickling those in full can run arbitrary code, so they are refused with an error naming the
setting that allows it (the keyword ``trust_checkpoint=True``; ``teacher.trust_checkpoint`` /
``model.trust_checkpoint`` in a training config). Only then are they unpickled, as timm does.

Weights that go into a model are checked first: a floating-point tensor of the model must come
from a finite floating-point tensor in the file (integer buffers such as index tables and
counters load as they are).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitdistill.errors import UserError, first_line

FOLDER_WEIGHTS = ("model.safetensors", "checkpoints/last.pt", "model.pt", "pytorch_model.bin")
STATE_KEYS = ("state_dict", "model", "model_state", "state_dict_ema", "model_ema")
TRUST_OPT_IN = "trust_checkpoint=True"  # the keyword that allows unpickling a legacy file


def weights_file(path: str | os.PathLike) -> Path:
    """The file holding the weights: ``path`` itself, or the weights inside a run / export folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in FOLDER_WEIGHTS:
            if (p / name).is_file():
                return p / name
        raise UserError(f"{p} is a folder without weights (looked for {', '.join(FOLDER_WEIGHTS)})")
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist")
    if not p.is_file():
        raise UserError(f"checkpoint {p} is not a regular file")
    return p


def _config_beside(file: Path) -> dict:
    cfg = file.parent / "config.json"
    if file.suffix == ".safetensors" and cfg.is_file():
        try:
            return json.loads(cfg.read_text())
        except (ValueError, OSError):
            raise UserError(f"{cfg} is not valid JSON") from None
    return {}


def _pickled_names(data: bytes) -> list[str] | None:
    """The importable names a pickle refers to, read with pickletools (nothing runs); None if not a pickle."""
    import pickletools
    import zipfile

    try:
        with contextlib.ExitStack() as stack:
            buf = io.BytesIO(data)
            if zipfile.is_zipfile(buf):
                z = stack.enter_context(zipfile.ZipFile(buf))
                pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if pkl is None:
                    return None
                f = stack.enter_context(z.open(pkl))
            else:
                f = io.BytesIO(data)
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


def torch_load(file: str | os.PathLike, trust: bool = False, opt_in: str | None = TRUST_OPT_IN) -> Any:
    """The one ``torch.load`` of vitdistill: never unpickles arbitrary objects unless ``trust``.

    A pickle that needs more than tensors raises a UserError naming ``opt_in`` (the setting that
    allows it; ``None``: a file vitdistill wrote itself, for which no opt-in exists). Any
    unreadable file is a one-line UserError; torch's warnings about the file stay off the terminal.
    """
    file = Path(file)
    return _unpickle(_read_bytes(file), file, trust, opt_in)


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise UserError(f"checkpoint {file} does not exist") from None
    except OSError as e:
        raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None


def _unpickle(data: bytes, file: Path, trust: bool, opt_in: str | None) -> Any:
    """``torch.load`` of a file's bytes, tensors only unless ``trust`` (see :func:`torch_load`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            names = _pickled_names(data)
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
                    f"could run code; if you trust the file, pass {opt_in}",
                    settings=("trust_checkpoint",),
                ) from None
        except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is unusable
            raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None


@dataclass
class Weights:
    """What one weights source holds, read from disk once."""

    state: dict[str, torch.Tensor]  # the state dict (a run's student or EMA weights)
    file: Path  # the file it came from
    config: dict  # a timm-style config found with it (an export's config.json), else {}
    model_spec: dict | None  # the model spec vitdistill recorded (run checkpoints and exports)
    sha256: str  # of the file's bytes


def read_weights(
    path: str | os.PathLike, ema: bool = False, trust: bool = False, opt_in: str | None = TRUST_OPT_IN
) -> Weights:
    """Everything a supported file or folder holds, reading the weights file once.

    ``ema=True`` picks a vitdistill run's EMA weights. A ``module.`` prefix (DDP) is removed.
    ``trust=True`` allows full unpickling of a legacy file (see the module docstring); the
    refusal otherwise names ``opt_in``, the setting that allows it.
    """
    file = weights_file(path)
    cfg = _config_beside(file)
    data = _read_bytes(file)
    sha = hashlib.sha256(data).hexdigest()
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load as load_safetensors

            obj: Any = load_safetensors(data)
        else:
            obj = _unpickle(data, file, trust, opt_in)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is unusable
        raise UserError(f"cannot read checkpoint {file}: {first_line(e)}") from None
    del data
    spec = (
        (cfg.get("vitdistill") or {}).get("model_spec") if isinstance(cfg.get("vitdistill"), dict) else None
    )
    if isinstance(obj, dict) and isinstance(obj.get("model_spec"), dict):
        spec = obj["model_spec"]
    state, cfg = _state_of(obj, file, cfg, ema)
    return Weights(state, file, cfg, spec, sha)


def _state_of(obj: Any, file: Path, cfg: dict, ema: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict inside a loaded file (and the config it carries)."""
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


def read_state_dict(
    path: str | os.PathLike, ema: bool = False, trust: bool = False, opt_in: str = TRUST_OPT_IN
) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the config found with it) of :func:`read_weights`."""
    w = read_weights(path, ema, trust, opt_in)
    return w.state, w.config


def head_classes(sd: dict[str, torch.Tensor]) -> int | None:
    """The class count of the classifier in a state dict, if it has a recognisable one."""
    for key in ("head.weight", "head.fc.weight", "fc.weight", "classifier.weight"):
        if key in sd and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None


def load_state_strict(
    model: nn.Module, sd: dict[str, torch.Tensor], source: str, role: str = "model"
) -> None:
    """Load ``sd`` into ``model``; any missing, unexpected or reshaped key, and any weight that is
    not finite floating point where the model has one, is a UserError naming examples."""
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
    check_values(sd, own, f"{role} checkpoint {source}")
    model.load_state_dict(sd, strict=True)


def check_values(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor], what: str) -> None:
    """A UserError naming the first tensor of ``sd`` that would put a non-floating or non-finite
    value into a floating-point tensor of ``own`` (a model's state dict; other keys are skipped)."""
    for k, v in sd.items():
        mine = own.get(k)
        if mine is None or not mine.is_floating_point():
            continue  # integer buffers (index tables, step counters) load as they are
        if not v.is_floating_point():
            raise UserError(
                f"{what}: tensor {k!r} is {str(v.dtype).removeprefix('torch.')}, not floating point"
            )
        if v.element_size() == 1:
            v = v.float()  # float8 kinds: torch has no isfinite/isnan for them; the cast keeps NaN and Inf
        if v.numel() and not bool(torch.isfinite(v).all()):
            bad = "NaN" if bool(torch.isnan(v).any()) else "Inf"
            raise UserError(f"{what}: tensor {k!r} holds {bad} values")


def read_run_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A vitdistill training checkpoint (``checkpoints/last.pt``): tensors and containers, never unpickled."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} not found")
    state = torch_load(p, opt_in=None)
    if not isinstance(state, dict) or "student" not in state or "epoch" not in state:
        raise UserError(f"{p} is not a vitdistill training checkpoint")
    return state
