"""Size and speed of models: parameters, MACs, token grid, per-block widths, throughput.

MACs are counted on one image at the model's input size by a small ``TorchDispatchMode`` that sees
every aten operator the forward pass runs and charges the matrix products from their shapes:
linear layers (``mm``/``addmm``), convolutions (the patch embedding), batched matmuls (attention
written out, talking heads) and every fused scaled-dot-product attention kernel (QK^T and AV:
``B * heads * Lq * Lk * (d_qk + d_v)``). Counting the fused kernels by name, rather than relying on
``torch.utils.flop_counter``, keeps the figure the same on every torch version: whether the attention
runs fused or as plain matmuls depends on the version, the device and the grad mode. Normalisation,
activations, softmax, residual adds and pooling are not counted, as is usual for ViT MAC figures
(DeiT-Tiny: 1.254 GMACs).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from vitdistill.errors import UserError
from vitdistill.utils.device import autocast, resolve_device
from vitdistill.utils.inspect_options import InspectOptions
from vitdistill.utils.options import from_keywords

__all__ = [
    "count_params",
    "count_macs",
    "measure_throughput",
    "token_grid",
    "block_widths",
    "format_widths",
    "model_input_size",
    "inspect_models",
    "format_table",
    "resolve_device",
]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model was built for: its patch embedding's image size, else its pretrained_cfg."""
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if size is not None:
        proj = getattr(pe, "proj", None)
        chans = getattr(proj, "in_channels", None) or getattr(model, "in_chans", 3)
        return (int(chans), int(size[0]), int(size[1]))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, h, w = cfg.get("input_size", (getattr(model, "in_chans", 3), 224, 224))
    return (int(c), int(h), int(w))


def _param_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, (p.dtype if p.is_floating_point() else torch.float32)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _conv_macs(args: Sequence[Any], out: torch.Tensor) -> int:
    # aten.convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    kernel = _numel(w.shape[2:])
    if transposed:  # every input element is spread over out_channels/groups * kernel outputs
        return x.numel() * int(w.shape[1]) * kernel
    return out.numel() * int(w.shape[1]) * kernel  # w: (out, in/groups, *kernel)


def _sdpa_macs(args: Sequence[Any], out: Any) -> int:
    q, k, v = args[0], args[1], args[2]
    batch = _numel(q.shape[:-2])  # batch x query heads (grouped kv heads are broadcast)
    return batch * int(q.shape[-2]) * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1]))


def _mm_macs(args: Sequence[Any], out: torch.Tensor) -> int:  # mm(a, b), bmm(a, b)
    return out.numel() * int(args[0].shape[-1])


def _addmm_macs(args: Sequence[Any], out: torch.Tensor) -> int:  # addmm(bias, a, b), baddbmm(c, a, b)
    return out.numel() * int(args[1].shape[-1])


_MAC_RULES = {
    "mm": _mm_macs,
    "bmm": _mm_macs,
    "addmm": _addmm_macs,
    "baddbmm": _addmm_macs,
    "_addmm_activation": _addmm_macs,
    "convolution": _conv_macs,
    "_convolution": _conv_macs,
}


def _mac_rule(op_name: str):
    """How to count an aten operator (by overload packet name), or None for ops that are not counted."""
    if op_name.startswith("_scaled_dot_product_") and not op_name.endswith("_backward"):
        return _sdpa_macs  # every fused attention kernel: flash, efficient, cudnn, CPU flash, ...
    return _MAC_RULES.get(op_name)


class _MacCounter(TorchDispatchMode):
    """Adds up the multiply-accumulates of the matrix products a forward pass runs."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _mac_rule(func._overloadpacket.__name__)
        if rule is None:
            # Composite ops (linear, matmul, scaled_dot_product_attention) arrive here whole under
            # inference mode: run their decomposition with this counter active so their parts count.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if rule is not None:
            self.macs += int(rule(args, out[0] if isinstance(out, tuple | list) else out))
        return out


def count_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Multiply-accumulates for one image of ``input_size`` (C, H, W; default the model's own).

    A model whose forward pass fails on a zero image raises the error unchanged (callers that
    want a table row anyway, like :func:`inspect_models`, report it and go on).
    """
    size = tuple(input_size) if input_size is not None else model_input_size(model)
    if len(size) != 3:
        raise UserError(f"input_size must be (C, H, W), got {size}")
    device, dtype = _param_device_dtype(model)
    x = torch.zeros(1, *size, device=device, dtype=dtype)
    counter = _MacCounter()
    with _eval_mode(model), torch.no_grad(), counter:
        model(x)
    return counter.macs


def measure_throughput(
    model: nn.Module,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    iters: int = 10,
    amp: bool | str | None = None,
    input_size: Sequence[int] | None = None,
) -> float:
    """Images per second of ``model`` in eval mode under ``torch.inference_mode``.

    The model is moved to ``device`` (in place, like ``model.to``). ``amp``: None/False = the model's
    dtype, True or 'bf16' = bfloat16 autocast, 'fp16' = float16 autocast. CUDA is synchronised only
    around the timed iterations, so the figure is pure device time per batch. (Not with
    ``torch.utils.benchmark``: importing it loads ``torch.utils.cpp_extension``, which warns about
    ``CUDA_HOME`` on a machine whose torch has no CUDA.)
    """
    if batch_size < 1 or iters < 1 or warmup < 0:
        raise UserError(
            f"need batch_size >= 1, iters >= 1, warmup >= 0 (got {batch_size}, {iters}, {warmup})"
        )
    dev = resolve_device(device)
    model.to(dev)
    size = tuple(input_size) if input_size is not None else model_input_size(model)
    _, dtype = _param_device_dtype(model)
    x = torch.randn(batch_size, *size, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with _eval_mode(model), torch.inference_mode(), autocast(dev, amp):
        for _ in range(warmup):
            model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync()
        per_batch = (time.perf_counter() - t0) / iters
    return batch_size / per_batch


def token_grid(model: nn.Module) -> tuple[int, int]:
    """(H, W) patch-token grid at the model's input size (for staged models: the tapped grid)."""
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is not None:
        return (int(grid[0]), int(grid[1]))
    from vitdistill.models.taps import feature_grid

    return tuple(feature_grid(model))


def _is_block(module: nn.Module) -> bool:
    """A transformer block in timm's convention: it owns an ``attn`` and an ``mlp`` module."""
    return isinstance(getattr(module, "attn", None), nn.Module) and isinstance(
        getattr(module, "mlp", None), nn.Module
    )


def _block_width(block: nn.Module) -> int | None:
    """Output channels of a block: those of the last linear or convolution layer of its MLP."""
    width = None
    for m in block.mlp.modules():
        if isinstance(m, nn.Linear):
            width = m.out_features
        elif isinstance(m, nn.Conv1d | nn.Conv2d):
            width = m.out_channels
    return width


def _outermost_blocks(model: nn.Module) -> list[nn.Module]:
    found: list[nn.Module] = []
    inside: set[str] = set()
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside) or not _is_block(m):
            continue
        found.append(m)
        inside.add(name)
    return found


def block_widths(model: nn.Module) -> list[int]:
    """Channel width of every transformer block, in order; staged models (Swin, PiT, LeViT) list
    each stage's blocks, and CaiT / XCiT their self-attention ``blocks`` (the tappable ones)."""
    widths = getattr(model, "block_widths", None)
    if callable(widths):
        return list(widths())
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and len(blocks) and all(map(_is_block, blocks)):
        found = list(blocks)
    else:
        found = _outermost_blocks(model)
    out = [_block_width(b) for b in found]
    if not out or any(w is None for w in out):
        raise UserError(f"{_model_label(model)} has no transformer blocks (modules with attn and mlp)")
    return [int(w) for w in out]


def format_widths(widths: Iterable[int]) -> str:
    """Run-length form of per-block widths: ``[192]*11 + [384]`` -> ``'192x11 + 384x1'``."""
    runs: list[list[int]] = []
    for w in widths:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    return " + ".join(f"{w}x{n}" for w, n in runs)


def _or_none(fn):
    """``fn()``, or None when it raises a UserError (e.g. the token grid of a CNN)."""
    try:
        return fn()
    except UserError:
        return None


def _model_label(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(model).__name__)


def inspect_models(
    models: Sequence[str | nn.Module],
    *,
    model_kwargs: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """One row per model: params, MACs per image, token grid, block widths, images/s.

    A model whose forward pass fails gets ``macs`` None, the reason in ``macs_error`` (one line)
    and no throughput; its other columns are filled as usual.

    ``models`` are timm names (vitdistill's students included), remedy strings such as
    ``lift:vit_small_patch16_224:768`` / ``widelast:deit_tiny_patch16_224:384:2``, model specs
    (built by :func:`vitdistill.models.create_model` with ``model_kwargs``), or model instances
    (measured as they are). ``options`` are the fields of
    :class:`~vitdistill.utils.inspect_options.InspectOptions`, where each is declared and documented.
    """
    opts = from_keywords(InspectOptions, options)
    dev = resolve_device(opts.device) if opts.throughput else None
    if labels is not None and len(labels) != len(models):
        raise UserError(f"got {len(labels)} labels for {len(models)} models")
    rows = []
    for i, item in enumerate(models):
        model, name = _built(item, opts.num_classes, model_kwargs)
        row = _profile_row(model, labels[i] if labels is not None else name, opts, dev)
        if dev is not None and row["macs_error"] is None:
            row["throughput"] = measure_throughput(
                model, opts.batch_size, dev, warmup=opts.warmup, iters=opts.iters, amp=opts.amp
            )
        rows.append(row)
    return rows


def _built(
    item: str | nn.Module, num_classes: int | None, model_kwargs: dict | None
) -> tuple[nn.Module, str]:
    """The model an ``inspect_models`` entry stands for, and its name."""
    from vitdistill.models import create_model

    if isinstance(item, nn.Module):
        return item, _model_label(item)
    model, prov = create_model(item, num_classes=num_classes, **(model_kwargs or {}))
    return model, item if isinstance(item, str) else prov["model"]


def _profile_row(model: nn.Module, label: str, opts: InspectOptions, dev) -> dict[str, Any]:
    """Every column but the throughput; a failing forward pass is noted in ``macs_error``."""
    row: dict[str, Any] = {
        "model": label,
        "params": count_params(model),
        "macs": None,
        "macs_error": None,
        "input_size": list(model_input_size(model)),
        "token_grid": _or_none(lambda m=model: list(token_grid(m))),
        "block_widths": _or_none(lambda m=model: block_widths(m)),
        "head_width": int(getattr(model, "head_hidden_size", getattr(model, "num_features", 0)) or 0),
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "throughput": None,
        "batch_size": opts.batch_size if dev is not None else None,
        "device": str(dev) if dev is not None else None,
    }
    row["widths"] = format_widths(row["block_widths"]) if row["block_widths"] else "-"
    try:
        row["macs"] = count_macs(model)
    except Exception as e:  # any failure of this model's forward pass: report it, keep the row
        row["macs_error"] = (f"{type(e).__name__}: {e}".splitlines() or ["?"])[0]
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned plain-text table of :func:`inspect_models` rows."""
    from vitdistill.utils.tables import human, render

    table = []
    for r in rows:
        tput = (
            "-"
            if r.get("throughput") is None
            else f"{r['throughput']:.1f} (bs {r['batch_size']}, {r['device']})"
        )
        table.append(
            {
                "model": r["model"],
                "params": f"{r['params']:,}",
                "MACs/img": "-" if r.get("macs") is None else human(r["macs"]),
                "input": "x".join(str(s) for s in r["input_size"][1:]),
                "tokens": "x".join(str(s) for s in r["token_grid"]) if r.get("token_grid") else "-",
                "width per block": r["widths"],
                "head in": str(r.get("head_width", "")),
                "img/s": tput,
            }
        )
    return render(table, "plain", text_cols=("model", "input", "tokens", "width per block", "img/s"))
