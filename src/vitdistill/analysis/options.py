"""Every setting of an analysis, declared once: keyword, default, check and documentation.

:class:`AnalysisOptions` is the one declaration. :func:`vitdistill.analysis.analyze` takes its
fields as keyword arguments and records all of them in ``summary.json``; ``vitdistill analyze``
builds its flags and their help from the same fields (``vitdistill.commands.flags``), which also
write the table in ``docs/analysis.md``. No torch import here: the command-line parser
is built from this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from vitdistill.errors import UserError
from vitdistill.utils.options import (
    ANY,
    BOOL,
    FLOAT,
    FLOATS,
    INT,
    SEED_LIMIT,
    STR,
    STRS,
    fingerprint_fields,
    option,
)

SEP_MODES = ("full", "folded")
PRECISIONS = ("mixed", "float64")


def check_device(name: str, value: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where it is available."""
    head, _, index = value.partition(":")
    if head not in ("cpu", "cuda") or (index and (head != "cuda" or not index.isdigit())):
        raise UserError(f"'{name}' must be cpu, cuda or cuda:N (got {value!r})", settings=(name,))
    if head == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"{name}={value!r}: CUDA is not available on this machine; use {name}='cpu'",
                settings=(name,),
            )


@dataclass
class AnalysisOptions:
    """Every knob of an analysis; all of them are recorded in summary.json."""

    # the model's weights (the model itself is analyze's first argument)
    checkpoint: str | None = option(
        None, "weights: .safetensors/.pt/.pth, a vitdistill run or export folder", STR, result=False
    )
    trust_checkpoint: bool = option(
        False,
        "allow a legacy checkpoint that pickles more than tensors (unpickling can run code)",
        BOOL,
        result=False,
    )
    pretrained: bool = option(False, "timm pretrained weights (needs them cached or network)", BOOL)
    num_classes: int | None = option(None, "classifier size (default: from the checkpoint)", INT, low=0)
    # the data
    split: str = option("val", "split of a train/val folder or synthetic set", STR)
    images: int | None = option(
        None, "analyse at most N images (evenly spread over the data; default all)", INT, low=1, metavar="N"
    )
    crop_pct: float | None = option(
        None,
        "override the eval transform's crop_pct",
        FLOAT,
        above=0,
        high=1,
        hint="1.0 keeps the whole image",
    )
    strict: bool = option(False, "an unreadable image is an error (default: skip and count)", BOOL)
    # the features
    layers: Any = option(
        "auto",
        "auto (every block; the last four stages of a CNN or hybrid), all, last, or a comma list "
        "like 0,5,11 (negatives from the end)",
        ANY,
    )
    final_norm: bool = option(
        False,
        "apply the model's final norm to the taps (for a Lift student: its lifted, teacher-wide tokens)",
        BOOL,
    )
    center: bool = option(False, "subtract each image's mean token before analysis", BOOL)
    standardize: bool = option(False, "z-score each channel over each image's tokens", BOOL)
    # the statistics
    thresholds: tuple[float, ...] = option(
        (0.8, 0.9, 0.95, 0.99), "energy thresholds", FLOATS, above=0, high=1, percent=True
    )
    rank_rtol: float | None = option(
        None,
        "relative tolerance of the numerical rank (default max(N,C)*eps32)",
        FLOAT,
        low=0,
        below=1,
        hint="it is relative to the largest singular value",
    )
    precision: str = option(
        "float64",
        "per-image eigenvalues in float64, or in float32 with a float64 re-check near every boundary "
        "(same integers; faster only where float32 LAPACK is)",
        STR,
        choices=PRECISIONS,
    )
    pca_curves: str = option(
        "last",
        "layers that get per-image shared-basis curves (a scratch copy of their features on disk)",
        STR,
        choices=("last", "all", "off"),
    )
    sep_alphas: tuple[float, ...] = option(
        (50, 60, 70, 80, 90), "SEP thresholds in percent", FLOATS, above=0, high=100, flag="sep-thresholds"
    )
    sep_mode: str = option("full", "headline SEP convention", STR, choices=SEP_MODES)
    permutations: int = option(50, "channel permutations for SEP robustness (0 = off)", INT, low=0)
    permutation_layers: str = option(
        "last", "layers that get the SEP channel-permutation test", STR, choices=("last", "all")
    )
    bootstrap: int = option(1000, "bootstrap samples for the permutation CI", INT, low=0)
    rotation_layers: str = option(
        "last", "layers that get the subspace-rotation sample", STR, choices=("last", "all")
    )
    rotation_images: int = option(64, "images whose subspaces are kept (0 = off)", INT, low=0)
    rotation_threshold: float = option(
        0.9, "k_i = own d at this energy", FLOAT, above=0, high=1, percent=True
    )
    rotation_pairs: int = option(5000, "at most this many image pairs", INT, low=1)
    seed: int = option(
        0, "seed for random weights, permutations and image sampling", INT, low=0, high=SEED_LIMIT - 1
    )
    # how it runs
    batch_size: int = option(32, "images per forward pass", INT, low=1)
    device: str = option("cpu", "cpu | cuda | cuda:N", STR, check=check_device, result=False)
    num_workers: int = option(0, "DataLoader worker processes", INT, low=0, flag="workers", result=False)
    overlap: bool = option(
        False,
        "compute the statistics of each batch on a worker thread while the next batch runs",
        BOOL,
        result=False,
    )
    resume: bool = option(
        False, "continue an interrupted run from its statistics checkpoint", BOOL, result=False
    )
    checkpoint_every: int = option(
        20, "batches between statistics checkpoints (0 = never)", INT, low=0, result=False
    )
    # the outputs
    save_features: bool = option(False, "keep the token features (see docs/analysis.md)", BOOL)
    features_dtype: str = option(
        "float16", "dtype of the features kept by save_features", STR, choices=("float16", "float32")
    )
    pdf: bool = option(False, "also write plots as PDF", BOOL, result=False)
    plots: bool = option(True, "write the figures (off: the tables and JSON only)", BOOL, result=False)
    progress: bool = option(True, "show a progress bar", BOOL, result=False)

    def fingerprint(self) -> str:
        """Hash of the options that change the numbers (so ``resume`` refuses a changed run)."""
        keep = fingerprint_fields(self)
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CompareOptions:
    """The settings of :func:`vitdistill.analysis.compare` (besides the folders and ``out``)."""

    labels: list[str] | None = option(None, "row labels, one per folder (default: the model names)", STRS)
    pdf: bool = option(False, "also write plots as PDF", BOOL)
