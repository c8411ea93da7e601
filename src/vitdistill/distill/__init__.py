"""Distillation training: config schema, losses, the trainer, evaluation and export.

>>> from vitdistill.distill import train
>>> summary = train("configs/cpu/softkd.yaml", overrides=["epochs=2"], output="runs/x")
"""

from vitdistill.distill.config import defaults, resolve
from vitdistill.distill.evaluate import evaluate
from vitdistill.distill.export import export
from vitdistill.distill.trainer import train

__all__ = ["defaults", "evaluate", "export", "resolve", "train"]
