"""Every setting of ``inspect_models`` / ``vitdistill inspect``, declared once.

:class:`InspectOptions` is the one declaration: keyword, default, check and documentation line.
:func:`vitdistill.models.inspect_models` takes its fields as keyword arguments; ``vitdistill
inspect`` builds its flags and their help from the same fields (``vitdistill.commands.flags``),
which also write the table in ``docs/models.md``.

It lives here rather than in :mod:`vitdistill.models` because importing that package loads torch
and timm (it registers the students), and the command-line parser is built from this module
without them.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitdistill.utils.options import BOOL, INT, STR, option


@dataclass(frozen=True)
class InspectOptions:
    """How models are profiled: the classifier they are built with and the timed run."""

    num_classes: int | None = option(None, "classifier size (default: the model's)", INT, low=0)
    throughput: bool = option(True, "time the model on random images (off: sizes and MACs only)", BOOL)
    batch_size: int = option(64, "batch size of the timed run", INT, low=1)
    device: str = option("cpu", "device of the timed run: cpu, cuda, cuda:N or auto", STR)
    warmup: int = option(3, "untimed batches before timing", INT, low=0)
    iters: int = option(10, "timed batches", INT, low=1)
    amp: str | None = option(
        None, "autocast dtype of the timed run (default: the model's own)", STR, choices=("bf16", "fp16")
    )
