"""The one device and autocast helper of every command (train, eval, inspect, analyze's callers).

* :func:`resolve_device`: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> ``torch.device``.
  ``auto`` is CUDA when present, else the CPU; plain ``cuda`` is the process's own GPU under
  torchrun (``cuda:LOCAL_RANK``). A device this machine lacks is a UserError.
* :func:`amp_dtype` / :func:`autocast`: ``none`` | ``bf16`` | ``fp16`` -> the autocast context.
"""

from __future__ import annotations

import contextlib

import torch

from vitdistill.errors import UserError

AMP_DTYPES = {
    "none": None,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """``torch.device`` for a user's string; asking for a device this machine lacks is a UserError."""
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"unknown device {str(name)!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"device {str(name)!r} was requested but CUDA is not available on this machine; use device='cpu'",
                settings=("device",),
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        if dev.index >= torch.cuda.device_count():
            raise UserError(f"device {str(name)!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError("device 'mps' was requested but is not available")
    return dev


def amp_dtype(amp: bool | str | torch.dtype | None) -> torch.dtype | None:
    """None / False / 'none' -> None; True / 'bf16' -> bfloat16; 'fp16' -> float16."""
    if amp is None or amp is False:
        return None
    if amp is True:
        return torch.bfloat16
    if isinstance(amp, torch.dtype):
        return amp
    key = str(amp).lower()
    if key not in AMP_DTYPES:
        raise UserError(f"unknown amp mode {amp!r} (use none, bf16 or fp16)")
    return AMP_DTYPES[key]


def autocast(device: torch.device, amp: bool | str | torch.dtype | None):
    """``torch.autocast`` for ``amp`` on ``device``'s type, or a no-op context without amp."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
