"""Where a run's records go besides ``metrics.jsonl``: TensorBoard and Weights & Biases.

Every record written to ``metrics.jsonl`` reaches each enabled sink (its numbers as scalars named
``KIND/KEY``, e.g. ``epoch/val_top1``, ``step/lr``, plotted against the optimizer step), and so does every
epoch line printed on the terminal (TensorBoard text ``epoch_line``; W&B key ``epoch_line``).
W&B runs in whatever mode its environment says (``WANDB_MODE=offline`` writes to
``RUN/wandb/`` only; project ``WANDB_PROJECT``, default ``vitdistill``); the W&B run id is kept in ``RUN/wandb_id`` so a resumed run continues it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from vitdistill.errors import UserError

SKIP = ("step", "epoch")  # the x axis, and the epoch counter (in every epoch record)


def scalars(record: dict) -> dict[str, float]:
    """``{"KIND/KEY": value}`` of a record's numbers (booleans and the step/epoch counters left out)."""
    kind = record.get("kind", "step")
    return {
        f"{kind}/{k}": float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in SKIP
    }


class TensorBoardSink:
    def __init__(self, run_dir: Path, cfg: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(
                "log.tensorboard needs TensorBoard: pip install 'vitdistill[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(run_dir / "tb"))

    def record(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, step)

    def line(self, text: str, step: int) -> None:
        self.writer.add_text("epoch_line", text, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, cfg: dict):
        try:
            import wandb
        except ImportError:
            raise UserError("log.wandb needs Weights & Biases: pip install 'vitdistill[wandb]'") from None
        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "vitdistill"),
                name=run_dir.name,
                dir=str(run_dir),
                id=run_id,
                resume="allow",
                config=cfg,
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as e:  # W&B raises its own errors for a missing login, a bad mode, no network
            from vitdistill.errors import first_line

            raise UserError(
                f"log.wandb: cannot start a W&B run ({first_line(e)}); try WANDB_MODE=offline"
            ) from None

    def record(self, record: dict) -> None:
        self.run.log(scalars(record), step=int(record.get("step", 0)))

    def line(self, text: str, step: int) -> None:
        self.run.log({"epoch_line": text}, step=step)

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """The enabled sinks of ``log`` settings; every call goes to each of them."""

    def __init__(self, run_dir: Path, cfg: dict):
        log = cfg["log"]
        self.sinks: list[Any] = []
        if log["tensorboard"]:
            self.sinks.append(TensorBoardSink(run_dir, cfg))
        if log.get("wandb"):
            self.sinks.append(WandbSink(run_dir, cfg))

    def record(self, record: dict) -> None:
        for s in self.sinks:
            s.record(record)

    def line(self, text: str, step: int) -> None:
        for s in self.sinks:
            s.line(text, step)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []
