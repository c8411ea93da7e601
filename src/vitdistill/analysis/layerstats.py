"""All streaming statistics of one layer, and the per-image preprocessing of its tokens."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vitdistill.analysis.options import AnalysisOptions
from vitdistill.analysis.pca import CapturedEnergy, SecondMoment
from vitdistill.analysis.rotation import SubspaceRotation
from vitdistill.analysis.sep import SEP
from vitdistill.analysis.spectra import PerImageSVD
from vitdistill.analysis.stats import Mergeable


def preprocess(x: torch.Tensor, center: bool, standardize: bool) -> torch.Tensor:
    """Per-image token preprocessing: centre channels over the image's tokens, or z-score them.

    Done per image (not with a dataset mean) so that it is a streaming, order-free operation.
    """
    x = x.float()
    if center or standardize:
        x = x - x.mean(dim=1, keepdim=True)
    if standardize:
        std = x.std(dim=1, keepdim=True, unbiased=False)
        x = torch.where(std > 0, x / std.clamp_min(1e-12), torch.zeros_like(x))
    return x


class LayerStats(Mergeable):
    """All streaming metrics of one layer."""

    reductions: ClassVar[dict[str, Any]] = {
        "svd": PerImageSVD.reductions,
        "pca": SecondMoment.reductions,
        "sep": SEP.reductions,
        "rotation": SubspaceRotation.reductions,
    }

    def __init__(
        self, layer: int, opts: AnalysisOptions, permutations: int, rotation_sample: list[int] | None
    ):
        self.layer = layer
        self.svd = PerImageSVD(opts.thresholds, opts.rank_rtol, opts.precision)
        self.pca = SecondMoment(opts.thresholds)
        self.sep = SEP(opts.sep_alphas, permutations, opts.sep_mode, seed=opts.seed + 1000 * layer)
        self.rotation = (
            SubspaceRotation(rotation_sample, opts.rotation_threshold, opts.rotation_pairs, opts.seed)
            if rotation_sample is not None
            else None
        )
        self.curves: CapturedEnergy | None = None

    def update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        x64 = x.to(torch.float64)  # one float64 copy for the two products that need it
        self.svd.update(x, ids, x64)
        self.pca.update(x64)
        self.sep.update(x, ids)
        if self.rotation is not None:
            self.rotation.update(x, ids)

    def state_dict(self) -> dict:
        sd = {"svd": self.svd.state_dict(), "pca": self.pca.state_dict(), "sep": self.sep.state_dict()}
        if self.rotation is not None:
            sd["rotation"] = self.rotation.state_dict()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        self.svd.load_state_dict(sd["svd"])
        self.pca.load_state_dict(sd["pca"])
        self.sep.load_state_dict(sd["sep"])
        if self.rotation is not None:
            self.rotation.load_state_dict(sd["rotation"])
