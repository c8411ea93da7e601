"""Every setting of ``evaluate`` / ``vitdistill eval``, declared once.

:class:`EvalOptions` is the one declaration: keyword, default, check and documentation line.
:func:`vitdistill.distill.evaluate` takes its fields as keyword arguments; ``vitdistill eval``
builds its flags and their help from the same fields (``vitdistill.commands.flags``), which also
write the table in ``docs/training.md``.

It lives here rather than in :mod:`vitdistill.distill` because importing that package loads
torch, and the command-line parser is built from this module without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitdistill.utils.options import BOOL, FLOAT, INT, STR, option


@dataclass(frozen=True)
class EvalOptions:
    """Which weights are scored, on which images, and how the batches run."""

    checkpoint: str | None = option(
        None, "weights file (a run's checkpoint, .pt or .safetensors)", STR, metavar="FILE"
    )
    trust_checkpoint: bool = option(
        False, "allow a legacy checkpoint that pickles more than tensors (unpickling can run code)", BOOL
    )
    ema: bool = option(False, "use the run's EMA weights", BOOL)
    split: str = option("val", "split of the data to evaluate", STR)
    max_images: int | None = option(None, "evaluate at most N images (default: all)", INT, low=1, metavar="N")
    crop_pct: float | None = option(
        None,
        "evaluation crop (default: a run's data.eval_crop_pct, else the model's timm default)",
        FLOAT,
        above=0,
        high=1,
    )
    strict: bool = option(False, "an unreadable image is fatal (default: skipped and counted)", BOOL)
    batch_size: int = option(64, "images per batch", INT, low=1)
    num_workers: int = option(0, "DataLoader worker processes", INT, low=0, flag="workers")
    device: str = option("auto", "cpu, cuda, cuda:N or auto (cuda when available)", STR)
    amp: str | None = option("none", "autocast dtype", STR, choices=("none", "bf16", "fp16"))
