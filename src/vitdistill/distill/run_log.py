"""A run's metrics: ``metrics.jsonl`` (one JSON record per line) and, optionally, TensorBoard and W&B.

Only the main process writes. Every line is strict JSON: a NaN or infinite number is written
as ``null`` (the run stops on one; see :mod:`vitdistill.distill.finite`). Each record has a ``kind`` (``step`` or ``epoch``), the optimizer
``step`` it was taken at and its numbers. On a resume the records past the checkpoint are
dropped first: the resumed run writes them again.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

from vitdistill.distill.loggers import Sinks
from vitdistill.utils.io import atomic_write_text
from vitdistill.utils.progress import fmt_duration


class RunLog:
    def __init__(self, run_dir: Path, enabled: bool, cfg: dict):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled, self.cfg = enabled, cfg
        self._file = None
        self._sinks = None  # TensorBoard / W&B (log.tensorboard, log.wandb): every record and epoch line

    def open(self, resumed_step: int, resumed_epoch: int) -> None:
        """Start writing; after a resume keep only the records up to (step, epoch) of its checkpoint."""
        if not self.enabled:
            return
        kept: list[str] = []
        if resumed_step > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    r = json.loads(line)
                    if r.get("step", 0) <= resumed_step and (
                        r.get("kind") != "epoch" or r.get("epoch", 0) < resumed_epoch
                    ):
                        kept.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in kept))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        self._sinks = Sinks(self.path.parent, self.cfg)

    def write(self, record: dict) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        self._sinks.record(record)

    def line(self, text: str, step: int) -> None:
        """The epoch line printed on stderr, for the sinks."""
        if self._sinks is not None:
            self._sinks.line(text, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sinks is not None:
            self._sinks.close()
            self._sinks = None


def epoch_line(record: dict, epochs: int, eta_s: float) -> str:
    """The epoch's one line for stderr::

    epoch 3/300  train loss 2.3104 (ce 1.8012 kd 0.5092)  val top-1 45.20 (EMA 46.10)  1234 img/s  ETA 5h02m
    """
    terms = [
        k
        for k in record
        if k.startswith("train_") and k not in ("train_loss", "train_images", "train_skipped")
    ]
    train = f"train loss {record['train_loss']:.4f}"
    if terms:
        train += " (" + " ".join(f"{k[6:]} {record[k]:.4f}" for k in terms) + ")"
    val = f"val top-1 {record['val_top1']:.2f}" if "val_top1" in record else "val -"
    if "ema_top1" in record:
        val += f" (EMA {record['ema_top1']:.2f})"
    line = f"epoch {record['epoch'] + 1}/{epochs}  {train}  {val}  {record['images_per_s']:.0f} img/s"
    return f"{line}  ETA {fmt_duration(eta_s)}"


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
